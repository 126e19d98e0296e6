"""vLLM engine: one continuous-batched run over every prompt (`python -m inference_vllm`)."""

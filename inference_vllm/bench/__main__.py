"""`python -m inference_vllm.bench`: raw engine vs pipeline vs the old way vs Transformers."""
import sys

from inference_vllm.bench.speed import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

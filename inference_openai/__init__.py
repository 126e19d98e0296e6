"""`engine=openai`: any OpenAI-compatible endpoint (a lab's `vllm serve`, a hosted API)."""

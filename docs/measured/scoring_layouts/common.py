"""Shared helpers of the scoring-layout probe (docs/benchmarks.md, "Likelihood")."""
import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

MODEL = ".cache/models/SmolLM2-135M-Instruct"  # run from the repository root

TEXT = (
    "The old lighthouse keeper climbed the narrow stairs every evening, carrying a "
    "lantern and a notebook. He wrote down the colour of the sea, the direction of the "
    "wind and the names of the ships that passed. After forty years the notebooks "
    "filled a whole room, and a young historian came to read them."
)


def make_llm(**kw):
    from vllm import LLM

    args = dict(
        model=MODEL,
        enforce_eager=True,
        gpu_memory_utilization=0.3,
        max_model_len=2048,
        seed=42,
    )
    args.update(kw)
    return LLM(**args)

"""`python -m inference_core.convert cornell|dmsc SOURCE OUT`: raw corpora into the benchmark schema."""
import sys

from inference_core.data.convert.cli import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

"""`python -m inference_core.evaluate RUN_DIR...`: recompute metrics.json and samples.parquet."""
import sys

from inference_core.evaluation.scoring import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

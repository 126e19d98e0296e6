"""`python -m inference_core.report RUN_DIR...`: (re)write report.html for run folders."""
import sys

from inference_core.report.page import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

"""`python -m inference_core.merge OUTPUT_DIR`: build a run folder's final files from what is on disk."""
import sys

from inference_core.rundir.merge import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

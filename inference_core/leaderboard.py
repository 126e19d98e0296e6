"""`python -m inference_core.leaderboard ROOT... [--baseline X]`: the leaderboard over every run
folder under ROOT, with bootstrap intervals and paired comparisons (docs/leaderboard.md)."""
import sys

from inference_core.evaluation.leaderboard import main

if __name__ == "__main__":  # vLLM and torch spawn workers: the entry must be guarded
    sys.exit(main())

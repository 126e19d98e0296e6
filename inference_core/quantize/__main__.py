"""`python -m inference_core.quantize [overrides]`: 4-bit AWQ of model.path, calibrated on a run's prompts."""
import sys

from inference_core.quantize.calibrate import run

if __name__ == "__main__":
    run(sys.argv[1:])

"""Transformers engine: padded, length-sorted batches through `model.generate` (`python -m inference_hf`)."""

"""AWQ with llm-compressor, run by `inference_core.quantize` inside the quantization venv.

This file runs as a plain script under `.venv-quant/bin/python` (llm-compressor 0.14 needs
transformers <= 5.17 and compressed-tensors 0.19, which the run venv's vLLM pins exclude), so it
imports nothing from this project: its input is a JSON file of calibration token ids.
Output: a compressed-tensors `pack-quantized` checkpoint that vLLM and Transformers load.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("quantize_worker")

# Weights are re-written by llm-compressor; everything else (tokenizer, chat template) is copied.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
WEIGHT_INDEX = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def scheme(bits: int, group_size: int, symmetric: bool) -> dict[str, Any]:
    """Weight-only integer quantization per group of input channels (AWQ's W4A16 by default)."""
    return {"group_0": {"targets": ["Linear"], "weights": {
        "num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": "group",
        "group_size": group_size}}}


def no_pinned_memory_without_gpu() -> None:
    """llm-compressor 0.14's AWQ pins cached activations for GPU copies; without a CUDA driver
    `pin_memory()` raises "Found no NVIDIA driver", so on CPU the pinning is skipped."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.cuda.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def quiet_cpu_warning() -> None:
    """llm-compressor warns "No accelerator available!" once per layer and step on CPU: hundreds
    of identical lines. Said once here instead."""
    import torch
    from loguru import logger

    if not torch.cuda.is_available():
        log.warning("no GPU: quantizing on the CPU (slow for large models)")
        logger.remove()
        logger.add(sys.stderr, level="INFO",
                   filter=lambda record: "No accelerator available" not in record["message"])


def copy_side_files(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if (path.is_file() and not (target / path.name).exists()
                and not path.name.endswith(WEIGHT_SUFFIXES) and path.name not in WEIGHT_INDEX):
            shutil.copy2(path, target / path.name)


def quantize(model_path: Path, calibration: list[list[int]], out: Path, bits: int,
             group_size: int, symmetric: bool) -> float:
    """Quantize into `out` (which must not exist); returns the seconds AWQ itself took."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from transformers import AutoModelForCausalLM

    no_pinned_memory_without_gpu()
    quiet_cpu_warning()
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.bfloat16)
    data = Dataset.from_dict({"input_ids": calibration,
                              "attention_mask": [[1] * len(ids) for ids in calibration]})
    recipe = [AWQModifier(ignore=["lm_head"], config_groups=scheme(bits, group_size, symmetric))]
    start = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=recipe,
            max_seq_length=max(len(ids) for ids in calibration),
            num_calibration_samples=len(calibration))
    seconds = time.perf_counter() - start
    # Written beside the target and renamed at the end: a failed run leaves no half checkpoint.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial), save_compressed=True)
    copy_side_files(model_path, partial)
    partial.rename(out)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True,
                        help="JSON list of token-id lists")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--symmetric", action="store_true")
    parser.add_argument("--report", type=Path, required=True, help="where to write {seconds}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    calibration = json.loads(args.calibration.read_text())
    seconds = quantize(args.model, calibration, args.out, args.bits, args.group_size,
                       args.symmetric)
    args.report.write_text(json.dumps({"awq_seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

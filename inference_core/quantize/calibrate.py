"""`python -m inference_core.quantize [overrides]` (`make quantize`): 4-bit AWQ of a checkpoint.

Calibrated on the prompts the run itself would send (same dataset, ablation, chat template and
token budget), not on generic text: AWQ scales each channel by the activations it sees, so the
calibration set should be the model's real input. The algorithm runs in llm-compressor inside its
own venv (`make install-quant`, see worker.py for why); this side builds the prompts,
checks the settings, and reports calibration size, time and sizes on disk.

    python -m inference_core.quantize dataset=DMSC ablation=profile_and_history \
        model=finetuned_8b model.path=/ckpt/DMSC_8B out=/ckpt/DMSC_8B-awq \
        quant.group_size=128 quant.bits=4 quant.num_calibration=128
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_argv_or_exit, exit_code_of
from inference_core.config import CONF_DIR, ConfigError, absolute, register_resolvers
from inference_core.run.job import Job, prepare_job
from inference_core.run.prompting import all_prompts
from inference_core.model.quantization import linear_input_sizes

log = logging.getLogger("inference_core.quantize")

REPO = Path(CONF_DIR).parent
WORKER = Path(__file__).resolve().with_name("worker.py")
# Group sizes the 4-bit kernels take (vLLM's Marlin/Machete on GPUs: 32, 64, 128; per-channel -1).
FALLBACK_GROUPS = (128, 64, 32)


class QuantizeError(RuntimeError):
    """The quantization step itself failed (its own log says why)."""


@dataclass(frozen=True)
class QuantSettings:
    bits: int
    group_size: int
    symmetric: bool
    num_calibration: int
    max_seq_len: int
    python: Path
    out: Path
    overwrite: bool


def effective_group_size(requested: int, sizes: dict[str, int]) -> int:
    """`requested` when it divides every linear layer's input width; else the largest of 128,
    64, 32 below it that does (logged as a warning); else a one-line ConfigError."""
    if requested == -1 or all(size % requested == 0 for size in sizes.values()):
        return requested
    bad = ", ".join(f"{k}={v}" for k, v in sizes.items() if v % requested)
    for group in FALLBACK_GROUPS:
        if group < requested and all(size % group == 0 for size in sizes.values()):
            log.warning("quant.group_size=%d does not divide the model's %s: using %d instead "
                        "(set quant.group_size to choose)", requested, bad, group)
            return group
    raise ConfigError(f"quant.group_size={requested} does not divide the model's {bad}, nor does "
                      f"any of {FALLBACK_GROUPS}: set quant.group_size=-1 (one scale per channel)")


def settings(cfg: DictConfig, job: Job) -> QuantSettings:
    q = cfg.quant
    bits = int(q.bits)
    if bits not in (2, 3, 4, 8):
        raise ConfigError(f"quant.bits={bits}: choose 4 (vLLM's CPU and GPU kernels), 8, 3 or 2")
    if int(q.num_calibration) < 1 or int(q.max_seq_len) < 16:
        raise ConfigError("quant.num_calibration must be >= 1 and quant.max_seq_len >= 16")
    group = effective_group_size(int(q.group_size), linear_input_sizes(job.model_path))
    python = Path(str(q.python))
    python = python if python.is_absolute() else REPO / python
    if not python.is_file():
        raise ConfigError(f"quant.python={python} does not exist: run `make install-quant` "
                          "(a venv with llm-compressor, apart from the run venv)")
    out = cfg.get("out") or f"outputs/quantized/{job.model_name}-awq-w{bits}g{group}"
    return QuantSettings(bits, group, bool(q.symmetric), int(q.num_calibration),
                         int(q.max_seq_len), python, Path(absolute(str(out))),
                         bool(cfg.get("overwrite", False)))


def calibration_prompts(job: Job, count: int, max_len: int) -> list[list[int]]:
    """`count` of the job's prompts, spread evenly over users, each cut to its first `max_len`
    tokens (the system part: task, profile, history; it is the bulk of every real prompt)."""
    prompts = all_prompts(job)
    if not prompts:
        raise ConfigError(f"dataset.path={job.dataset_path} gives no prompts to calibrate on")
    if len(prompts) > count:  # deterministic and spread: every k-th prompt
        step = len(prompts) / count
        prompts = [prompts[int(i * step)] for i in range(count)]
    return [list(p.token_ids[:max_len]) for p in prompts]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_worker(model_path: Path, calibration: list[list[int]], s: QuantSettings) -> float:
    """Quantize in the tool venv; returns AWQ's own seconds."""
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        calib_file, report = Path(tmp, "calibration.json"), Path(tmp, "report.json")
        calib_file.write_text(json.dumps(calibration))
        command = [str(s.python), str(WORKER), "--model", str(model_path), "--calibration",
                   str(calib_file), "--out", str(s.out), "--bits", str(s.bits),
                   "--group-size", str(s.group_size), "--report", str(report)]
        if s.symmetric:
            command.append("--symmetric")
        log.info("running llm-compressor AWQ: %s", " ".join(command))
        # llm-compressor draws a progress bar per layer and grid point: thousands of lines in a
        # log. Quiet unless the caller set TQDM_DISABLE itself.
        env = {**os.environ, "TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "1")}
        if subprocess.run(command, env=env).returncode != 0 or not report.is_file():
            raise QuantizeError(f"quantization of {model_path} failed (see the log above); "
                                f"nothing was written to {s.out}")
        return float(json.loads(report.read_text())["awq_seconds"])


def quantize(cfg: DictConfig) -> dict[str, Any]:
    """Check, calibrate, quantize; returns the figures that main() prints."""
    start = time.perf_counter()
    job = prepare_job(cfg)
    s = settings(cfg, job)
    if s.out.exists():
        if not s.overwrite:
            raise ConfigError(f"out={s.out} exists: choose another out or add overwrite=true")
        shutil.rmtree(s.out)
    calibration = calibration_prompts(job, s.num_calibration, s.max_seq_len)
    s.out.parent.mkdir(parents=True, exist_ok=True)
    awq_seconds = run_worker(job.model_path, calibration, s)
    return {
        "out": str(s.out), "model": str(job.model_path), "bits": s.bits,
        "group_size": s.group_size, "symmetric": s.symmetric,
        "calibration_prompts": len(calibration),
        "calibration_tokens": sum(len(c) for c in calibration),
        "calibration_max_len": s.max_seq_len,
        "calibration_source": f"{job.dataset_name}/{job.ablation.name}",
        "awq_seconds": round(awq_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "bytes_before": folder_bytes(job.model_path), "bytes_after": folder_bytes(s.out),
    }


def report_lines(r: dict[str, Any]) -> list[str]:
    mb = 1024 * 1024
    return [
        f"quantized: {r['out']}",
        f"method: AWQ (llm-compressor) int{r['bits']} weights, group size {r['group_size']}, "
        f"{'symmetric' if r['symmetric'] else 'asymmetric'}; compressed-tensors pack-quantized",
        f"calibration: {r['calibration_prompts']} prompts, {r['calibration_tokens']} tokens "
        f"(each <= {r['calibration_max_len']}) from {r['calibration_source']}",
        f"time: {r['awq_seconds']} s AWQ, {r['total_seconds']} s in all",
        f"size on disk: {r['bytes_before'] / mb:.1f} MiB -> {r['bytes_after'] / mb:.1f} MiB "
        f"({r['bytes_after'] / r['bytes_before']:.2f}x)",
    ]


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="quantize")
def main(cfg: DictConfig) -> None:
    figures: dict[str, Any] = {}
    try:
        code = exit_code_of(lambda: figures.update(quantize(cfg)))
    except QuantizeError as err:
        log.error("%s", err)
        code = 1
    if code:
        sys.exit(code)
    for line in report_lines(figures):
        log.info("%s", line)


def run(argv: Sequence[str]) -> None:
    register_resolvers()
    check_argv_or_exit(list(argv), "quantize")
    main()


if __name__ == "__main__":
    run(sys.argv[1:])

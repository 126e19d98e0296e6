"""Sweeps that finish: a failed job is recorded and the next one starts; the end names them all.

Each failed job appends one JSON line to `<hydra.sweep.dir>/failed_jobs.jsonl` (a file, not
memory, so that jobs run by submitit on other nodes are counted too); `SweepFailures`, a Hydra
callback (conf/config.yaml, hydra.callbacks), reads it when the sweep ends and exits non-zero.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
FAILURES_FILE = "failed_jobs.jsonl"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(code: int, reason: str) -> None:
    """One line per failed job; O_APPEND keeps concurrent jobs' lines whole."""
    hydra = HydraConfig.get()
    line = orjson.dumps({"job": hydra.job.num, "overrides": list(hydra.overrides.task),
                         "code": code, "reason": reason}) + b"\n"
    path = Path(hydra.sweep.dir) / FAILURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / FAILURES_FILE
    if not path.is_file():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def failures_line(failures: list[dict[str, Any]]) -> str:
    jobs = "; ".join(f"#{f['job']} ({' '.join(f['overrides']) or 'no overrides'}) exit "
                     f"{f['code']}: {f['reason']}" for f in failures)
    return f"sweep: {len(failures)} job(s) failed: {jobs}"


class SweepFailures(Callback):
    """At the end of a sweep: one last line naming the failed jobs, and their worst exit code."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        (Path(str(config.hydra.sweep.dir)) / FAILURES_FILE).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = read_failures(Path(str(config.hydra.sweep.dir)))
        if failures:
            # SystemExit is no Exception: Hydra's callback guard lets it end the process.
            print(failures_line(failures), file=sys.stderr, flush=True)
            sys.exit(max(int(f["code"]) for f in failures))

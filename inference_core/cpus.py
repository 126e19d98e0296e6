"""The CPUs this process may use, the one figure every pool and worker count starts from.

`os.cpu_count()` is the whole node: under Slurm, a cgroup cpuset or `taskset` a run sized from it
starts more workers than it has cores, and they crowd out the engine loop. The affinity mask
shows cpusets and `taskset`; Slurm's `--cpus-per-task` (SLURM_CPUS_PER_TASK) caps it where the
job's CPUs are allotted but not bound.
"""
from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, at most SLURM_CPUS_PER_TASK; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call on this platform (macOS)
        count = os.cpu_count() or 1
    allotted = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if allotted.isdigit() and int(allotted) > 0:
        count = min(count, int(allotted))
    return max(1, count)

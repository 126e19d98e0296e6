"""The GPUs of this node as the NVIDIA driver sees them (`nvidia-smi`), and whether the installed
torch and vLLM can use them.

Counting and naming GPUs never touches CUDA: in the process that starts vLLM a CUDA call before
vLLM starts its engine process breaks that process ("Cannot re-initialize CUDA in forked
subprocess"); vLLM counts through NVML for the same reason, and nvidia-smi is NVML's own command.
Where nvidia-smi is missing (a container started with driver capabilities `compute` only), fails,
hangs or says something unexpected while /dev holds NVIDIA GPU devices, NVML itself is read, in a
child process (`nvml` below) so that this one loads no driver library. CUDA_VISIBLE_DEVICES is
applied as CUDA applies it. Only the standard library, so that `make install` can run this with
the system python before .venv exists:

    python3 -m inference_core.gpu_node build         gpu or cpu: the vLLM build this node needs
    python3 -m inference_core.gpu_node stale .venv   why .venv, made for the CPU, must be rebuilt here
    python3 -m inference_core.gpu_node driver        exit 2, one line: driver too old for the pinned torch
    .venv/bin/python -m inference_core.gpu_node check   exit 2, one line: this torch/vLLM cannot use the GPUs
    python3 -m inference_core.gpu_node nvml          the GPUs as NVML lists them (JSON), for driver_gpus
"""
from __future__ import annotations

import functools
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
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
# The GPUs' device files (nvidiactl and nvidia-uvm are not GPUs).
GPU_DEVICES = "/dev/nvidia[0-9]*"
SMI_TIMEOUT_S = 120  # a driver in trouble can hang nvidia-smi for minutes
NVML_TIMEOUT_S = 60

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int
    driver: str


class NoAnswer(Exception):
    """Why nvidia-smi gave no list of GPUs."""


class NotUnderstood(NoAnswer):
    """nvidia-smi answered with a line that is not one GPU."""


def parse_gpu(line: str) -> Gpu:
    """One line of `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`."""
    fields = [f.strip() for f in line.split(",")]
    if len(fields) < 5 or not fields[0].isdigit():
        raise NotUnderstood(f"nvidia-smi said {line.strip()!r}, which is not a GPU's "
                            f"{QUERY} line")
    memory = fields[-2]
    return Gpu(int(fields[0]), fields[1], ", ".join(fields[2:-2]),
               int(memory) if memory.isdigit() else 0, fields[-1])


def smi_gpus() -> list[Gpu]:
    """Every GPU nvidia-smi lists; NoAnswer says why there is no list."""
    if shutil.which("nvidia-smi") is None:
        raise NoAnswer("nvidia-smi is not installed")
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NoAnswer(f"nvidia-smi did not answer within {SMI_TIMEOUT_S} s") from None
    except OSError as err:
        raise NoAnswer(f"nvidia-smi could not run ({err})") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip().splitlines()
        raise NoAnswer(f"nvidia-smi failed (exit {done.returncode}"
                       f"{': ' + said[0] if said else ''})")
    return [parse_gpu(line) for line in done.stdout.splitlines() if line.strip()]


@functools.cache  # the node's GPUs do not change while a run lasts: asked once, said once
def driver_gpus() -> tuple[Gpu, ...]:
    """Every GPU the driver sees: nvidia-smi's list or, where nvidia-smi cannot give one while
    /dev holds GPU devices, NVML's (ask_nvml); none on a node without either."""
    try:
        return tuple(smi_gpus())
    except NoAnswer as why:
        devices = sorted(glob.glob(GPU_DEVICES))
        if devices:
            log.warning("%s while %s exist: counting the GPUs through NVML", why,
                        ", ".join(devices[:2]) + (", ..." if len(devices) > 2 else ""))
            return ask_nvml()
        if isinstance(why, NotUnderstood):  # a CPU node answers with an error exit, not this
            log.warning("%s: no GPU counted", why)
        return ()


def nvml_gpus() -> list[Gpu]:
    """Every GPU as NVML (libnvidia-ml, the library nvidia-smi reads) lists it, in its order.

    This loads the driver's library: only `python -m inference_core.gpu_node nvml` calls it, in a
    process of its own (ask_nvml)."""
    import ctypes

    class Memory(ctypes.Structure):  # nvmlMemory_t
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]

    nvml = ctypes.CDLL("libnvidia-ml.so.1")
    nvml.nvmlErrorString.restype = ctypes.c_char_p

    def check(code: int, call: str) -> None:
        if code:
            raise OSError(f"{call}: {nvml.nvmlErrorString(code).decode()} (NVML error {code})")

    def text(call: str, *args: Any) -> str:
        buffer = ctypes.create_string_buffer(96)
        check(getattr(nvml, call)(*args, buffer, len(buffer)), call)
        return buffer.value.decode()

    check(nvml.nvmlInit_v2(), "nvmlInit_v2")
    try:
        driver = text("nvmlSystemGetDriverVersion")
        count = ctypes.c_uint()
        check(nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)), "nvmlDeviceGetCount_v2")
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            check(nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)),
                  "nvmlDeviceGetHandleByIndex_v2")
            memory = Memory()
            # Memory is a nicety (nvidia-smi's [N/A] reads 0 too); the count is what matters.
            total = 0 if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) \
                else memory.total >> 20
            gpus.append(Gpu(index, text("nvmlDeviceGetUUID", handle),
                            text("nvmlDeviceGetName", handle), total, driver))
        return gpus
    finally:
        nvml.nvmlShutdown()


def ask_nvml(python: str = sys.executable) -> tuple[Gpu, ...]:
    """nvml_gpus() from a process of its own, so that this one loads no driver library."""
    try:
        done = subprocess.run([python, "-m", "inference_core.gpu_node", "nvml"],
                              capture_output=True, text=True, timeout=NVML_TIMEOUT_S,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        log.warning("NVML did not answer within %d s either: no GPU counted", NVML_TIMEOUT_S)
        return ()
    lines = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
    try:
        if done.returncode == 0:
            return tuple(Gpu(**gpu) for gpu in json.loads(lines[-1]))
    except (IndexError, ValueError, TypeError):
        pass
    log.warning("NVML could not count them either (%s): no GPU counted",
                lines[-1] if lines else f"exit {done.returncode}, no answer")
    return ()


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
    elif command == "nvml":
        try:
            print(json.dumps([asdict(gpu) for gpu in nvml_gpus()]))
        except (OSError, AttributeError) as err:  # no libnvidia-ml.so.1, one too old for a
            print(err, file=sys.stderr)             # call, or NVML refused: one line for ask_nvml
            return 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

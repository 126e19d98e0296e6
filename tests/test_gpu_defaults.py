"""Device-aware `auto` engine settings and the GPU-count checks, with only the device query faked."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import GPUS, REPO, compose
from inference_core import config as conf
from inference_core.config import ConfigError
from inference_core.run.job import prepare_job
from inference_vllm.device_defaults import (CPU_DEFAULTS, GPU_DEFAULTS, GPU_SHARE_ENV,
                                            resolve_device_defaults)
from inference_vllm.engine import engine_args
from inference_vllm.ray_engine import engine_kwargs


def engine_cfg(*overrides: str) -> dict:
    return OmegaConf.to_container(compose(*overrides).engine, resolve=True)


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has N CUDA devices: conf.gpu_count is the only thing faked (and the
    share tests/conftest.py sets on GPU nodes is left out)."""
    monkeypatch.delenv(GPU_SHARE_ENV, raising=False)

    def fake(count: int) -> None:
        monkeypatch.setattr(conf, "gpu_count", lambda: count)
    return fake


def test_the_config_says_auto():
    cfg = engine_cfg()
    assert cfg["gpu_memory_utilization"] == "auto" and cfg["enforce_eager"] == "auto"


def test_auto_resolves_to_the_cpu_values_where_cuda_shows_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hides a GPU node's GPUs, as from CUDA
    assert conf.gpu_count() == 0
    args = engine_args(engine_cfg())
    assert args["gpu_memory_utilization"] == 0.3 and args["enforce_eager"] is True
    assert {k: args[k] for k in CPU_DEFAULTS} == CPU_DEFAULTS


def test_auto_resolves_to_vllms_gpu_values_where_cuda_is_present(gpus):
    gpus(8)
    args = engine_args(engine_cfg())
    assert args["gpu_memory_utilization"] == 0.9 and args["enforce_eager"] is False
    assert {k: args[k] for k in GPU_DEFAULTS} == GPU_DEFAULTS


def test_explicit_values_are_passed_as_given(gpus):
    gpus(1)
    args = engine_args(engine_cfg("engine.gpu_memory_utilization=0.75", "engine.enforce_eager=true"))
    assert args["gpu_memory_utilization"] == 0.75 and args["enforce_eager"] is True


def test_no_word_auto_reaches_vllm_and_data_parallel_stays_ours(gpus):
    gpus(2)
    args = engine_args(engine_cfg("engine.data_parallel_size=2"))
    assert "auto" not in (args["gpu_memory_utilization"], args["enforce_eager"])
    assert "data_parallel_size" not in args and "name" not in args


@pytest.mark.parametrize("override, key", [
    ("engine.gpu_memory_utilization=1.5", "gpu_memory_utilization"),
    ("engine.gpu_memory_utilization=high", "gpu_memory_utilization"),
    ("engine.enforce_eager=sometimes", "enforce_eager")])
def test_bad_device_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"engine.{key}="):
        engine_args(engine_cfg(override))


def test_ray_auto_follows_the_accelerator_not_the_driver(gpus):
    gpus(0)  # the driver may well have no GPU while the replicas do
    on_gpu = engine_kwargs(engine_cfg("engine=ray", "engine.accelerator=GPU"), seed=1)
    assert on_gpu["gpu_memory_utilization"] == 0.9 and on_gpu["enforce_eager"] is False
    on_cpu = engine_kwargs(engine_cfg("engine=ray"), seed=1)
    assert on_cpu["gpu_memory_utilization"] == 0.3 and on_cpu["enforce_eager"] is True


def test_resolving_keeps_other_keys():
    cfg = {"name": "vllm", "gpu_memory_utilization": "auto", "max_num_seqs": 8}
    assert resolve_device_defaults(cfg, on_gpu=True) == {
        "name": "vllm", "gpu_memory_utilization": 0.9, "enforce_eager": False, "max_num_seqs": 8}


# --- parallelism against the devices present (no engine, nothing loaded) ---

def test_data_parallel_on_cpu_is_allowed_but_tensor_parallel_is_not(gpus):
    gpus(0)
    prepare_job(compose("engine.data_parallel_size=2"))
    with pytest.raises(ConfigError, match="needs 6 GPUs; 0 found"):
        prepare_job(compose("engine.data_parallel_size=2", "engine.tensor_parallel_size=3"))


def test_dp_times_tp_above_the_gpus_is_a_config_error(gpus):
    gpus(4)
    prepare_job(compose("engine.data_parallel_size=4"))
    prepare_job(compose("engine.data_parallel_size=1", "engine.tensor_parallel_size=3"))
    with pytest.raises(ConfigError, match=r"tensor_parallel_size=3 x .* data_parallel_size=2 "
                                          r"needs 6 GPUs; 4 found"):
        prepare_job(compose("engine.data_parallel_size=2", "engine.tensor_parallel_size=3"))


def test_dp_times_tp_above_the_devices_exits_2_before_loading_anything(tmp_path):
    """The real command on this CPU machine: refused in a few seconds, no engine, no folder."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "inference_vllm", "engine.data_parallel_size=2",
         "engine.tensor_parallel_size=3", f"output_dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # no GPU on any node
    assert done.returncode == 2, done.stderr[-2000:]
    said = done.stdout + done.stderr  # Hydra logs to stdout
    assert "needs 6 GPUs; 0 found" in said
    assert "replica" not in said.lower() and "starting vLLM" not in said
    assert not (out / "users").exists()


# --- python -m inference_vllm.gpu_check ---

def test_gpu_check_plans_the_cpu_part_without_gpus():
    from inference_vllm.gpu_check import plan_checks

    assert [name for name, _, _ in plan_checks(0, 9)] == ["tp1", "dp2"]


def test_gpu_check_splits_tp_where_the_heads_allow():
    from inference_vllm.gpu_check import largest_split, plan_checks

    assert largest_split(32, 8) == 8 and largest_split(9, 8) == 3 and largest_split(9, 2) == 1
    assert [name for name, _, _ in plan_checks(8, 32)] == ["tp1", "tp8", "dp8"]
    checks = {name: note for name, _, note in plan_checks(8, 9)}
    assert list(checks) == ["tp1", "tp3", "dp8"] and "--model-path" in checks["tp3"]
    assert [name for name, _, _ in plan_checks(1, 9)] == ["tp1"]


@pytest.mark.engine
@pytest.mark.skipif(GPUS > 0, reason="the CPU part; on GPUs `make gpu-check` is the check")
def test_gpu_check_on_cpu_prints_its_table_and_exits_0(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "-m", "inference_vllm.gpu_check", "--out", str(out),
         "--work-dir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no GPU found" in done.stdout and "samples_per_s" in done.stdout
    import orjson

    report = orjson.loads(out.read_bytes())
    assert [r["check"] for r in report["rows"]] == ["tp1", "dp2", "hf"]
    assert all(r["status"] == "ok" for r in report["rows"])
    assert [r["samples"] for r in report["rows"][:2]] == [16, 16] and report["rows"][2]["samples"]
    assert report["rows"][1]["replicas"] == 2
    assert report["rows"][0]["engine_args"]["enforce_eager"] is True
    assert report["found"]["gpus"] == [] and report["found"]["vllm_build"] == "cpu"


@pytest.mark.parametrize("experiment, tp, dp", [
    ("dmsc_8b_tp4", 4, 1), ("dmsc_8b_dp8", 1, 8), ("dmsc_4b_dp8", 1, 8),
    ("dmsc_27b_tp2_dp4", 2, 4), ("dmsc_30b_a3b_tp2_dp4_ep", 2, 4)])
def test_parallel_experiments_fill_an_8_gpu_node(gpus, experiment, tp, dp):
    gpus(8)
    cfg = engine_cfg(f"experiment={experiment}", "model.path=/ckpt/X")
    assert (cfg["tensor_parallel_size"], cfg["data_parallel_size"]) == (tp, dp)
    assert cfg["gpu_memory_utilization"] == "auto" and cfg["enforce_eager"] == "auto"
    conf.check_parallelism(cfg, conf.ModelFacts(40960, 32))  # the four models have 32 heads
    gpus(4)
    if tp * dp > 4:
        with pytest.raises(ConfigError, match="4 found"):
            conf.check_parallelism(cfg, conf.ModelFacts(40960, 32))


def test_the_moe_experiment_turns_on_expert_parallelism():
    cfg = engine_cfg("experiment=dmsc_30b_a3b_tp2_dp4_ep", "model.path=/ckpt/X")
    assert engine_args(cfg)["enable_expert_parallel"] is True

"""Configuration checked before any model loads: one line each, exit code 2."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose
from inference_core import config as conf
from inference_core.cli import run_cli


def never_start(job, adapters):
    raise AssertionError("the engine must not start on a bad configuration")


@pytest.mark.parametrize("overrides,message", [
    (["dataset.path=/nonexistent"], "dataset.path=/nonexistent lacks train.json and test_leaderboard.json"),
    (["model.path=/no/such/ckpt"], "model.path=/no/such/ckpt does not exist"),
    (["sampling.num_samples=0"], "sampling.num_samples=0 must be at least 1"),
    (["sampling.max_tokens=4096"], "sampling.max_tokens=4096 leaves no room for a prompt in max_model_len=2048"),
    (["sampling.temperature=0"], "greedy"),
    (["engine.tensor_parallel_size=4"], "needs 4 GPUs; 0 found"),
    (["shard.count=2", "shard.index=2"], "shard.index=2 must be in [0, shard.count=2)"),
    (["dataset.holdout=first"], "dataset.holdout='first': choose null or last"),
    (["model.max_model_len=16384"], "engine.max_model_len=16384 is beyond the model's window "
                                    "(max_position_embeddings=8192"),
    (["dataset.language=fr"], "dataset.language='fr': choose one of en, zh"),
])
def test_bad_settings_exit_2_with_one_line(tmp_path, caplog, monkeypatch, overrides, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # "0 found" on a GPU node too
    cfg = compose(f"output_dir={tmp_path / 'out'}", *overrides)
    with caplog.at_level(logging.ERROR):
        assert run_cli(cfg, never_start) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.fixture(scope="module")
def composed():
    return compose()


# vLLM's own ranges (SamplingParams._verify_args): each of these used to fail only after the
# model had loaded.
@pytest.mark.parametrize("key,value,message", [
    ("temperature", -1, "sampling.temperature=-1 must be in [0, 2]"),
    ("temperature", 2.5, "sampling.temperature=2.5 must be in [0, 2]"),
    ("temperature", "hot", "sampling.temperature='hot' is not a number"),
    ("temperature", "nan", "sampling.temperature='nan' is not a number"),
    ("top_p", 0, "sampling.top_p=0 must be in (0, 1]"),
    ("top_p", 1.5, "sampling.top_p=1.5 must be in (0, 1]"),
    ("top_k", -2, "sampling.top_k=-2 must be -1 or 0 (off), or at least 1"),
    ("top_k", 2.5, "sampling.top_k=2.5 is not a whole number"),
    ("repetition_penalty", 0, "sampling.repetition_penalty=0 must be above 0"),
    ("repetition_penalty", -1.1, "sampling.repetition_penalty=-1.1 must be above 0"),
    ("min_tokens", 600, "sampling.min_tokens=600 must be in [0, sampling.max_tokens=512]"),
    ("min_tokens", -1, "sampling.min_tokens=-1 must be in [0, sampling.max_tokens=512]"),
    ("max_tokens", 0, "sampling.max_tokens=0 must be at least 1"),
    ("seed", "x", "sampling.seed='x' is not a whole number"),
    ("blank_retries", -1, "sampling.blank_retries=-1 must be 0 or more"),
])
def test_every_sampling_value_is_checked_before_the_engine_starts(tmp_path, caplog, composed, key,
                                                                  value, message):
    cfg = composed.copy()
    OmegaConf.update(cfg, "output_dir", str(tmp_path / "out"))
    OmegaConf.update(cfg, f"sampling.{key}", value)
    with caplog.at_level(logging.ERROR):
        assert run_cli(cfg, never_start) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert message in error and "\n" not in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value", [("temperature", 0), ("temperature", 2), ("top_p", 1),
                                       ("top_k", -1), ("top_k", 0), ("min_tokens", 0),
                                       ("min_tokens", 512), ("repetition_penalty", 0.5)])
def test_the_edges_vllm_accepts_pass(composed, key, value):
    cfg = composed.copy()
    OmegaConf.update(cfg, "sampling.num_samples", 1)  # greedy gives one sample
    OmegaConf.update(cfg, f"sampling.{key}", value)
    conf.check_sampling(cfg, max_model_len=2048)


def test_tensor_parallel_must_divide_attention_heads(monkeypatch):
    monkeypatch.setattr(conf, "gpu_count", lambda: 8)
    facts = conf.ModelFacts(8192, 9)
    with pytest.raises(conf.ConfigError, match="does not divide the model's 9 attention heads"):
        conf.check_parallelism({"tensor_parallel_size": 2}, facts)
    conf.check_parallelism({"tensor_parallel_size": 3}, facts)


ALL_DATASETS = ("Chameleons, DMSC, LovinkDialogue, LovinkQuestionnaire, MovieLens, PERSONA_Bench, "
                "REALTALK, RealPersonaChat, custom")


@pytest.mark.parametrize("override,choices", [("dataset=Foo", ALL_DATASETS),
                                              ("ablation=everything", "context_only")])
def test_unknown_dataset_or_ablation_lists_the_choices(override, choices):
    done = subprocess.run([sys.executable, "-m", "inference_vllm", override], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"unknown {override.split('=')[0]} '{override.split('=')[1]}'" in done.stderr
    assert choices in done.stderr

"""Configuration checked before any model loads: one line each, exit code 2."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

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

"""Shards: a deterministic, balanced split whose merge equals one unsharded run."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import DATA, REPO, compose
from inference_core.run.job import prepare_job
from inference_core.rundir.merge import main as merge_main
from inference_core.run.pipeline import run_job
from inference_core.run.shards import assign_shards
from test_interrupts import finished
from test_vllm_pipeline import assert_complete_run

TINY = ["sampling.max_tokens=8", "sampling.num_samples=2"]
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"


def test_assignment_is_deterministic_and_balanced():
    tokens = {f"user{i}": 100 + (i * 37) % 400 for i in range(101)}
    owner = assign_shards(tokens, 4)
    assert owner == assign_shards(dict(reversed(list(tokens.items()))), 4)
    loads = [sum(t for u, t in tokens.items() if owner[u] == s) for s in range(4)]
    assert max(loads) - min(loads) <= max(tokens.values())
    assert set(owner.values()) == {0, 1, 2, 3}


@pytest.mark.parametrize("dataset", ["Chameleons", "DMSC"])
@pytest.mark.parametrize("ablation", ["profile_and_history_and_context", "context_only"])
def test_split_estimate_follows_the_real_prompt_tokens(tokenizer, dataset, ablation):
    """Shards split users by an estimate made before tokenizing: close to what gets built."""
    from inference_core.data.loader import load_dataset
    from inference_core.prompts.builder import PromptBuilder, build_prompts
    from inference_core.run.shards import CHARS_PER_TOKEN

    job = prepare_job(compose(f"dataset={dataset}", f"ablation={ablation}"))
    data = load_dataset(job.dataset_name, job.dataset_path, job.references_file, None)
    builder = PromptBuilder(tokenizer, job.prompt, job.ablation,
                            job.max_model_len - job.sampling.max_tokens)
    for user in data.users:
        real = sum(p.num_tokens for p in build_prompts(builder, [user])[0])
        assert 0.5 * real <= builder.estimate_user(user, CHARS_PER_TOKEN[job.language]) <= 1.5 * real


@pytest.mark.engine
def test_two_shards_then_merge_equal_one_unsharded_run(vllm_engine, tmp_path):
    whole = run_job(prepare_job(compose(f"output_dir={tmp_path / 'whole'}", *TINY)),
                    lambda job, adapters: vllm_engine)
    out = tmp_path / "sharded"
    for index in (1, 0):
        run_job(prepare_job(compose(f"output_dir={out}", "shard.count=2", f"shard.index={index}",
                                    *TINY)), lambda job, adapters: vllm_engine)
        if index == 1:  # shard 0 has not run yet: nothing merged
            assert not (out / "test_leaderboard.json").exists()
            assert 0 < len(list((out / "users").iterdir())) < 8
    summary = assert_complete_run(out, TEST_FILE, 2)
    assert finished(out).keys() == finished(whole).keys()
    assert summary["num_shards"] == 2 and [s["shard_index"] for s in summary["shards"]] == [0, 1]
    assert sum(s["users_generated"] for s in summary["shards"]) == summary["num_users"]
    (out / "test_leaderboard.json").unlink()
    assert merge_main([str(out)]) == 0  # the merge by hand reads the shard count itself
    assert_complete_run(out, TEST_FILE, 2)


@pytest.mark.engine
def test_submitit_local_launcher_runs_a_two_shard_sweep(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "inference_vllm", "-m", "hydra/launcher=local",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", "shard.count=2", "shard.index=0,1",
           f"output_dir={out}", "dataset=DMSC", *TINY]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = assert_complete_run(out, DATA / "DMSC" / "test_leaderboard.json", 2)
    assert summary["num_shards"] == 2
    assert len(list((tmp_path / "sweep" / ".submitit").iterdir())) >= 2  # two submitit jobs

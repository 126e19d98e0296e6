"""The Transformers engine through the whole pipeline: one process, and torchrun with 2 ranks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, REPO, compose
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from test_vllm_pipeline import assert_complete_run

pytestmark = pytest.mark.engine
# Transformers prefills each of the n samples separately (num_return_sequences copies the
# prompt), so on 2 CPU cores the prompts are kept short here; the long-history users still
# get truncated to fit.
TINY = ["sampling.max_tokens=8", "sampling.num_samples=2", "model.max_model_len=512"]


def test_one_process_fills_every_item(tmp_path):
    out = tmp_path / "out"
    run_job(prepare_job(compose("engine=hf", f"output_dir={out}", *TINY)))
    summary = assert_complete_run(out, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert summary["engine"] == "hf" and summary["world_size"] == 1


def test_torchrun_two_ranks_share_the_users_and_rank_0_merges(tmp_path):
    out = tmp_path / "out"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc_per_node=2", "-m", "inference_hf", "dataset=DMSC",
           f"output_dir={out}", *TINY]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    summary = assert_complete_run(out, DATA / "DMSC" / "test_leaderboard.json", 2)
    assert summary["engine"] == "hf" and summary["world_size"] == 2
    ranks = summary["shards"]
    assert [r["shard_index"] for r in ranks] == [0, 1]
    assert all(r["users_generated"] > 0 and r["inference_time_seconds"] > 0 for r in ranks)
    assert sum(r["samples_generated"] for r in ranks) == summary["total_samples"]


def test_torchrun_a_jobs_failure_stops_that_job_alone_and_a_rerun_finishes_it(tmp_path):
    """Three jobs on two ranks; one job's metrics raise (a scorer's bug, injected through
    tests/fixtures/site): rank 0 still merges, scores and reports the two others, the failed one
    is named with its folder and its exit code; the same command again finishes only it."""
    from test_job_faults import FAILING

    torchrun = Path(sys.executable).parent / "torchrun"
    site = REPO / "tests" / "fixtures" / "site"
    cmd = [str(torchrun), "--nproc_per_node=2", "-m", "inference_hf", "max_users=4",
           f"ablations=[profile_only,{FAILING},context_only]",
           f"output_dir={tmp_path}/${{ablation.name}}", "report=false", *TINY]
    broken = {**os.environ, "PYTHONPATH": str(site), "TEST_BREAK_METRICS_OF": FAILING}
    done = subprocess.run(cmd, cwd=REPO, env=broken, capture_output=True, text=True, timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-4000:]
    assert f"{tmp_path / FAILING}: ZeroDivisionError: a scorer's bug" in said
    for ablation in ("profile_only", "context_only"):
        assert (tmp_path / ablation / "metrics.json").is_file()
    assert not (tmp_path / FAILING / "metrics.json").exists()
    kept = {p: p.read_bytes() for a in ("profile_only", "context_only")
            for p in (tmp_path / a).rglob("*") if p.is_file() and not p.name.endswith(".lock")}

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert (tmp_path / FAILING / "metrics.json").is_file()
    assert kept == {p: p.read_bytes() for p in kept}

"""engine.data_parallel_size=N: N replica processes, one shard each, one merge; kill and resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, GPUS, REPO, compose
from inference_core import config as conf
from inference_core.config import ConfigError
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from inference_core.rundir.writers import read_json
from inference_vllm.device_defaults import resolve_device_defaults
from inference_vllm.replicas import (REPLICA_ENV, check_replica_settings, device_slices,
                                     exit_status, plan_replicas, replica_env, replica_overrides)
from test_vllm_pipeline import assert_complete_run, test_items

TINY = ["max_users=4", "sampling.max_tokens=8", "sampling.num_samples=2"]
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"


# --- planning (no engine) ---

def test_each_replica_gets_its_own_consecutive_gpus():
    assert device_slices(4, 2, None, 8) == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert device_slices(2, 1, None, 2) == [("0",), ("1",)]


def test_slices_come_from_the_gpus_this_process_was_given():
    assert device_slices(2, 2, "4,5,6,7", 4) == [("4", "5"), ("6", "7")]
    assert device_slices(2, 1, "GPU-aa, GPU-bb", 2) == [("GPU-aa",), ("GPU-bb",)]


def test_cpu_replicas_hide_nothing():
    assert device_slices(3, 1, None, 0) == [None, None, None]


def test_too_few_gpus_for_the_slices_is_a_config_error():
    with pytest.raises(ConfigError, match="needs 8 GPUs; 4 found"):
        device_slices(4, 2, None, 4)


def test_replica_overrides_replace_the_parents_shard_and_keep_the_rest():
    mine = ["dataset=DMSC", "engine.data_parallel_size=4", "+engine.extra.max_logprobs=5",
            "overwrite=true", "shard.count=1"]
    got = replica_overrides(mine, 2, 4)
    assert got[:2] == ["dataset=DMSC", "+engine.extra.max_logprobs=5"]
    assert {"engine.data_parallel_size=1", "shard.count=4", "shard.index=2",
            "overwrite=false", "hydra.output_subdir=null"} <= set(got)
    assert "overwrite=true" not in got and "engine.data_parallel_size=4" not in got


def test_plan_sets_devices_and_the_replica_mark(monkeypatch, tmp_path):
    monkeypatch.setattr(conf, "gpu_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = compose("engine.data_parallel_size=2", "engine.tensor_parallel_size=2")
    replicas = plan_replicas(cfg, ["engine.data_parallel_size=2"], tmp_path)
    assert [r.devices for r in replicas] == [("0", "1"), ("2", "3")]
    assert replicas[1].command[:3] == (sys.executable, "-m", "inference_vllm")
    env = replica_env(replicas[1])
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env[REPLICA_ENV] == "1/2"
    assert "CUDA_VISIBLE_DEVICES=2,3" in replicas[1].describe()


def test_replicas_with_slurm_shards_are_refused_for_now():
    with pytest.raises(ConfigError, match="shard.count=2 is not supported yet"):
        check_replica_settings(compose("engine.data_parallel_size=2", "shard.count=2"))


def test_a_killed_replica_reads_like_a_killed_run():
    assert exit_status(-signal.SIGKILL) == 137 and exit_status(3) == 3


# --- real replicas on CPU (two engines, tiny work) ---

def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "inference_vllm", "engine.data_parallel_size=2",
            f"output_dir={out}", *TINY, *extra]


def replica_pids(parent: int) -> dict[int, int]:
    """{shard index: pid} of the parent's replica processes (read from /proc)."""
    found = {}
    children = Path(f"/proc/{parent}/task/{parent}/children")
    for pid in children.read_text().split() if children.exists() else ():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(b"shard.index="):
                found[int(arg.split(b"=")[1])] = int(pid)
    return found


def leaderboard_texts(out: Path) -> list:
    """Every item's continuations in the filled leaderboard file, in file order."""
    return [item.get("continuations") for record in read_json(out / "test_leaderboard.json")
            for col in record["task"]["task_behavior_collections"] for item in col["data"]]


def assert_every_item_once(out: Path, n: int) -> dict:
    """The first 4 users' items each filled with n samples, each in exactly one user file."""
    summary = assert_complete_run(out, TEST_FILE, n, max_users=4)
    written = [f"{i['location']['record']}/{i['location']['collection']}/{i['location']['item']}"
               for path in (out / "users").glob("*.json") for i in read_json(path)["items"]]
    wanted = [f"{r}/{c}/{d}" for (r, c, d), _, _ in test_items(TEST_FILE) if r < 4]
    assert sorted(written) == sorted(wanted)  # every item once across the replicas' files
    assert summary["num_users"] == 4 and summary["data_parallel_size"] == 2
    assert [r["replica"] for r in summary["replicas"]] == [0, 1]
    assert [s["shard_index"] for s in summary["shards"]] == [0, 1]
    assert summary["engine"] == "vllm"
    return summary


@pytest.mark.engine
@pytest.mark.skipif(GPUS == 1, reason="two replicas need two GPUs on a GPU node")
def test_two_replicas_serve_two_jobs_then_kill_one_and_resume(tmp_path, vllm_engine):
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    ablations = ("profile_only", "context_only")
    # Two ablations through the same two replicas; SIGKILL one replica as soon as the first user
    # file is on disk, then run the same command again (one engine start per replica, each
    # serving its share of both jobs; each folder merged once).
    out = tmp_path / "killed"
    folders = [out / a for a in ablations]
    argv = command(Path(f"{out}/${{ablation.name}}"), "ablations=[profile_only,context_only]")
    parent = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 400
    while victim is None and time.time() < deadline and parent.poll() is None:
        pids = replica_pids(parent.pid)
        if len(pids) == 2 and any(any((f / "users").glob("*.json")) for f in folders):
            victim = max(pids)  # shard 1, unless it is already gone
            os.kill(pids[victim], signal.SIGKILL)
        time.sleep(0.1)
    stdout, stderr = parent.communicate(timeout=300)
    said = stdout + stderr  # Hydra logs to stdout, the replicas' output comes on stderr
    assert victim is not None, "the replicas never both ran: " + said[-2000:]
    assert parent.returncode == 137, said[-3000:]
    assert f"replica {victim} of 2" in stdout and "SIGKILL" in stdout
    assert not any((f / "test_leaderboard.json").exists() for f in folders)
    # Its users may all be written already (a tiny job ends in a few steps): kept is 0 to 4.
    kept = [len(list((f / "users").glob("*.json"))) for f in folders]
    assert sum(kept) >= 1

    again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[replica 1]" in again.stderr
    sessions = set()
    expected = resolve_device_defaults({})  # this node's `auto`: CPU values here
    for ablation, folder, n_kept in zip(ablations, folders, kept):
        summary = assert_every_item_once(folder, 2)
        assert summary["resumed_users"] == n_kept  # only the missing users were generated again
        # Over both sessions (the killed one and this one) each user was generated once.
        assert sum(r["users_generated"] for r in summary["replicas"]) == 4
        args = summary["shards"][0]["engine_stats"]["engine_args"]
        assert {k: args[k] for k in expected} == expected
        sessions.add(tuple(s["engine_session"]["id"] for s in summary["shards"]))
        assert read_json(folder / "run.json")["max_users"] == 4
        # Per-request seeds: users written by the killed start and by the resumed one, on two
        # replicas, hold what one engine draws for the same users.
        one = run_job(prepare_job(compose(f"output_dir={tmp_path / 'one' / ablation}", *TINY,
                                          f"ablation={ablation}")),
                      lambda job, adapters: vllm_engine)
        assert leaderboard_texts(one) == leaderboard_texts(folder)
    assert len(sessions) == 1  # one start per replica, each serving both folders

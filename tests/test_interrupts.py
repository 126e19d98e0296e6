"""Real runs stopped by SIGTERM and SIGKILL at random moments, then resumed to the end."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import DATA, REPO, compose
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from test_vllm_pipeline import assert_complete_run, load

pytestmark = pytest.mark.engine
ARGS = ["sampling.max_tokens=48", "sampling.num_samples=3"]
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inference_vllm", f"output_dir={out}", *ARGS],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, like a Slurm job step


def wait_for_user_file(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any((out / "users").glob("*.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no user finished in time"
        time.sleep(0.2)


def assert_no_torn_json(out: Path) -> None:
    for path in out.rglob("*.json"):
        orjson.loads(path.read_bytes())  # raises on a partial file


def finished(out: Path) -> dict[tuple[str, str], list[str]]:
    """{(user_hash, item location): samples} of every user file."""
    found = {}
    for path in (out / "users").glob("*.json"):
        user = load(path)
        for item in user["items"]:
            key = (user["user_hash"], "{record}/{collection}/{item}".format(**item["location"]))
            assert key not in found, f"{key} written twice"
            found[key] = item["generated_samples"]
    return found


def test_sigterm_and_sigkill_then_resume_matches_an_uninterrupted_run(vllm_engine, tmp_path):
    reference = run_job(prepare_job(compose(f"output_dir={tmp_path / 'ref'}", *ARGS)),
                        lambda job, adapters: vllm_engine)
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("KILL_SEED", time.time())))

    proc = start(out)  # 1) SIGTERM to the whole job, as Slurm preempts
    wait_for_user_file(proc, out)
    time.sleep(rng.uniform(0, 1.0))
    os.killpg(proc.pid, signal.SIGTERM)
    log, err = proc.communicate(timeout=120)
    assert proc.returncode in (128 + signal.SIGTERM, 0), err[-2000:]
    if proc.returncode:  # Hydra's console log goes to stdout
        assert "stopped by SIGTERM" in log and "run the same command again to resume" in log
    assert_no_torn_json(out)

    for _ in range(2):  # 2) SIGKILL at a random moment: start-up, generation or writing
        proc = start(out)
        wait_for_user_file(proc, out)
        time.sleep(rng.uniform(0, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert_no_torn_json(out)

    proc = start(out)  # 3) resume to the end
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert_complete_run(out, TEST_FILE, 3)
    # Every request carries its own seed (the CPU build too): the users written before each
    # stop, by three other engine starts, hold what the uninterrupted run drew.
    assert finished(out) == finished(reference)

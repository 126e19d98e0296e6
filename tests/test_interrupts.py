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
# 4 of the 8 users: each start prefills every prompt before the first user file is written.
ARGS = ["max_users=4", "sampling.max_tokens=16", "sampling.num_samples=2"]
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inference_vllm", f"output_dir={out}", *ARGS],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, like a Slurm job step


def wait_for_user_file(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    """Until this run writes a user file (or ends)."""
    before = len(list((out / "users").glob("*.json")))
    deadline = time.monotonic() + timeout
    while len(list((out / "users").glob("*.json"))) <= before and proc.poll() is None:
        assert time.monotonic() < deadline, "no user finished in time"
        time.sleep(0.2)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the run's process group, unless the run has already ended (a tiny run can)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


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
    signal_group(proc, signal.SIGTERM)
    log, err = proc.communicate(timeout=120)
    # 143: stopped between engine steps, with its line; -15: the signal came after generation
    # (merge, metrics: nothing to keep) and ended it the default way (a shell sees 143 too).
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM, 0), err[-2000:]
    if proc.returncode == 128 + signal.SIGTERM:  # Hydra's console log goes to stdout
        assert "stopped by SIGTERM" in log and "run the same command again to resume" in log
    assert_no_torn_json(out)

    proc = start(out)  # 2) SIGKILL of the resumed run once it wrote a user: generation or writing
    wait_for_user_file(proc, out)
    time.sleep(rng.uniform(0, 4.0))
    signal_group(proc, signal.SIGKILL)
    proc.wait(timeout=60)
    assert_no_torn_json(out)

    proc = start(out)  # 3) resume to the end
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert assert_complete_run(out, TEST_FILE, 2, max_users=4)["num_users"] == 4
    # The resumed run's files are the uninterrupted run's: the filled leaderboard file, and below,
    # every user file's samples.
    assert load(out / "test_leaderboard.json") == load(reference / "test_leaderboard.json")
    # Every request carries its own seed (the CPU build too): the users written before each
    # stop, by two other engine starts, hold what the uninterrupted run drew.
    assert finished(out) == finished(reference)

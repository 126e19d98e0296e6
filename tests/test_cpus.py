"""Pools and worker counts sized from the CPUs this process may run on (its affinity mask and
Slurm's allotment), not the whole node, and that figure in every summary."""
from __future__ import annotations

import os
import subprocess
import sys

import orjson

from conftest import REPO, compose
from fake_engine import FakeEngine, lend
from inference_core.cpus import usable_cpus
from inference_core.evaluation import background
from inference_core.prompts import pool
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job

TINY = ("max_users=2", "sampling.num_samples=1", "sampling.max_tokens=8", "evaluate=false",
        "report=false")


def test_a_process_bound_to_one_cpu_counts_one_not_the_node():
    """A real affinity mask (what a cgroup cpuset or `taskset` sets), in a process of its own."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from inference_core.cpus import usable_cpus\n"
            "from inference_core.rundir.facts import describe_device\n"
            "d = describe_device(); print(usable_cpus(), d['cpus_usable'], d['cpu_count'])")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.split() == ["1", "1", str(os.cpu_count())]


def test_slurm_cpus_per_task_caps_the_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert usable_cpus() == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")  # more than the mask allows: the mask
    assert usable_cpus() == 32
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")
    assert usable_cpus() == 32


def test_the_pools_follow_the_usable_cpus_on_a_big_node(monkeypatch):
    """A 128-core node of which this job may use 4: half of 4 prompt workers, 2 scorers."""
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(128)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert pool.default_workers() == 2 and pool.PromptPool.workers_for(None) == 2
    assert background.default_workers() == 2


def test_the_summary_records_the_usable_cpus(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    out = run_job(prepare_job(compose(f"output_dir={tmp_path}/out", *TINY)), lend(FakeEngine()))
    device = orjson.loads((out / "inference_summary.json").read_bytes())["device"]
    assert device["cpus_usable"] == 1 and device["cpu_count"] == os.cpu_count()

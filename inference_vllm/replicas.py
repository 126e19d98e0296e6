"""`engine.data_parallel_size=N`: N engine replicas on one node, one process and one shard each.

Replica i is the same command with `shard.count=N shard.index=i engine.data_parallel_size=1`,
started as a child process that sees only its own tensor_parallel_size x pipeline_parallel_size
GPUs (CUDA_VISIBLE_DEVICES). Every replica writes its users into the same output_dir; the parent
merges once when all have finished. A replica that dies leaves its finished users on disk, the
parent exits non-zero naming it, and the same command again resumes only what is missing.
vLLM's own data_parallel_size is never used: vLLM 0.32 refuses it for offline single-process use.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

from omegaconf import DictConfig

from inference_core import config as conf
from inference_core.cli import exit_code_of, finish_outcome, shard_outcome
from inference_core.config import ConfigError
from inference_core.run.job import Job, prepare_jobs
from inference_core.rundir.merge import shard_report_path
from inference_core.run.job_run import claim_job_folder
from inference_core.rundir.writers import SUMMARY_FILE, read_json, write_json_atomic

log = logging.getLogger(__name__)

# Set in a replica's environment ("i/N"): it writes its share and leaves the merge to the parent.
REPLICA_ENV = "INFERENCE_VLLM_REPLICA"
REPLICA_LOGS = "replicas"
# Overrides the parent sets itself for each replica (any the user gave are replaced).
REPLICA_KEYS = ("engine.data_parallel_size", "shard.count", "shard.index", "overwrite")
# A replica's progress bar redraws at most this often in the parent's stream.
PROGRESS_SECONDS = "15"


@dataclass(frozen=True)
class Replica:
    index: int
    count: int
    # CUDA device ids this replica sees; None on CPU (nothing to hide).
    devices: tuple[str, ...] | None
    command: tuple[str, ...]
    log_path: Path

    @property
    def outcome_path(self) -> Path:
        """Where the replica says which jobs failed in it (replica_outcome_path)."""
        return replica_outcome_path(self.log_path.parent.parent, self.index)

    def describe(self) -> str:
        where = f"CUDA_VISIBLE_DEVICES={','.join(self.devices)}" if self.devices else "CPU"
        return f"replica {self.index} of {self.count} (shard.index={self.index}, {where})"


def replica_outcome_path(output_dir: Path, index: int) -> Path:
    return output_dir / REPLICA_LOGS / f"replica-{index}.outcome.json"


def data_parallel_size(cfg: DictConfig) -> int:
    return int(cfg.engine.get("data_parallel_size") or 1)


def is_replica() -> bool:
    """True inside a replica process: it must not merge (the parent does, once)."""
    return bool(os.environ.get(REPLICA_ENV))


def check_replica_settings(cfg: DictConfig) -> None:
    """What data parallelism cannot be combined with (yet): one clear line each."""
    if str(cfg.engine.name) != "vllm":
        raise ConfigError(f"engine.data_parallel_size runs vLLM replicas (engine=vllm); "
                          f"engine={cfg.engine.name} scales its own way (engine=ray: "
                          f"engine.concurrency)")
    if int(cfg.shard.count) > 1:
        raise ConfigError(f"engine.data_parallel_size={data_parallel_size(cfg)} with "
                          f"shard.count={cfg.shard.count} is not supported yet: use one of them "
                          f"(a Slurm array of shard.count jobs, or replicas inside one job)")


def device_slices(count: int, per_replica: int, visible: str | None, gpus: int,
                  ) -> list[tuple[str, ...] | None]:
    """Each replica's GPU ids: consecutive slices of what this process sees (None without GPUs)."""
    if gpus == 0:
        return [None] * count
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    ids = ids[:gpus] if ids else [str(i) for i in range(gpus)]
    if count * per_replica > len(ids):
        raise ConfigError(f"engine.data_parallel_size={count} x {per_replica} GPUs per replica "
                          f"needs {count * per_replica} GPUs; {len(ids)} found")
    return [tuple(ids[i * per_replica:(i + 1) * per_replica]) for i in range(count)]


def replica_overrides(task_overrides: Sequence[str], index: int, count: int) -> list[str]:
    """The user's overrides with this replica's shard; Hydra's .hydra/ and log stay the parent's."""
    kept = [o for o in task_overrides if o.lstrip("+~").split("=", 1)[0] not in REPLICA_KEYS]
    return [*kept, "engine.data_parallel_size=1", f"shard.count={count}", f"shard.index={index}",
            "overwrite=false", "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def plan_replicas(cfg: DictConfig, task_overrides: Sequence[str], output_dir: Path,
                  ) -> list[Replica]:
    count = data_parallel_size(cfg)
    per_replica = (int(cfg.engine.get("tensor_parallel_size") or 1)
                   * int(cfg.engine.get("pipeline_parallel_size") or 1))
    slices = device_slices(count, per_replica, os.environ.get("CUDA_VISIBLE_DEVICES"),
                           conf.gpu_count())
    return [Replica(i, count, slices[i],
                    (sys.executable, "-m", "inference_vllm", *replica_overrides(task_overrides, i, count)),
                    output_dir / REPLICA_LOGS / f"replica-{i}.log")
            for i in range(count)]


def prepare(cfg: DictConfig) -> list[Job]:
    """Every check before any replica starts, then the folders claimed (overwrite happens here).

    The replicas run with overwrite=false: one of them clearing the folder would delete the
    users another has just written.
    """
    check_replica_settings(cfg)
    jobs = prepare_jobs(cfg)
    for job in jobs:
        claim_job_folder(job)
    return jobs


def task_overrides() -> list[str]:
    """This job's own command-line overrides (in a multirun: this job's values of the sweep)."""
    from inference_core.compose import typed_overrides

    return typed_overrides()


def run_replicas(cfg: DictConfig, overrides: Sequence[str] | None = None) -> int:
    """Start the replicas, wait for all, merge every job no replica failed; the exit code
    (cli.py's meanings), the worst over replicas and jobs."""
    jobs: list[Job] = []
    code = exit_code_of(lambda: jobs.extend(prepare(cfg)))
    if code:
        return code
    replicas: list[Replica] = []
    code = exit_code_of(lambda: replicas.extend(plan_replicas(
        cfg, task_overrides() if overrides is None else overrides, jobs[0].output_dir)))
    if code:
        return code
    for replica in replicas:  # an earlier session's word must not stand for this one's
        replica.outcome_path.unlink(missing_ok=True)
    results = run_processes(replicas)
    failed = [(r, rc) for r, rc, _ in results if rc != 0]
    for job in jobs:
        label_shard_reports(job, results)
    for replica, rc in failed:
        log.error("%s %s; its log: %s", replica.describe(), exit_reason(rc), replica.log_path)
    bad = failed_jobs(jobs, [r for r, _ in failed])
    if bad:
        log.error("users the replicas finished are kept; run the same command again to generate "
                  "only what is missing in %s", ", ".join(sorted(map(str, bad))))
    idle = idle_everywhere(replicas)
    # The merge reads the replicas' shard reports: N of them, not the parent's single shard.
    merged = [dataclasses.replace(job, shard_count=len(replicas), shard_index=0)
              for job in jobs if job.output_dir not in bad | idle]
    finished, _ = finish_outcome(merged)
    for job in merged:
        note_replicas(job, results)
    return max([finished, *(exit_status(rc) for _, rc in failed)])


def run_replica(cfg: DictConfig) -> tuple[int, str]:
    """Inside a replica: its share of every job, unmerged; which jobs failed here is left for
    the parent, which merges only the others."""
    outcome = shard_outcome(cfg)
    if outcome.jobs:
        index, count = (int(x) for x in os.environ[REPLICA_ENV].split("/"))
        path = replica_outcome_path(outcome.jobs[0].output_dir, index)
        write_json_atomic(path, {"code": outcome.code,
                                 "failed": sorted(str(p) for p in outcome.failed),
                                 "idle": sorted(str(p) for p in outcome.idle)})
    return outcome.code, outcome.reason


def idle_everywhere(replicas: Sequence[Replica]) -> set[Path]:
    """Folders every replica found finished by an earlier run: left as they are."""
    idle: set[Path] | None = None
    for replica in replicas:
        try:
            said = {Path(p) for p in read_json(replica.outcome_path)["idle"]}
        except (OSError, ValueError, KeyError, TypeError):
            said = set()
        idle = said if idle is None else idle & said
    return idle or set()


def failed_jobs(jobs: Sequence[Job], failed: Sequence[Replica]) -> set[Path]:
    """The folders of jobs a failed replica did not finish: those it names, or all of them
    where it left no word (killed)."""
    bad: set[Path] = set()
    for replica in failed:
        try:
            bad.update(Path(p) for p in read_json(replica.outcome_path)["failed"])
        except (OSError, ValueError, KeyError, TypeError):
            bad.update(job.output_dir for job in jobs)
    return bad


def exit_reason(rc: int) -> str:
    if rc < 0:
        return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with code {rc}"


def exit_status(rc: int) -> int:
    """A replica's failure as our exit code: a signal N reads 128+N, as for a single run."""
    return 128 - rc if rc < 0 else rc


def replica_env(replica: Replica) -> dict[str, str]:
    env = {**os.environ, REPLICA_ENV: f"{replica.index}/{replica.count}",
           "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", PROGRESS_SECONDS)}
    if replica.devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(replica.devices)
    return env


def run_processes(replicas: Sequence[Replica]) -> list[tuple[Replica, int, float]]:
    """Run every replica to its end; (replica, return code, seconds) each.

    Each replica is a session of its own, so that its engine processes can be cleaned up with
    it; SIGINT/SIGTERM sent to us are passed on, and each replica stops the way a run does.
    """
    started: list[tuple[Replica, subprocess.Popen, float, threading.Thread]] = []
    for replica in replicas:
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(replica.command, env=replica_env(replica), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        log.info("%s: pid %d, log %s", replica.describe(), proc.pid, replica.log_path)
        pump = threading.Thread(target=copy_output, args=(proc.stdout, replica), daemon=True)
        pump.start()
        started.append((replica, proc, time.perf_counter(), pump))
    procs = [proc for _, proc, _, _ in started]
    previous = {s: signal.signal(s, lambda signum, _: forward(procs, signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    results: dict[int, tuple[Replica, int, float]] = {}
    try:
        while len(results) < len(started):
            for replica, proc, start, pump in started:
                rc = proc.poll() if replica.index not in results else None
                if rc is not None:  # cleaned up at once, not when the others end
                    kill_leftovers(proc.pid)
                    pump.join(timeout=10)
                    results[replica.index] = (replica, rc, time.perf_counter() - start)
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [results[i] for i in sorted(results)]


def forward(procs: Sequence[subprocess.Popen], signum: int) -> None:
    log.warning("%s: passing it on to the replicas", signal.Signals(signum).name)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signum)


def kill_leftovers(session: int) -> None:
    """A killed replica's engine processes would keep their memory (GPU memory too): end them."""
    try:
        os.killpg(session, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def copy_output(stream: IO[bytes], replica: Replica) -> None:
    """A replica's output into its log file, and line by line, labelled, onto our stderr."""
    prefix = f"[replica {replica.index}] ".encode()
    with replica.log_path.open("ab") as log_file:
        for line in iter(stream.readline, b""):
            log_file.write(line)
            log_file.flush()
            for part in line.replace(b"\r", b"\n").splitlines():
                if part.strip():
                    sys.stderr.buffer.write(prefix + part + b"\n")
            sys.stderr.flush()


def label_shard_reports(job: Job, results: Sequence[tuple[Replica, int, float]]) -> None:
    """Each replica's shard report says which replica wrote it and on which devices."""
    for replica, rc, seconds in results:
        path = shard_report_path(job.output_dir, replica.index, replica.count)
        if rc == 0 and path.is_file():
            write_json_atomic(path, {**read_json(path), **replica_facts(replica, rc, seconds)})


def replica_facts(replica: Replica, rc: int, seconds: float) -> dict[str, Any]:
    return {"replica": replica.index, "cuda_visible_devices":
            ",".join(replica.devices) if replica.devices is not None else None,
            "exit_code": rc, "process_seconds": round(seconds, 3), "log": str(replica.log_path)}


REPLICA_FIGURES = ("replica", "cuda_visible_devices", "users_generated", "resumed_users",
                   "samples_generated", "inference_time_seconds", "model_load_seconds",
                   "throughput_samples_per_sec", "output_tokens_per_sec", "process_seconds", "log")


def note_replicas(job: Job, results: Sequence[tuple[Replica, int, float]]) -> None:
    """After the merge: the summary says how many replicas served the run and how each did."""
    summary_path = job.output_dir / SUMMARY_FILE
    if summary_path.is_file():
        summary = read_json(summary_path)
        summary["data_parallel_size"] = len(results)
        summary["replicas"] = [{k: s.get(k) for k in REPLICA_FIGURES}
                               for s in summary.get("shards", [])]
        write_json_atomic(summary_path, summary)

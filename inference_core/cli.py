"""What both engines' `python -m ...` entry points share: checks, exit codes, resume hints.

Exit codes (docs/exit-codes.md): 0 done, 2 bad configuration or input (or the folder is in use
by another run), 3 items left without generations, 75 stopped by a fault it resumes from (disk
full, read-only or vanished folder, dead engine), 128+N stopped by signal N (re-run the same
command to resume); a sweep exits with its worst job's code after attempting every job.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from inference_core import sweep
from inference_core.config import ConfigError, absolute, group_choices
from inference_core.config_check import check_command_line, check_config
from inference_core.data.loader import InputError
from inference_core.run.job import Job, prepare_jobs
from inference_core.run.finish import SkippedItemsError
from inference_core.run.pipeline import (JobResults, JobsFailed, StartEngine, finish_jobs,
                                         run_command_jobs, run_jobs, start_job_engine)
from inference_core.rundir.faults import EXIT_STOPPED, as_run_stopped
from inference_core.rundir.lock import RunLocked
from inference_core.rundir.resume import RunMismatch
from inference_core.run.signals import Interrupted

log = logging.getLogger(__name__)
CHOICE_GROUPS = ("dataset", "ablation", "model", "engine", "sampling", "experiment", "debug")


def check_group_choices(argv: list[str]) -> None:
    """Unknown `dataset=...`/`ablation=...` choices: one line with the choices, exit 2.

    Hydra would also refuse them, but with exit code 1 like any other failure.
    """
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # leave syntax errors to Hydra's own message
        return
    for override in parsed:
        group = override.key_or_group
        if group not in CHOICE_GROUPS or override.is_sweep_override() or override.is_delete():
            continue
        value = override.value()
        choices = group_choices(group)
        if isinstance(value, str) and value not in choices:
            print(f"error: unknown {group} '{value}'; choices: {', '.join(choices)}", file=sys.stderr)
            sys.exit(2)


def check_argv_or_exit(argv: Sequence[str], config_name: str = "config") -> None:
    """Before hydra.main: every job the command line asks for composes and checks, or one line
    and exit 2 (Hydra would print a traceback and exit 1, or the job would fail after start-up)."""
    check_group_choices(list(argv))
    try:
        check_command_line(argv, config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


Outcome = tuple[int, str]  # exit code and, for a failure, its one line


def outcome_of(action: Callable[[], object], run_dir: Path | None = None) -> Outcome:
    """Run `action`; every expected failure becomes one log line, an exit code and a reason."""
    try:
        action()
    except JobsFailed as err:  # each job was named as it failed; the worst code over them
        log.error("%s", err)
        return max(code_of(e) for _, e in err.failures), str(err)
    except (ConfigError, InputError, RunMismatch, RunLocked, SkippedItemsError) as err:
        log.error("%s", err)
        return code_of(err), str(err)
    except Interrupted as err:
        log.error("%s: finished users are kept on disk; run the same command again to resume", err)
        return 128 + err.signum, str(err)
    except Exception as err:  # disk full, unwritable folder, dead engine: one line, resumable
        if (stopped := as_run_stopped(err, run_dir)) is None:
            raise
        log.error("%s", stopped)
        return EXIT_STOPPED, str(stopped)
    return 0, ""


def code_of(err: BaseException) -> int:
    """A job's failure as an exit code (docs/exit-codes.md): 3 for skipped items, 2 for its data,
    config or folder, 75 for a fault it resumes from, 1 for anything else (a bug)."""
    if isinstance(err, SkippedItemsError):
        return 3
    if isinstance(err, (ConfigError, InputError, RunMismatch, RunLocked)):
        return 2
    return EXIT_STOPPED if as_run_stopped(err) is not None else 1


def exit_code_of(action: Callable[[], object], run_dir: Path | None = None) -> int:
    return outcome_of(action, run_dir)[0]


def run_outcome(cfg: DictConfig, start_engine: StartEngine = start_job_engine,
                shard: tuple[int, int] | None = None, merge: bool = True) -> Outcome:
    """Check the config, run this shard of the job(s), and say where the output went."""
    def action() -> None:
        if sweep.in_multirun():  # each job of a sweep is checked again, on its own config
            check_config(cfg, dict(HydraConfig.get().runtime.choices),
                         HydraConfig.get().job.config_name or "config")
        for output_dir in run_jobs(prepare_jobs(cfg, shard), start_engine, merge):
            print(f"output: {output_dir}")

    return outcome_of(action, Path(absolute(str(cfg.output_dir))))


@dataclass(frozen=True)
class ShardOutcome:
    """A shard's run of the command's jobs (a torchrun rank's, a replica's), left unmerged."""

    code: int
    reason: str
    jobs: tuple[Job, ...]  # every job of the command (none if they could not be prepared)
    failed: frozenset[Path]  # the folders of the jobs that failed in this shard
    # Folders an earlier run finished where this shard had nothing left to do.
    idle: frozenset[Path] = frozenset()


def shard_outcome(cfg: DictConfig, shard: tuple[int, int] | None = None,
                  start_engine: StartEngine = start_job_engine) -> ShardOutcome:
    """Run this shard of every job without merging; which jobs failed here and which it found
    finished (the merging process finishes the jobs no shard failed and some shard served)."""
    jobs: list[Job] = []
    results = JobResults()

    def action() -> None:
        jobs.extend(prepare_jobs(cfg, shard))
        try:
            done = run_command_jobs(jobs, start_engine, merge=False)
        except BaseException:
            results.failures.extend((job, RuntimeError("stopped")) for job in jobs)
            raise
        results.failures.extend(done.failures)
        results.idle.update(done.idle)
        if done.failures:
            raise JobsFailed(done.failures, len(jobs))

    code, reason = outcome_of(action, Path(absolute(str(cfg.output_dir))))
    return ShardOutcome(code, reason, tuple(jobs),
                        frozenset(job.output_dir for job, _ in results.failures),
                        frozenset(results.idle))


def finish_outcome(jobs: Sequence[Job]) -> Outcome:
    """Merge, score and report each job whose shards all ran; the worst code over them."""
    failures = finish_jobs(jobs)
    if not failures:
        return 0, ""
    err = JobsFailed(failures, len(jobs))
    return max(code_of(e) for _, e in failures), str(err)


def run_cli(cfg: DictConfig, start_engine: StartEngine = start_job_engine,
            shard: tuple[int, int] | None = None, merge: bool = True) -> int:
    return run_outcome(cfg, start_engine, shard, merge)[0]


def finish_task(task: Callable[[], Outcome]) -> int:
    """The end of a Hydra task function: a single run exits with its code; a sweep's job records
    its failure and returns, so that Hydra starts the next job (the sweep exits at its end)."""
    if not sweep.in_multirun():
        code, _ = task()
        if code:
            sys.exit(code)
        return 0
    try:
        code, reason = task()
    except Exception as err:  # noqa: BLE001 - one job's crash must not end the sweep
        log.exception("job failed")
        code, reason = 1, f"{type(err).__name__}: {err}"
    if code:
        sweep.record_failure(code, reason)
    return code

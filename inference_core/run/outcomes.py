"""What each job of a command came to: its failure, named in one line with its folder, or a folder
an earlier run already finished. One job's failure (its data, folder, prompts, merge, metrics or
report) stops that job alone; a stop signal or the shared engine's failure stops them all."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from inference_core.data.loader import InputError
from inference_core.errors import ConfigError
from inference_core.run.finish import SkippedItemsError, skipped_message
from inference_core.run.job import Job
from inference_core.run.signals import Interrupted
from inference_core.rundir.faults import as_run_stopped
from inference_core.rundir.layout import SUMMARY_FILE
from inference_core.rundir.lock import RunLocked
from inference_core.rundir.resume import RunMismatch, looks_finished
from inference_core.rundir.writers import read_json

log = logging.getLogger(__name__)

# A job's expected faults: their message says all (one line, no traceback).
JOB_FAULTS = (InputError, ConfigError, RunMismatch, RunLocked, SkippedItemsError)
Failures = list[tuple[Job, BaseException]]


class JobsFailed(RuntimeError):
    """Some jobs of a many-job command failed (each named); the others ran to their end."""

    def __init__(self, failures: Sequence[tuple[Job, BaseException]], total: int) -> None:
        self.failures = list(failures)
        super().__init__(f"{len(failures)} of {total} jobs failed: " + "; ".join(
            f"{job.output_dir}: {describe_failure(err)}" for job, err in failures))


@dataclass
class JobResults:
    """One shard's run of a command's jobs: each failure, and the folders it found finished
    by an earlier run (left as they were)."""

    failures: Failures = field(default_factory=list)
    idle: set[Path] = field(default_factory=set)
    # A dry run's prompts files.
    written: list[Path] = field(default_factory=list)


def describe_failure(err: BaseException) -> str:
    """An expected fault says all in its message; anything else is named by its type too."""
    return str(err) if isinstance(err, JOB_FAULTS) else f"{type(err).__name__}: {err}"


def attempt(job: Job, failures: Failures, action: Callable[[], Any]) -> bool:
    """Run one job's step; any failure of that job alone is noted (and named) and False
    returned. A stop signal stops every job."""
    try:
        action()
        return True
    except Interrupted:
        raise
    except Exception as err:  # noqa: BLE001 - one job's failure must not stop the others
        note_failure(job, err, failures)
        return False


def note_failure(job: Job, err: BaseException, failures: Failures) -> None:
    """One line naming the job's folder; a failure nobody expected also leaves its traceback
    in the log."""
    expected = isinstance(err, JOB_FAULTS) or as_run_stopped(err, job.output_dir) is not None
    log.error("%s: %s", job.output_dir, describe_failure(err), exc_info=None if expected else err)
    failures.append((job, err))


def completed_summary(job: Job) -> dict[str, Any] | None:
    """The summary of this run's folder once merged and through every after-run stage the job
    asks for (finish records them last); None while anything is left."""
    if not looks_finished(job.output_dir, job.identity(), job.shard_count, job.overwrite):
        return None
    try:
        summary = read_json(job.output_dir / SUMMARY_FILE)
    except (OSError, ValueError):
        return None
    wanted = {"merge", *(["metrics"] if job.evaluate else []), *(["report"] if job.report else [])}
    return summary if wanted <= set(summary.get("after_run_seconds") or {}) else None


def settle_finished(job: Job, summary: dict[str, Any], failures: Failures) -> None:
    """A folder an earlier run finished, with nothing left to generate: left as it is, its
    skipped items still failing it as they did then."""
    if summary.get("skipped_items") and not job.allow_skips:
        note_failure(job, SkippedItemsError(
            skipped_message(len(summary["skipped_items"]), job.output_dir)), failures)
    else:
        log.info("%s is finished: nothing to do (overwrite=true starts it afresh)",
                 job.output_dir)

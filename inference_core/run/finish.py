"""After the last shard: the merged files, then the metrics and the report page."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from inference_core.report.prompt_texts import PromptTexts
from inference_core.run.job import Job
from inference_core.rundir.layout import SUMMARY_FILE, scan_user_files
from inference_core.rundir.merge import merge_run
from inference_core.rundir.writers import write_json_atomic


class SkippedItemsError(RuntimeError):
    """Items were left without generations and allow_skips is off."""


def finish(job: Job, prompts: PromptTexts | None = None, dataset: Any = None,
           known_scores: Any = None) -> dict[str, Any]:
    """Merge every shard's users into the final files, score and report them; refuse silent skips.

    users/ is read once for all three. `prompts`: this session's prompts, decoded as its users
    finished, and `dataset`, the loaded dataset, for the report page (None: it reads
    prompts.jsonl or rebuilds them, and loads the dataset). `known_scores`: the
    evaluation.background.KnownScores computed while the run generated.
    The summary's `after_run_seconds` says what each of these stages took.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    found = scan_user_files(job.output_dir)
    summary = merge_run(job.output_dir, job.shard_count, found)
    seconds["merge"] = time.perf_counter() - start
    if job.evaluate:
        from inference_core.evaluation.scoring import evaluate_run

        start = time.perf_counter()
        evaluate_run(job.output_dir, found.users, known_scores)
        seconds["metrics"] = time.perf_counter() - start
    if job.report:
        start = time.perf_counter()
        write_run_report(job, prompts, dataset, found.users)
        seconds["report"] = time.perf_counter() - start
    summary["after_run_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    write_json_atomic(job.output_dir / SUMMARY_FILE, summary)
    if summary["skipped_items"] and not job.allow_skips:
        raise SkippedItemsError(skipped_message(len(summary["skipped_items"]), job.output_dir))
    return summary


class ReportFailed(RuntimeError):
    """The report page could not be written; the results are on disk."""


def write_run_report(job: Job, prompts: PromptTexts | None, dataset: Any, users: Any) -> None:
    """report.html; a failure fails this job alone (its results stay; a rerun finishes it)."""
    from inference_core.report.page import write_report

    try:
        write_report(job.output_dir, prompts=prompts, dataset=dataset, users=users)
    except Exception as err:  # noqa: BLE001 - named with what still stands
        raise ReportFailed(
            f"report.html could not be written ({type(err).__name__}: {err}); the results are "
            f"on disk: run the same command again, or python -m inference_core.report "
            f"{job.output_dir}") from err


def skipped_message(count: int, output_dir: Path) -> str:
    return (f"{count} items have no generations (reasons in {output_dir / SUMMARY_FILE}); set "
            f"allow_skips=true to accept that")

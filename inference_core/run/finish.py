"""After the last shard: the merged files, then the metrics and the report page."""
from __future__ import annotations

import time
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
        from inference_core.report.page import write_report_safely

        start = time.perf_counter()
        # Logged, never fatal: the results are on disk.
        write_report_safely(job.output_dir, prompts, dataset, found.users)
        seconds["report"] = time.perf_counter() - start
    summary["after_run_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    write_json_atomic(job.output_dir / SUMMARY_FILE, summary)
    if summary["skipped_items"] and not job.allow_skips:
        raise SkippedItemsError(
            f"{len(summary['skipped_items'])} items have no generations (reasons in "
            f"{job.output_dir / 'inference_summary.json'}); set allow_skips=true to accept that")
    return summary

"""After the last shard: the merged files, then the metrics and the report page."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from inference_core.run.job import Job
from inference_core.rundir.merge import merge_run


class SkippedItemsError(RuntimeError):
    """Items were left without generations and allow_skips is off."""


def finish(job: Job, prompts: Mapping[tuple[str, str], Sequence[int]] | None = None,
           dataset: Any = None) -> dict[str, Any]:
    """Merge every shard's users into the final files, score and report them; refuse silent skips.

    `prompts`: the token ids this session built, keyed (user_hash, location key), and `dataset`,
    the loaded dataset, for the report page (None: it reads prompts.jsonl or rebuilds them, and
    loads the dataset).
    """
    summary = merge_run(job.output_dir, job.shard_count)
    if job.evaluate:
        from inference_core.evaluation.scoring import evaluate_run

        evaluate_run(job.output_dir)
    if job.report:
        from inference_core.report.page import write_report_safely

        write_report_safely(job.output_dir, prompts, dataset)  # logged, never fatal: the results are on disk
    if summary["skipped_items"] and not job.allow_skips:
        raise SkippedItemsError(
            f"{len(summary['skipped_items'])} items have no generations (reasons in "
            f"{job.output_dir / 'inference_summary.json'}); set allow_skips=true to accept that")
    return summary

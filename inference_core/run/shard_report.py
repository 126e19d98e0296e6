"""A shard's own figures (shards/<i>-of-<n>.json), session by session; the merge adds them up
across shards and holds them against the user files on disk."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inference_core.data.records import SkippedItem
from inference_core.run.collect import Collector
from inference_core.run.job import Job
from inference_core.rundir.facts import describe_device, throughput, versions
from inference_core.rundir.merge import shard_report_path
from inference_core.rundir.writers import read_json, write_json_atomic

log = logging.getLogger(__name__)


def write_shard_report(job: Job, report: dict[str, Any], collector: Collector, resumed_users: int,
                       skipped: list[SkippedItem], session_id: str | None = None) -> None:
    """The shard's figures, session by session.

    `sessions` lists every session that wrote this report (a resumed run adds its own entry to
    the interrupted ones'), each with its id (the `session` its user files carry), so the merge
    can tell the samples on disk from those a later session replaced. The totals beside it (the
    sum over the sessions) stay for readers of the older report, and throughput is the engine's
    rate over all of them.
    """
    path = shard_report_path(job.output_dir, job.shard_index, job.shard_count)
    complete = collector.complete()
    figures = {
        "users_generated": len({r.prompt.user_hash for r in complete}),
        "samples_generated": len(complete) * job.sampling.num_samples,
        "generated_tokens_this_run": collector.generated_tokens,
        "inference_time_seconds": report.get("inference_time_seconds", 0.0),
        "write_seconds": report.get("write_seconds", 0.0),
    }
    session = {"id": session_id, **rounded(figures), "resumed_users": resumed_users}
    previous = read_previous(path)
    earlier = previous.get("sessions")
    # An older report counted its sessions without listing them: its totals still add up.
    sessions = [*(earlier if isinstance(earlier, list) else []), session]
    total = {k: previous.get(k, 0) + v for k, v in figures.items()}
    if "engine_stats" in report:
        previous = {}  # this session's engine figures replace the earlier ones
    seconds = total["inference_time_seconds"]
    write_json_atomic(path, {
        "shard_index": job.shard_index,
        "shard_count": job.shard_count,
        "world_size": job.shard_count,
        "engine": report.get("engine", job.engine_name),
        "tensor_parallel_size": job.engine_cfg.get("tensor_parallel_size", 1),
        **rounded(total),
        "resumed_users": resumed_users,
        "sessions": sessions,
        "last_session": session,
        "model_load_seconds": round(report.get("model_load_seconds",
                                               previous.get("model_load_seconds", 0.0)), 3),
        "load_data_seconds": round(report["load_data_seconds"], 3),
        "build_prompts_seconds": round(report.get("build_prompts_seconds", 0.0), 3),
        "first_request_seconds": report.get("first_request_seconds"),
        # Waiting, after the last sample, for the user files still queued for the writer
        # (write_seconds is the writer thread's own time, beside the engine loop).
        "write_wait_seconds": round(report.get("write_wait_seconds", 0.0), 3),
        # Waiting, after the last sample, for the scores computed while the run generated.
        "scoring_wait_seconds": round(report.get("scoring_wait_seconds", 0.0), 3),
        "answer_format_misses": collector.flag_totals().get("answer_format_miss", 0),
        "unusable_samples": sum(r.unusable for r in collector.items),
        "throughput_samples_per_sec": throughput(total["samples_generated"], seconds),
        "output_tokens_per_sec": throughput(total["generated_tokens_this_run"], seconds),
        "skipped_items": [s.as_dict() for s in skipped],
        "engine_stats": report.get("engine_stats", previous.get("engine_stats", {})),
        # The engine start that served this session: {id, jobs, load_seconds}; the same id in
        # every folder it served.
        "engine_session": report.get("engine_session", previous.get("engine_session")),
        "device": describe_device(),
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def read_previous(path: Path) -> dict[str, Any]:
    """The report an earlier session of this run left (overwrite=true removes it), or {}."""
    if not path.is_file():
        return {}
    try:
        previous = read_json(path)
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): its earlier sessions are not counted", path, err)
        return {}
    return previous if isinstance(previous, dict) else {}

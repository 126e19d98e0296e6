"""A shard's own figures (shards/<i>-of-<n>.json), which the merge adds up across shards."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from inference_core.data.records import SkippedItem
from inference_core.run.collect import Collector
from inference_core.run.job import Job
from inference_core.rundir.facts import describe_device, throughput, versions
from inference_core.rundir.merge import shard_report_path
from inference_core.rundir.writers import read_json, write_json_atomic


def write_shard_report(job: Job, report: dict[str, Any], collector: Collector, resumed_users: int,
                       skipped: list[SkippedItem]) -> None:
    """Generation figures add up over the sessions that produced the shard's files (a resumed
    run adds to the interrupted one's), so throughput describes the files, not only the last
    session."""
    path = shard_report_path(job.output_dir, job.shard_index, job.shard_count)
    complete = collector.complete()
    session = {
        "users_generated": len({r.prompt.user_hash for r in complete}),
        "samples_generated": len(complete) * job.sampling.num_samples,
        "generated_tokens_this_run": collector.generated_tokens,
        "inference_time_seconds": report.get("inference_time_seconds", 0.0),
        "write_seconds": report.get("write_seconds", 0.0),
        "sessions": 1,
    }
    total, previous = dict(session), {}
    if resumed_users and path.is_file():
        previous = read_json(path)
        total = {k: previous.get(k, 0) + v for k, v in session.items()}
    if "engine_stats" in report:
        previous = {}  # this session's engine figures replace the earlier ones
    seconds = total["inference_time_seconds"]
    write_json_atomic(path, {
        "shard_index": job.shard_index,
        "shard_count": job.shard_count,
        "world_size": job.shard_count,
        "engine": report.get("engine", job.engine_name),
        "tensor_parallel_size": job.engine_cfg.get("tensor_parallel_size", 1),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()},
        "resumed_users": resumed_users,
        "last_session": {**session, "resumed_users": resumed_users},
        "model_load_seconds": round(report.get("model_load_seconds",
                                               previous.get("model_load_seconds", 0.0)), 3),
        "load_data_seconds": round(report["load_data_seconds"], 3),
        "build_prompts_seconds": round(report.get("build_prompts_seconds", 0.0), 3),
        "first_request_seconds": report.get("first_request_seconds"),
        # Waiting, after the last sample, for the scores computed while the run generated.
        "scoring_wait_seconds": round(report.get("scoring_wait_seconds", 0.0), 3),
        "answer_format_misses": collector.flag_totals().get("answer_format_miss", 0),
        "unusable_samples": sum(r.unusable for r in collector.items),
        "throughput_samples_per_sec": throughput(total["samples_generated"], seconds),
        "output_tokens_per_sec": throughput(total["generated_tokens_this_run"], seconds),
        "skipped_items": [s.as_dict() for s in skipped],
        "engine_stats": report.get("engine_stats", previous.get("engine_stats", {})),
        "device": describe_device(),
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })

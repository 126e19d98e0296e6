"""Build the run's test_leaderboard.json and inference_summary.json from what is on disk.

User files are the source of truth: a resumed run, several shards and several torchrun ranks
all end here, so the final files always cover every finished user exactly once.
`python -m inference_core.merge OUTPUT_DIR` runs it by hand.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from inference_core.command import CommandParser
from inference_core.data.files import iter_json_array
from inference_core.model.quantization import quantization_info
from inference_core.data.records import Location
from inference_core.likelihood.summary import MODES_THAT_SCORE, likelihood_summary
from inference_core.rundir.facts import throughput, versions
from inference_core.rundir.layout import (IDENTITY_FILE, LEADERBOARD_FILE, SHARD_REPORT_NAME,
                                          SHARDS_DIR, SUMMARY_FILE, UserFile, UserFiles, UserItem,
                                          log_left_out, scan_user_files, shard_report_path)
from inference_core.rundir.writers import json_array_atomic, read_json, write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["merge_run", "shard_report_path", "shard_reports", "collect_user_files"]


def shard_reports(output_dir: Path, count: int) -> dict[int, dict[str, Any]]:
    """Each finished shard's report; an unreadable one is named and counts as not finished."""
    reports = {}
    for index in range(count):
        path = shard_report_path(output_dir, index, count)
        if path.is_file():
            try:
                reports[index] = read_json(path)
            except (OSError, ValueError) as err:
                log.warning("%s is unreadable (%s): shard %d counts as not finished; running "
                            "that shard again rewrites it", path, err, index)
    return reports


@dataclass(frozen=True)
class OnDisk:
    """The merge's view of users/: every owned item, and the files it left out, with why."""

    items: list[tuple[str, UserItem]]
    left_out: list[dict[str, str]]
    # Items the files record as impossible to build (they count as done for resume).
    unfit: list[dict[str, Any]]
    # Items on disk per session id that wrote them (None: a file without one, from before
    # sessions were recorded); the summary holds them against the shard reports' sessions.
    items_by_session: dict[str | None, int] = field(default_factory=dict)


def collect_user_files(output_dir: Path, test_records: Iterable[Any],
                       found: UserFiles | None = None,
                       put: Callable[[Any], None] | None = None) -> OnDisk:
    """Every generated item on disk, checked against the test file's records; strays and
    damaged files are named and left out, never fatal: a resume regenerates a damaged user.
    `found`: users/ as the caller has already read it. `put`: gets each test record in turn,
    its generated items given their `continuations` (the merge streams them into the
    leaderboard file, so the test file is never parsed whole)."""
    found = scan_user_files(output_dir) if found is None else found
    log_left_out(found)
    left_out = ([{"file": str(p), "why": "not one of this run's user files"} for p in found.strays]
                + [{"file": str(e.path), "why": e.why} for e in found.damaged])
    by_record: dict[int, list[tuple[UserFile, UserItem]]] = {}
    unfit: list[dict[str, Any]] = []
    for user in found.users:
        unfit += user.extra.get("skipped_items", [])
        for item in user.items:
            by_record.setdefault(item.location.record, []).append((user, item))
    items: list[tuple[str, UserItem]] = []
    by_session: dict[str | None, int] = {}
    for r_i, record in enumerate(test_records):
        for user, item in by_record.pop(r_i, ()):
            if fill_item(record, user.key, item):
                items.append((user.key, item))
                by_session[user.session] = by_session.get(user.session, 0) + 1
            else:
                not_owned(output_dir, user, item)
        if put is not None:
            put(record)
    for user, item in (pair for pairs in by_record.values() for pair in pairs):
        not_owned(output_dir, user, item)
    return OnDisk(items, left_out, unfit, by_session)


def fill_item(record: Any, user_hash: str, item: UserItem) -> bool:
    """Give the test record's item its samples, if it is this user's item; False if not. An
    item without samples (a likelihood run's) is left as the test file has it."""
    loc = item.location
    try:
        target = record["task"]["task_behavior_collections"][loc.collection]["data"][loc.item]
    except (IndexError, KeyError, TypeError):
        return False
    if str(record.get("user_hash")) != user_hash or not isinstance(target, dict):
        return False
    if item.generated_samples:
        target["continuations"] = list(item.generated_samples)
    return True


def not_owned(output_dir: Path, user: UserFile, item: UserItem) -> None:
    log.warning("%s: item %s is not this user's item in the test file; ignored",
                output_dir / "users" / user.file, item.location.key())


def merge_run(output_dir: Path, count: int = 1, found: UserFiles | None = None) -> dict[str, Any]:
    """Write the leaderboard and the summary for the whole run; returns the summary.

    `found`: users/ as the caller has read it (scan_user_files), to read it only once."""
    identity = read_json(output_dir / IDENTITY_FILE)
    with json_array_atomic(output_dir / LEADERBOARD_FILE) as put:
        disk = collect_user_files(output_dir, iter_json_array(Path(identity["test_file"])), found,
                                  put)
    reports = shard_reports(output_dir, count)
    summary = build_summary(identity, disk.items, reports, count, output_dir, disk.unfit,
                            disk.items_by_session)
    # Named in the summary too: a file left out here is a user a resume generates again.
    summary["ignored_user_files"] = disk.left_out
    write_json_atomic(output_dir / SUMMARY_FILE, summary)
    log.info("%d samples for %d items of %d users; the recorded sessions generated %d of them "
             "(and %d since replaced) in %.1f s (%.2f samples/s), %d come from sessions that "
             "left no report; output in %s", summary["total_samples"],
             summary["num_data_items"], summary["num_users"], summary["samples_generated"],
             summary["samples_discarded"], summary["inference_time_seconds"],
             summary["throughput_samples_per_sec"], summary["samples_from_unrecorded_sessions"],
             output_dir)
    if "likelihood" in summary:
        scores = summary["likelihood"]
        log.info("likelihood: %d items scored, %d unscored (%s), training loss %s over %d "
                 "target tokens", scores["scored_items"], scores["unscored_items"],
                 scores["unscored_reasons"] or "none", scores["loss"], scores["target_tokens"])
    return summary


def still_skipped(skipped: list[dict[str, Any]], items: list[tuple[str, UserItem]],
                  ) -> dict[str, dict[str, Any]]:
    """Skips once each, leaving out items a later session generated after all."""
    generated = {(user, i.location.key()) for user, i in items}
    out = {}
    for s in skipped:
        loc = s.get("location")
        if loc and (str(s["user_hash"]), Location(**loc).key()) in generated:
            continue
        out[str(loc) + str(s["user_hash"])] = s
    return out


@dataclass(frozen=True)
class SampleAccount:
    """Where the samples come from: the files on disk held against the recorded sessions."""

    generated: int  # on disk, generated by a session that wrote its shard report
    discarded: int  # generated by a recorded session, no longer on disk (replaced or damaged)
    unrecorded: int  # on disk, from a session without a report (killed, or an older version)


def account_samples(reports: list[dict[str, Any]], items_by_session: dict[str | None, int],
                    n: int) -> SampleAccount:
    """generated + unrecorded is every sample on disk; generated + discarded is what the
    recorded sessions' engines produced (an older report lists no sessions: its files count as
    unrecorded)."""
    recorded: dict[str, int] = {}
    for report in reports:
        sessions = report.get("sessions")
        for s in sessions if isinstance(sessions, list) else ():
            if isinstance(s, dict) and isinstance(s.get("id"), str):
                recorded[s["id"]] = recorded.get(s["id"], 0) + int(s.get("samples_generated", 0))
    on_disk = {sid: k * n for sid, k in items_by_session.items()}
    generated = sum(v for sid, v in on_disk.items() if sid in recorded)
    # A session's samples on disk never exceed what it generated, but a hand-edited report may.
    discarded = sum(max(0, made - on_disk.get(sid, 0)) for sid, made in recorded.items())
    return SampleAccount(generated, discarded, sum(on_disk.values()) - generated)


def build_summary(identity: dict[str, Any], items: list[tuple[str, UserItem]],
                  reports: dict[int, dict[str, Any]], count: int, output_dir: Path,
                  unfit: list[dict[str, Any]] = (),
                  items_by_session: dict[str | None, int] | None = None) -> dict[str, Any]:
    mode = identity.get("mode") or "generate"
    # A likelihood run samples nothing: its sampling settings are only the job's defaults.
    n = 0 if mode == "likelihood" else identity["sampling_params"]["num_samples"]
    parts = list(reports.values())
    seconds = max((r["inference_time_seconds"] for r in parts), default=0.0)
    # What the engines produced over the recorded sessions, replaced work included: throughput
    # is the engine's rate, not the files'.
    engine_samples = sum(r["samples_generated"] for r in parts)
    account = account_samples(parts, {None: len(items)} if items_by_session is None
                              else items_by_session, n)
    new_tokens = sum(r["generated_tokens_this_run"] for r in parts)
    skipped = still_skipped([*unfit, *(s for r in parts for s in r["skipped_items"])], items)
    first = parts[0] if parts else {}
    summary = {
        **{k: identity[k] for k in ("checkpoint", "model_name", "dataset", "dataset_path",
                                    "ablation_config", "ablation_parts", "max_model_len",
                                    "sampling_params")},
        # generate (samples), likelihood (every item's figures, no samples) or both.
        "mode": mode,
        # The LoRA adapter applied over `checkpoint` (the base model), if any.
        "adapter": identity.get("adapter"),
        "language": identity.get("language"),
        # "estimated": prompt tokens counted with another tokenizer than the served model's.
        "token_counts": identity.get("token_counts", "exact"),
        # `dataset.scorer`: the task metrics evaluate adds (older runs: text).
        "scorer": identity.get("scorer"),
        # The checkpoint's quantization (method, bits, group size, format); null when unquantized.
        "quantization": quantization_info(identity["checkpoint"]),
        "engine": first.get("engine"),
        "output_dir": str(output_dir),
        "tensor_parallel_size": first.get("tensor_parallel_size", 1),
        "world_size": first.get("world_size", count),
        "num_shards": count,
        "num_users": len({user for user, _ in items}),
        "num_data_items": len(items),
        "num_samples_per_item": n,
        "total_samples": len(items) * n,
        "prompt_tokens": sum(i.prompt_tokens for _, i in items),
        "generated_tokens": sum(sum(i.output_tokens) for _, i in items),
        "truncated_prompts": sum(i.truncated for _, i in items),
        "skipped_items": list(skipped.values()),
        # Samples the output handlers could not use (redrawn) and answers without a closing tag.
        "unusable_samples": sum(r.get("unusable_samples", 0) for r in parts),
        "answer_format_misses": sum((i.extra.get("flags") or {}).get("answer_format_miss", 0)
                                    for _, i in items),
        "resumed_users": sum(r["resumed_users"] for r in parts),
        # Samples on disk generated by a session with a shard report (at most total_samples);
        # those recorded sessions' samples no longer on disk (a resume replaced the file, or it
        # is damaged); and samples on disk from a session that left no report (killed, or
        # written before sessions were recorded). generated + unrecorded = total_samples.
        "samples_generated": account.generated,
        "samples_discarded": account.discarded,
        "samples_from_unrecorded_sessions": account.unrecorded,
        "inference_time_seconds": round(seconds, 3),
        "model_load_seconds": round(max((r["model_load_seconds"] for r in parts), default=0.0), 3),
        # The engine start that served the first shard (each shard's is in `shards`): one start
        # serves every job of a command, and names them.
        "engine_session": first.get("engine_session"),
        "throughput_samples_per_sec": throughput(engine_samples, seconds),
        "output_tokens_per_sec": throughput(new_tokens, seconds),
        # Whether every sample drew from its request's own seed (the same command gives the
        # same samples, resumed or not); false where an engine or endpoint could not take one.
        "per_request_seeds": seeded_per_request(parts),
        "shards": [reports[i] for i in sorted(reports)],
        "versions": first.get("versions") or versions(),
        "device": first.get("device"),
        "timestamp": first.get("finished_at"),
    }
    if mode in MODES_THAT_SCORE:
        summary["likelihood"] = likelihood_summary(items)
    return summary


def seeded_per_request(reports: list[dict[str, Any]]) -> bool | None:
    """False if any shard's engine drew without per-request seeds, True if all said they did,
    None where an engine did not say."""
    said = [(r.get("engine_stats") or {}).get("per_request_seeds") for r in reports]
    if any(v is False for v in said):
        return False
    return True if said and all(v is True for v in said) else None


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser("python -m inference_core.merge", "build a run folder's final files "
                           "(test_leaderboard.json, inference_summary.json) from its users/ and "
                           "shard reports on disk", description=__doc__)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--shards", type=int, default=None,
                        help="shard count (default: read from the shard reports)")
    args = parser.parse_args(argv)
    parser.require_folders([args.output_dir], "run folder")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    count = args.shards or infer_shard_count(args.output_dir)
    missing = [i for i in range(count) if not shard_report_path(args.output_dir, i, count).is_file()]
    if missing:
        log.warning("shards %s of %d have not finished: merging what is on disk", missing, count)
    merge_run(args.output_dir, count)
    return 0


def infer_shard_count(output_dir: Path) -> int:
    counts = {int(m.group(2)) for p in (output_dir / SHARDS_DIR).glob("*.json")
              if (m := SHARD_REPORT_NAME.fullmatch(p.name))}
    if len(counts) > 1:
        raise SystemExit(f"{output_dir / SHARDS_DIR} holds reports for several shard counts "
                         f"{sorted(counts)}: pass --shards")
    return counts.pop() if counts else 1


if __name__ == "__main__":
    sys.exit(main())

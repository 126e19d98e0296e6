"""The whole run: load -> build every prompt -> one engine call -> write as users finish -> merge."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from inference_core.model.adapters import Adapter
from inference_core.run.collect import Collector, ItemResult
from inference_core.data.loader import load_dataset
from inference_core.engine import Engine
from inference_core.run.job import Job
from inference_core.rundir.merge import merge_run, shard_report_path, shard_reports
from inference_core.prompts.builder import Prompt, PromptBuilder, build_prompts
from inference_core.data.records import Dataset, SkippedItem, UserRecord
from inference_core.rundir.resume import claim_output_dir, expected_items, finished_users
from inference_core.run.shards import CHARS_PER_TOKEN, assign_shards
from inference_core.run.signals import stop_on_signals
from inference_core.rundir.facts import describe_device, throughput, versions
from inference_core.rundir.layout import user_file_of, write_user_file as write_run_user_file
from inference_core.rundir.writers import read_json, write_json_atomic

log = logging.getLogger(__name__)


class SkippedItemsError(RuntimeError):
    """Items were left without generations and allow_skips is off."""


@dataclass(frozen=True)
class ShardWork:
    """This shard's prompts, what is already done, and what could not be built."""

    prompts: list[Prompt]
    resumed_users: int
    skipped: list[SkippedItem]
    truncated: int


def load_tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def prompt_builder(job: Job, tokenizer: Any) -> PromptBuilder:
    """The job's prompt builder: its style, ablation, chat template and token budget."""
    return PromptBuilder(tokenizer, job.style, job.ablation,
                         job.max_model_len - job.sampling.max_tokens, job.chat_template_kwargs)


def all_prompts(job: Job) -> list[Prompt]:
    """Every prompt of the job's dataset as a run builds it: no shard, nothing resumed."""
    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    return build_prompts(prompt_builder(job, load_tokenizer(job.model_path)), dataset.users)[0]


def plan_shard(job: Job, dataset: Dataset, tokenizer: Any) -> ShardWork:
    """Keep this shard's users, build their prompts, and drop users already finished on disk."""
    builder = prompt_builder(job, tokenizer)
    users = dataset.users
    if job.shard_count > 1:
        ratio = CHARS_PER_TOKEN.get(job.language, 4.0)
        owner = assign_shards({u.user_hash: builder.estimate_user(u, ratio) for u in users},
                              job.shard_count)
        users = tuple(u for u in users if owner[u.user_hash] == job.shard_index)
    prompts, unfit = build_prompts(builder, users)
    skipped = [SkippedItem(loc, user, why) for user, loc, why in unfit]
    if job.shard_index == 0:  # records without a usable user belong to no shard: report once
        skipped = list(dataset.skipped) + skipped
    done = finished_users(job.output_dir, expected_items(
        (p.user_hash, p.location.key()) for p in prompts), job.sampling.num_samples)
    if done:
        log.info("resuming: %d users already finished in %s", len(done), job.output_dir)
    todo = [p for p in prompts if p.user_hash not in done]
    return ShardWork(todo, len(done), skipped, sum(p.truncated for p in todo))


@dataclass
class JobRun:
    """One job's working state while an engine serves it, possibly beside other jobs."""

    job: Job
    dataset: Dataset
    work: ShardWork
    collector: Collector
    report: dict[str, Any]
    write_seconds: float = 0.0
    last_completion: float = 0.0

    @cached_property
    def users(self) -> dict[str, UserRecord]:
        return {u.user_hash: u for u in self.dataset.users}


StartEngine = Callable[[Job, Sequence[Adapter]], Engine]


def run_job(job: Job, start_engine: StartEngine, merge: bool = True) -> Path:
    """Run this shard of one (dataset, ablation, checkpoint) job; returns the output folder."""
    return run_jobs([job], start_engine, merge)[0]


def run_jobs(jobs: Sequence[Job], start_engine: StartEngine, merge: bool = True) -> list[Path]:
    """Run this shard of each job through one engine (jobs share the base model).

    Every job's requests go into the same engine call, each with its own LoRA adapter, and each
    job writes its own folder exactly as a separate run would.
    """
    tokenizer = load_tokenizer(jobs[0].model_path)
    runs = [open_run(job, tokenizer) for job in jobs]
    todo = [r for r in runs if r.work.prompts]
    if todo:
        adapters = list({r.job.adapter.path: r.job.adapter for r in todo if r.job.adapter}.values())
        engine = start_engine(todo[0].job, adapters)
        try:
            with stop_on_signals():
                for group in same_sampling(todo):
                    generate(engine, group)
            shared = {"engine": engine.name, "model_load_seconds": engine.load_seconds,
                      "engine_stats": engine.stats()}
            if len(todo) > 1:
                shared["engine_stats"]["shared_by_runs"] = [str(r.job.output_dir) for r in todo]
            for r in todo:
                r.report.update(shared)
        finally:
            engine.close()
    refused = []
    for r in runs:  # every folder gets its files, even when one of them has skipped items
        try:
            close_run(r, merge)
        except SkippedItemsError as err:
            refused.append(err)
    if refused:
        raise refused[0]
    return [job.output_dir for job in jobs]


def open_run(job: Job, tokenizer: Any) -> JobRun:
    """Claim the folder, load the data, build this shard's prompts."""
    claim_output_dir(job.output_dir, job.identity(), job.overwrite)
    start = time.perf_counter()
    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    if job.holdout:  # the merge fills this derived test file, like any test file
        write_json_atomic(job.test_file, dataset.raw_test)
    loaded = time.perf_counter()
    work = plan_shard(job, dataset, tokenizer)
    built = time.perf_counter()
    log.info("%s: %d users, %d prompts to generate (%d truncated), %d users resumed, %d items "
             "skipped", job.output_dir.name, len(dataset.users), len(work.prompts), work.truncated,
             work.resumed_users, len(work.skipped))
    references = {item.location: item.reference for u in dataset.users for item in u.items}
    collector = Collector(work.prompts, references, job.sampling.num_samples)
    return JobRun(job, dataset, work, collector,
                  {"load_data_seconds": loaded - start, "build_prompts_seconds": built - loaded})


def same_sampling(runs: Sequence[JobRun]) -> list[list[JobRun]]:
    """Runs that can share one engine call (datasets may differ in their stop strings)."""
    groups: dict[tuple[Any, int], list[JobRun]] = {}
    for r in runs:
        groups.setdefault((r.job.sampling, r.job.blank_retries), []).append(r)
    return list(groups.values())


def close_run(run: JobRun, merge: bool) -> None:
    job = run.job
    skipped = run.work.skipped + [
        SkippedItem(r.prompt.location, r.prompt.user_hash,
                    f"blank samples after {job.blank_retries} retries")
        for r in run.collector.incomplete()]
    write_shard_report(job, run.report, run.collector, run.work, skipped)
    if merge and len(shard_reports(job.output_dir, job.shard_count)) == job.shard_count:
        finish(job)


def finish(job: Job) -> dict[str, Any]:
    """Merge every shard's users into the final files; refuse silent skips."""
    summary = merge_run(job.output_dir, job.shard_count)
    if job.evaluate:
        from inference_core.evaluation.scoring import evaluate_run

        evaluate_run(job.output_dir)
    if job.report:
        from inference_core.report.page import write_report_safely

        write_report_safely(job.output_dir)  # logged, never fatal: the results are on disk
    if summary["skipped_items"] and not job.allow_skips:
        raise SkippedItemsError(
            f"{len(summary['skipped_items'])} items have no generations (reasons in "
            f"{job.output_dir / 'inference_summary.json'}); set allow_skips=true to accept that")
    return summary


def generate(engine: Engine, runs: Sequence[JobRun]) -> None:
    """Every request of every run at once; each user written the moment their last item finishes.

    A run's inference time ends at its own last completion: in a shared call that is the wall
    time this run needed, the other runs' work included.
    """
    sampling, retries = runs[0].job.sampling, runs[0].job.blank_retries
    start = time.perf_counter()
    for r in runs:
        r.last_completion = start
    total = sum(len(r.collector.items) for r in runs) * sampling.num_samples
    with tqdm(total=total, desc="samples", unit="sample", dynamic_ncols=True) as bar:
        for round_ in range(retries + 1):
            requests = [replace(req, request_id=f"{i}/{req.request_id}",
                                adapter=str(r.job.adapter.path) if r.job.adapter else None)
                        for i, r in enumerate(runs) for req in r.collector.requests()]
            if not requests:
                break
            if round_:
                log.warning("round %d: %d items had blank samples; drawing them again",
                            round_, len(requests))
            for completion in engine.generate(requests, sampling):
                index, _, own_id = completion.request_id.partition("/")
                run = runs[int(index)]
                kept, done_user = run.collector.add(replace(completion, request_id=own_id))
                bar.update(kept)
                run.last_completion = time.perf_counter()
                if done_user is not None:
                    write_finished_user(run, done_user)
    for run in runs:
        # A user with an item that never got all its samples keeps the finished items on disk.
        for user, open_count in run.collector.open_items.items():
            if open_count:
                write_user_file(run.job, run.users[user],
                                [r for r in run.collector.user_items(user) if r.full])
        run.report.update(inference_time_seconds=run.last_completion - start,
                          write_seconds=run.write_seconds)


def write_finished_user(run: JobRun, user_hash: str) -> None:
    start = time.perf_counter()
    write_user_file(run.job, run.users[user_hash], run.collector.user_items(user_hash))
    run.write_seconds += time.perf_counter() - start


def write_user_file(job: Job, user: UserRecord, items: list[ItemResult]) -> None:
    write_run_user_file(job.output_dir, user_file_of(
        user.user_hash, user.name, job.dataset_name, job.ablation.name, job.model_name,
        [r.as_dict() for r in items]))


def write_shard_report(job: Job, report: dict[str, Any], collector: Collector, work: ShardWork,
                       skipped: list[SkippedItem]) -> None:
    """This shard's own figures; the merge adds them up across shards.

    Generation figures add up over the sessions that produced the shard's files (a resumed run
    adds to the interrupted one's), so throughput describes the files, not only the last session.
    """
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
    if work.resumed_users and path.is_file():
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
        "resumed_users": work.resumed_users,
        "last_session": {**session, "resumed_users": work.resumed_users},
        "model_load_seconds": round(report.get("model_load_seconds",
                                               previous.get("model_load_seconds", 0.0)), 3),
        "load_data_seconds": round(report["load_data_seconds"], 3),
        "build_prompts_seconds": round(report["build_prompts_seconds"], 3),
        "throughput_samples_per_sec": throughput(total["samples_generated"], seconds),
        "output_tokens_per_sec": throughput(total["generated_tokens_this_run"], seconds),
        "skipped_items": [s.as_dict() for s in skipped],
        "engine_stats": report.get("engine_stats", previous.get("engine_stats", {})),
        "device": describe_device(),
        "versions": versions(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })

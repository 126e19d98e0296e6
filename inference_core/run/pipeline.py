"""The whole run: load -> resume check -> prompts built while the engine loads and generates ->
each user written as they finish -> merge.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from inference_core.data.history import PackedHistory
from inference_core.data.loader import load_dataset
from inference_core.data.records import Dataset, SkippedItem, UserRecord
from inference_core.engine import Engine, GenerationRequest, start_engine
from inference_core.model.adapters import Adapter
from inference_core.outputs.registry import make_output_handler
from inference_core.prompts.builder import Prompt
from inference_core.report.prompt_texts import PAGE_PROMPT_CHARS, PromptTexts
from inference_core.run.collect import Collector
from inference_core.run.feed import RequestFeed
from inference_core.run.finish import SkippedItemsError, finish
from inference_core.run.job import Job
from inference_core.run.prompting import BuildTask, PromptThread, prompt_builder
from inference_core.run.reaper import engine_reaper
from inference_core.run.shard_report import write_shard_report
from inference_core.run.shards import CHARS_PER_TOKEN, assign_shards
from inference_core.run.signals import stop_on_signals
from inference_core.run.job_run import JobRun, collect_scores, start_scoring
from inference_core.run.memory import return_free_memory
from inference_core.run.writer import UserFileWriter
from inference_core.rundir.lock import hold_run_lock
from inference_core.rundir.merge import shard_reports
from inference_core.rundir.resume import claim_output_dir, finished_users
from inference_core.rundir.writers import write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["SkippedItemsError", "StartEngine", "run_job", "run_jobs", "finish"]

StartEngine = Callable[[Job, Sequence[Adapter]], Engine]


def start_job_engine(job: Job, adapters: Sequence[Adapter] = ()) -> Engine:
    """The engine the job's config names (`_target_` in conf/engine/<name>.yaml)."""
    return start_engine(job.engine_cfg, str(job.model_path), job.sampling.seed, adapters)


def run_job(job: Job, start: StartEngine = start_job_engine, merge: bool = True) -> Path:
    """Run this shard of one (dataset, ablation, checkpoint) job; returns the output folder."""
    return run_jobs([job], start, merge)[0]


def run_jobs(jobs: Sequence[Job], start: StartEngine = start_job_engine,
             merge: bool = True) -> list[Path]:
    """Run this shard of each job through one engine (jobs share the base model).

    Every job's requests go into the same engine call, each with its own LoRA adapter, and each
    job writes its own folder exactly as a separate run would.
    """
    from inference_core.run.prompting import load_tokenizer, write_prompts_file

    tokenizer = load_tokenizer(jobs[0].model_path)
    if jobs[0].dry_run:
        return [write_prompts_file(job, tokenizer) for job in jobs]
    with ExitStack() as held:  # one run per folder (per shard): a second command is refused
        for job in jobs:
            held.enter_context(hold_run_lock(job.output_dir, job.shard_index, job.shard_count))
        runs = [open_run(job, tokenizer) for job in jobs]
        todo = [r for r in runs if r.users]
        if todo:
            with engine_reaper():  # engine processes die with this one, whatever kills it
                with ExitStack() as scoring:
                    for r in todo:
                        start_scoring(r, merge, scoring)
                    serve(todo, tokenizer, start)
                    for r in todo:
                        collect_scores(r)
            return_free_memory()  # before the merge, metrics and report allocate theirs
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
    """Load the data, then claim the folder, then find this shard's users not yet finished.

    The folder is claimed only once its data has loaded: a run that fails on bad input leaves
    nothing that would refuse the fixed command.
    """
    start = time.perf_counter()
    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    claim_output_dir(job.output_dir, job.identity(), job.overwrite)
    if dataset.derived_test is not None:  # the merge fills this file, like any test file
        write_json_atomic(job.test_file, dataset.derived_test)
        dataset = replace(dataset, derived_test=None)
    users = shard_users(job, dataset, tokenizer)
    expected = {u.user_hash: {i.location.key() for i in u.items} for u in users}
    done = finished_users(job.output_dir, expected, job.sampling.num_samples)
    if done:
        log.info("resuming: %d users already finished in %s", len(done), job.output_dir)
    todo = [u for u in users if u.user_hash not in done]
    log.info("%s: %d users, %d to generate (%d items), %d resumed, %d records skipped",
             job.output_dir.name, len(dataset.users), len(todo), sum(len(u.items) for u in todo),
             len(done), len(dataset.skipped))
    collector = Collector(job.sampling.num_samples, job.sampling.seed,
                          make_output_handler(job.output_handlers, job.output_handler_options))
    prompt_texts = PromptTexts(tokenizer, PAGE_PROMPT_CHARS, own_copy=True) if job.report else None
    return JobRun(job, dataset, todo, len(done), collector,
                  {"load_data_seconds": time.perf_counter() - start}, prompt_texts=prompt_texts)


def shard_users(job: Job, dataset: Dataset, tokenizer: Any) -> list[UserRecord]:
    """This shard's users, split by a cheap token estimate before anything is built."""
    if job.shard_count == 1:
        return list(dataset.users)
    builder = prompt_builder(job, tokenizer)
    ratio = CHARS_PER_TOKEN.get(job.language, 4.0)
    owner = assign_shards({u.user_hash: builder.estimate_user(u, ratio) for u in dataset.users},
                          job.shard_count)
    return [u for u in dataset.users if owner[u.user_hash] == job.shard_index]


def same_sampling(runs: Sequence[JobRun]) -> list[list[JobRun]]:
    """Runs that can share one engine call (datasets may differ in their stop strings)."""
    groups: dict[tuple[Any, int], list[JobRun]] = {}
    for r in runs:
        groups.setdefault((r.job.sampling, r.job.blank_retries), []).append(r)
    return list(groups.values())


def serve(runs: Sequence[JobRun], tokenizer: Any, start: StartEngine) -> None:
    """Build prompts in a thread while the engine loads and generates; one engine for all runs."""
    groups = [(group, RequestFeed()) for group in same_sampling(runs)]
    index = {id(r): i for i, r in enumerate(runs)}
    writer = UserFileWriter()
    for r in runs:
        r.writer = writer
    builder = PromptThread([([build_task(r, index[id(r)], tokenizer) for r in group], feed)
                            for group, feed in groups], runs[0].job.prompt_workers)
    began = time.perf_counter()
    builder.start()
    adapters = list({r.job.adapter.path: r.job.adapter for r in runs if r.job.adapter}.values())
    engine = None
    try:
        engine = start(runs[0].job, adapters)  # loads while the first prompts are built
        with stop_on_signals():
            for group, feed in groups:
                generate(engine, group, index, feed)
        shared = {"engine": engine.name, "model_load_seconds": engine.load_seconds,
                  "engine_stats": engine.stats()}
        if len(runs) > 1:
            shared["engine_stats"]["shared_by_runs"] = [str(r.job.output_dir) for r in runs]
        for r in runs:
            r.report.update(shared)
    finally:
        builder.stopped.set()
        try:  # every file handed over is written, however the run ends
            waited = writer.close()
            for r in runs:
                r.report.update(write_seconds=r.write_seconds, write_wait_seconds=waited)
        finally:
            for r in runs:  # and durable
                r.sync.sync()
            if engine is not None:
                engine.close()
    builder.join(timeout=60)
    for r in runs:
        r.report["build_prompts_seconds"] = r.tally.seconds
        r.report["prompts_ready_seconds"] = (builder.finished_at or time.perf_counter()) - began


def build_task(run: JobRun, index: int, tokenizer: Any) -> BuildTask:
    """How one run's users become requests: registered in its collector, tagged with the run."""
    adapter = str(run.job.adapter.path) if run.job.adapter else None

    def register(user: UserRecord, prompts: list[Prompt], unfit: list[SkippedItem],
                 ) -> list[GenerationRequest]:
        if isinstance(user.history, PackedHistory):  # built: the run needs it no more
            user.history.release()
        if unfit:
            run.unfit[user.user_hash] = unfit
        if not prompts:  # nothing of this user can be generated: their file says so
            run.write_user(user.user_hash, [])
            return []
        return [replace(req, request_id=f"{index}/{req.request_id}", adapter=adapter)
                for req in run.collector.add_user(prompts, run.tests)]

    return BuildTask(run.users, prompt_builder(run.job, tokenizer), register, run.tally)


def generate(engine: Engine, group: Sequence[JobRun], index: dict[int, int],
             feed: RequestFeed) -> None:
    """Round 0 streams from the builder; later rounds redraw the samples handlers refused.

    A run's inference time ends at its own last completion: in a shared call that is the wall
    time this run needed, the other runs' work included.
    """
    sampling, retries = group[0].job.sampling, group[0].job.blank_retries
    by_index = {index[id(r)]: r for r in group}
    start = time.perf_counter()
    for r in group:
        r.last_completion = start
    total = sum(len(r.tests) for r in group) * sampling.num_samples
    with tqdm(total=total, desc="samples", unit="sample", dynamic_ncols=True) as bar:
        requests: Any = feed
        for round_ in range(retries + 1):
            if round_:
                requests = [replace(req, request_id=f"{index[id(r)]}/{req.request_id}",
                                    adapter=str(r.job.adapter.path) if r.job.adapter else None)
                            for r in group for req in r.collector.redraws(round_)]
                if not requests:
                    break
                log.warning("round %d: %d items had blank or unusable samples; drawing them "
                            "again", round_, len(requests))
            for completion in engine.generate(requests, sampling):
                note_first_request(group, start)
                number, _, own_id = completion.request_id.partition("/")
                run = by_index[int(number)]
                kept, done_user = run.collector.add(replace(completion, request_id=own_id))
                bar.update(kept)
                run.last_completion = time.perf_counter()
                if done_user is not None:
                    run.write_user(done_user, run.collector.user_items(done_user), score=True)
    for run in group:
        # A user with an item that never got all its samples keeps the finished items on disk.
        for user, open_count in run.collector.open_items.items():
            if open_count:
                run.write_user(user, [r for r in run.collector.user_items(user) if r.full])
        run.report["inference_time_seconds"] = run.last_completion - start


def note_first_request(group: Sequence[JobRun], start: float) -> None:
    for r in group:
        r.report.setdefault("first_request_seconds", round(time.perf_counter() - start, 3))


def close_run(run: JobRun, merge: bool) -> None:
    job = run.job
    skipped = [s for unfit in run.unfit.values() for s in unfit] + [
        SkippedItem(r.prompt.location, run.user(r.prompt.user_hash).id_value,
                    r.error or f"blank or unusable samples after {job.blank_retries} retries")
        for r in run.collector.incomplete()]
    if job.shard_index == 0:  # records without a usable user belong to no shard: report once
        skipped = list(run.dataset.skipped) + skipped
    write_shard_report(job, run.report, run.collector, run.resumed_users, skipped, run.session)
    if merge and len(shard_reports(job.output_dir, job.shard_count)) == job.shard_count:
        finish(job, run.prompt_texts, run.dataset, run.known_scores)

"""The whole run of one command's jobs: the engine starts loading at once; meanwhile each dataset
loads once and each job finds its unfinished users; prompts are built while the engine loads and
generates; each user is written to its job's folder as it finishes; each folder is merged.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from inference_core.data.loader import load_dataset
from inference_core.data.records import Dataset, SkippedItem, UserRecord
from inference_core.engine import Engine, start_engine
from inference_core.model.adapters import Adapter
from inference_core.errors import ConfigError
from inference_core.outputs.answer_sets import answer_set
from inference_core.outputs.registry import make_output_handler
from inference_core.report.prompt_texts import PAGE_PROMPT_CHARS, PromptTexts
from inference_core.run.collect import Collector
from inference_core.run.engine_launch import EngineLaunch, StartEngine
from inference_core.run.finish import SkippedItemsError, finish
from inference_core.run.job import Job
from inference_core.run.job_run import JobRun, collect_scores, start_scoring
from inference_core.run.memory import return_free_memory
from inference_core.run.outcomes import (JobResults, JobsFailed, attempt, completed_summary,
                                         note_failure, settle_finished)
from inference_core.run.prompting import prompt_builder
from inference_core.run.reaper import engine_reaper, reap_now
from inference_core.run.serve import serve
from inference_core.run.shard_report import write_shard_report
from inference_core.run.shards import CHARS_PER_TOKEN, assign_shards
from inference_core.run.signals import Interrupted
from inference_core.rundir.lock import hold_run_lock
from inference_core.rundir.merge import shard_reports
from inference_core.rundir.resume import check_output_dir, finished_users, looks_finished

log = logging.getLogger(__name__)

__all__ = ["JobResults", "JobsFailed", "SkippedItemsError", "StartEngine", "run_job", "run_jobs",
           "run_command_jobs", "finish", "finish_jobs"]

def start_job_engine(job: Job, adapters: Sequence[Adapter] = ()) -> Engine:
    """The engine the job's config names (`_target_` in conf/engine/<name>.yaml)."""
    return start_engine(job.engine_cfg, str(job.model_path), job.sampling.seed, adapters)


def run_job(job: Job, start: StartEngine = start_job_engine, merge: bool = True) -> Path:
    """Run this shard of one (dataset, ablation, checkpoint) job; returns the output folder."""
    return run_jobs([job], start, merge)[0]


def run_jobs(jobs: Sequence[Job], start: StartEngine = start_job_engine,
             merge: bool = True) -> list[Path]:
    """Run this shard of every job through one engine start (the jobs share the base model).

    Every job writes its own folder exactly as a separate run would. A job that fails is named
    and the others go on; a single job's failure is raised as it is.
    """
    results = run_command_jobs(jobs, start, merge)
    if results.failures:
        if len(jobs) == 1:
            raise results.failures[0][1]
        raise JobsFailed(results.failures, len(jobs))
    return results.written or [job.output_dir for job in jobs]


def run_command_jobs(jobs: Sequence[Job], start: StartEngine = start_job_engine,
                     merge: bool = True) -> JobResults:
    """run_jobs' work: each job's failure, and the jobs this shard found finished already."""
    from inference_core.run.prompting import load_tokenizer, write_prompts_file

    results = JobResults()
    tokenizer = load_tokenizer(jobs[0].model_path)
    if jobs[0].dry_run:
        results.written = [write_prompts_file(job, tokenizer) for job in jobs]
        return results
    failures = results.failures
    with ExitStack() as held:  # one run per folder (per shard): a second command is refused
        live = [job for job in jobs if attempt(job, failures, lambda job=job: held.enter_context(
            hold_run_lock(job.output_dir, job.shard_index, job.shard_count)))]
        runs = serve_jobs(live, tokenizer, start, merge, failures) if live else []
        for r in runs:  # every folder gets its files, even when one of them has skipped items
            if r.failed is not None:
                note_failure(r.job, r.failed, failures)
            elif r.done_before is not None:
                results.idle.add(r.job.output_dir)
                settle_finished(r.job, r.done_before, failures)
            else:
                attempt(r.job, failures, lambda r=r: close_run(r, merge))
    return results


def finish_jobs(jobs: Sequence[Job]) -> list[tuple[Job, BaseException]]:
    """The merge, metrics and report of jobs whose shards ran elsewhere (torchrun ranks,
    replicas), each on its own: one job's failure is returned, the others still finish."""
    failures: list[tuple[Job, BaseException]] = []
    for job in jobs:
        attempt(job, failures, lambda job=job: finish(job))
    return failures


def serve_jobs(jobs: Sequence[Job], tokenizer: Any, start: StartEngine, merge: bool,
               failures: list[tuple[Job, BaseException]]) -> list[JobRun]:
    """Start the engine (unless every folder looks finished), open the runs beside its start,
    and serve those with users left."""
    with engine_reaper() as watchdog:  # engine processes die with this one, whatever kills it
        launch = None
        if not all(looks_finished(j.output_dir, j.identity(), j.shard_count, j.overwrite)
                   for j in jobs):
            launch = EngineLaunch(start, jobs)
        try:
            runs = open_runs(jobs, tokenizer, failures)
            todo = [r for r in runs if r.users]
            if todo:
                launch = launch or EngineLaunch(start, jobs)
                with ExitStack() as scoring:
                    for r in todo:
                        start_scoring(r, merge, scoring)
                    serve(todo, tokenizer, launch)
                    for r in todo:
                        collect_scores(r)
        finally:
            if launch is not None and launch.starting:  # nothing for it to do, or a failure
                reap_now(watchdog)
            if launch is not None:
                launch.close()
    if launch is not None:
        return_free_memory()  # before the merge, metrics and report allocate theirs
    return runs


def dataset_key(job: Job) -> tuple[Any, ...]:
    return (job.dataset_name, job.dataset_path, job.references_file, job.max_users, job.holdout)


def open_runs(jobs: Sequence[Job], tokenizer: Any,
              failures: list[tuple[Job, BaseException]]) -> list[JobRun]:
    """Each dataset loaded once for all its jobs, then each job's users not yet finished."""
    by_dataset: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        by_dataset.setdefault(dataset_key(job), []).append(job)
    runs: list[JobRun] = []
    for group in by_dataset.values():
        start = time.perf_counter()
        first = group[0]
        try:
            dataset = load_dataset(first.dataset_name, first.dataset_path, first.references_file,
                                   first.max_users, first.holdout)
        except Interrupted:
            raise
        except Exception as err:  # noqa: BLE001 - this dataset's jobs fail, not the others
            for job in group:
                note_failure(job, err, failures)
            continue
        seconds = time.perf_counter() - start
        for job in group:
            attempt(job, failures,
                    lambda job=job: runs.append(open_run(job, dataset, tokenizer, seconds)))
    return runs


def open_run(job: Job, dataset: Dataset, tokenizer: Any, load_seconds: float) -> JobRun:
    """This shard's users not yet finished in the job's folder; the folder is checked (another
    run's is refused) but claimed only once the engine is up (serve), so that a run whose data
    or engine fails to start leaves nothing that would refuse the fixed command."""
    check_output_dir(job.output_dir, job.identity(), job.overwrite)
    if job.scores:
        check_something_to_score(job, dataset)
    users = shard_users(job, dataset, tokenizer)
    expected = {u.user_hash: {i.location.key() for i in u.items} for u in users}
    done = (set() if job.overwrite else
            finished_users(job.output_dir, expected,
                           job.sampling.num_samples if job.generates else 0, job.scores))
    if done:
        log.info("resuming: %d users already finished in %s", len(done), job.output_dir)
    todo = [u for u in users if u.user_hash not in done]
    # Every user finished in a folder an earlier run finished: it is left as it is.
    done_before = completed_summary(job) if not todo else None
    log.info("%s: %d users, %d to generate (%d items), %d resumed, %d records skipped",
             job.output_dir.name, len(dataset.users), len(todo), sum(len(u.items) for u in todo),
             len(done), len(dataset.skipped))
    collector = Collector(job.sampling.num_samples, job.sampling.seed,
                          make_output_handler(job.output_handlers, job.output_handler_options))
    prompt_texts = PromptTexts(tokenizer, PAGE_PROMPT_CHARS, own_copy=True) if job.report else None
    run = JobRun(job, dataset, todo, len(done), collector, {"load_data_seconds": load_seconds},
                 prompt_texts=prompt_texts, done_before=done_before)
    if not todo and done_before is None:  # nothing to generate: the folder is this run's now
        run.claim()
    return run


def check_something_to_score(job: Job, dataset: Dataset) -> None:
    """A likelihood run scores references (and answer options): one line when the data has
    neither, before any engine time is spent on it."""
    items = (i for u in dataset.users for i in u.items)
    if not any(i.reference or answer_set(job.output_handlers, i) for i in items):
        raise ConfigError(
            f"mode={job.mode}: no test item of {job.test_file} has a reference to score (a "
            f"leaderboard file carries none): add dataset.holdout=last (each user's newest "
            f"train item becomes its test item) or dataset.references_file")


def shard_users(job: Job, dataset: Dataset, tokenizer: Any) -> list[UserRecord]:
    """This shard's users, split by a cheap token estimate before anything is built."""
    if job.shard_count == 1:
        return list(dataset.users)
    builder = prompt_builder(job, tokenizer)
    ratio = CHARS_PER_TOKEN.get(job.language, 4.0)
    owner = assign_shards({u.user_hash: builder.estimate_user(u, ratio) for u in dataset.users},
                          job.shard_count)
    return [u for u in dataset.users if owner[u.user_hash] == job.shard_index]


def close_run(run: JobRun, merge: bool) -> None:
    job = run.job
    skipped = [s for unfit in run.unfit.values() for s in unfit] + [
        SkippedItem(r.prompt.location, run.user(r.prompt.user_hash).id_value,
                    r.error or f"blank or unusable samples after {job.blank_retries} retries")
        for r in run.collector.incomplete()]
    if job.shard_index == 0:  # records without a usable user belong to no shard: report once
        skipped = list(run.dataset.skipped) + skipped
    write_shard_report(job, run.report, run.collector, run.resumed_users, skipped, run.session)
    run.collector.clear()  # not needed by what follows; at 100k items ~50 MB
    if merge and len(shard_reports(job.output_dir, job.shard_count)) == job.shard_count:
        finish(job, run.prompt_texts, run.dataset, run.known_scores)

"""One engine serving every job's requests as one stream: prompts built in a thread while the
engine loads and generates, each finished user handed to its job's writer, redraw rounds for the
samples a job's output handler refused."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from inference_core.data.records import Dataset, SkippedItem, UserRecord
from inference_core.engine import (Engine, GenerationRequest, Request, Result, TokenScores,
                                   serve_both)
from inference_core.prompts.builder import Prompt
from inference_core.run.engine_launch import EngineLaunch
from inference_core.run.feed import RequestFeed
from inference_core.run.job_run import JobRun
from inference_core.run.prompting import (BuildPlan, BuildTask, PromptThread, prompt_builder,
                                          score_collector)
from inference_core.rundir.facts import throughput
from inference_core.run.signals import stop_on_signals
from inference_core.run.writer import UserFileWriter

log = logging.getLogger(__name__)


def serve(runs: Sequence[JobRun], tokenizer: Any, launch: EngineLaunch) -> None:
    """Build prompts while the engine loads and generates; claim the folders once it is up."""
    feed = RequestFeed(on_take=lambda taken: note_taken(runs, taken))
    # Held until the folders are claimed: a start that fails writes nothing anywhere.
    writer = UserFileWriter(held=True)
    for r in runs:
        r.writer = writer
    builder = PromptThread(build_plans(runs, tokenizer), feed, runs[0].job.prompt_workers)
    began = time.perf_counter()
    builder.start()
    try:
        engine = launch.wait()
        for r in runs:  # the engine is up: the folders become this run's
            r.claim()
        writer.release()
        with stop_on_signals():
            spent = generate(engine, runs, feed)
        shared = {"engine": engine.name, "model_load_seconds": engine.load_seconds,
                  "engine_stats": engine.stats(),
                  "engine_session": {**launch.session(), **session_figures(runs, spent)}}
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
    builder.join(timeout=60)
    for r in runs:
        r.report["build_prompts_seconds"] = r.tally.seconds
        r.report["prompts_ready_seconds"] = (builder.finished_at or time.perf_counter()) - began


def note_taken(runs: Sequence[JobRun], taken: Sequence[GenerationRequest]) -> None:
    """When the engine took each job's first request: where the job's own span begins."""
    now = time.perf_counter()
    for request in taken:
        run = runs[int(request.request_id.partition("/")[0])]
        if run.first_request is None:
            run.first_request = now


def session_figures(runs: Sequence[JobRun], seconds: float) -> dict[str, Any]:
    """What the engine did for all the jobs together: their samples and tokens over its
    generation time (each job's own figures cover only its own span)."""
    samples = sum(r.samples_kept for r in runs)
    tokens = sum(r.collector.generated_tokens for r in runs)
    return {"inference_time_seconds": round(seconds, 3), "samples_generated": samples,
            "generated_tokens": tokens, "throughput_samples_per_sec": throughput(samples, seconds),
            "output_tokens_per_sec": throughput(tokens, seconds)}


def build_plans(runs: Sequence[JobRun], tokenizer: Any) -> list[BuildPlan]:
    """One plan per loaded dataset: its users in file order, for every job of that dataset."""
    plans: dict[int, tuple[Dataset, list[tuple[int, JobRun]]]] = {}
    for index, r in enumerate(runs):
        plans.setdefault(id(r.dataset.users), (r.dataset, []))[1].append((index, r))
    return [BuildPlan([u for u in dataset.users if any(u.user_hash in r.by_hash for _, r in group)],
                      [build_task(r, index, tokenizer) for index, r in group])
            for dataset, group in plans.values()]


def build_task(run: JobRun, index: int, tokenizer: Any) -> BuildTask:
    """How one run's users become requests: registered in its collectors (generation and
    scoring, as the job does each), tagged with the run."""
    builder = prompt_builder(run.job, tokenizer, keep_text=run.job.scores)
    if run.job.scores:
        run.scores = score_collector(run.job, tokenizer, builder)

    def register(user: UserRecord, prompts: list[Prompt], unfit: list[SkippedItem],
                 ) -> list[Request]:
        if unfit:
            run.unfit[user.user_hash] = unfit
        if not prompts:  # nothing of this user can be generated: their file says so
            run.write_user(user.user_hash, [])
            return []
        requests: list[Request] = []
        if run.job.generates:
            requests += [tagged(r, run, index) for r in run.collector.add_user(prompts, run.tests)]
        if run.scores is not None:
            requests += [replace(r, request_id=f"{index}/{r.request_id}", adapter=adapter_of(run))
                         for r in run.scores.add_user(user, prompts, run.tests)]
            if run.user_complete(user.user_hash):  # nothing of it to score or generate
                run.finish_user(user.user_hash)
        return requests

    def fail(err: BaseException) -> None:
        log.error("%s: %s (this job stops here; the others go on)", run.job.output_dir, err)
        run.failed = err

    return BuildTask(builder, frozenset(run.by_hash), register, run.tally, fail)


def adapter_of(run: JobRun) -> str | None:
    return str(run.job.adapter.path) if run.job.adapter else None


def tagged(request: GenerationRequest, run: JobRun, index: int) -> GenerationRequest:
    """A run's request in the shared stream: its run's number, adapter and sampling."""
    return replace(request, request_id=f"{index}/{request.request_id}", adapter=adapter_of(run),
                   sampling=run.job.sampling)


def generate(engine: Engine, runs: Sequence[JobRun], feed: RequestFeed) -> float:
    """Round 0 streams from the builder; later rounds redraw the samples handlers refused.

    Each job's inference time is its own span, from the engine taking its first request to its
    last completion (in a shared start the other jobs' work overlaps it); returns the
    session's, from the start of generation to the last completion of any job.
    """
    start = time.perf_counter()
    total = sum(len(r.tests) * r.job.sampling.num_samples for r in runs if r.job.generates)
    with tqdm(total=total, desc="samples", unit="sample", dynamic_ncols=True,
              disable=not total) as bar, \
            tqdm(desc="scored", unit="text", dynamic_ncols=True,
                 disable=not any(r.scores for r in runs)) as scored:
        requests: Any = feed
        for round_ in range(max(r.job.blank_retries for r in runs) + 1):
            if round_:
                requests = [tagged(req, r, i) for i, r in enumerate(runs)
                            if round_ <= r.job.blank_retries for req in r.collector.redraws(round_)]
                if not requests:
                    break
                log.warning("round %d: %d items had blank or unusable samples; drawing them "
                            "again", round_, len(requests))
            # Every request carries its run's sampling; the call's own is the first run's.
            for result in engine_results(engine, runs, requests, round_):
                number, _, own_id = result.request_id.partition("/")
                run = runs[int(number)]
                if isinstance(result, TokenScores):
                    done_user = run.scores.add(replace(result, request_id=own_id))
                    scored.update(1)
                else:
                    kept, done_user = run.collector.add(replace(result, request_id=own_id))
                    bar.update(kept)
                    run.samples_kept += kept
                run.last_completion = time.perf_counter()
                if done_user is not None and run.user_complete(done_user):
                    run.finish_user(done_user)
    for run in runs:
        # A user with an item that never got all its samples keeps the finished items on disk.
        for user, open_count in run.collector.open_items.items():
            if open_count:
                run.write_user(user, [r for r in run.collector.user_items(user) if r.full])
        run.report.update(job_span(run, start))
    return max((r.last_completion for r in runs if r.last_completion), default=start) - start


def engine_results(engine: Engine, runs: Sequence[JobRun], requests: Any,
                   round_: int) -> Iterator[Result]:
    """Generation only, as ever, where no job scores; otherwise both verbs over the one stream
    (scoring has no redraw rounds)."""
    sampling = runs[0].job.sampling
    if round_ or not any(r.scores for r in runs):
        return engine.generate(requests, sampling)
    return serve_both(engine, requests, sampling)


def job_span(run: JobRun, start: float) -> dict[str, Any]:
    """The job's own inference time and when, after generation began, its first request went
    in (a request taken from a list, not the feed, counts from the start)."""
    first = run.first_request if run.first_request is not None else start
    return {"inference_time_seconds": max(0.0, (run.last_completion or first) - first),
            "first_request_seconds": round(first - start, 3)}

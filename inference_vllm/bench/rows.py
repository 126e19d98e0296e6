"""The benchmark's rows: each times one way of generating the same prompts."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Iterator, Sequence

from inference_core.engine import (Completion, Engine, GenerationRequest, SamplingSettings,
                                   ScoringRequest, TokenScores, start_engine)
from inference_core.run.job import Job
from inference_core.prompts.builder import Prompt
from inference_core.rundir.facts import throughput

from inference_vllm.engine_metrics import EngineWatch

log = logging.getLogger("inference_vllm.bench")

WARM_UP_TOKENS = 64  # prompt length of each engine's untimed warm-up request


@dataclasses.dataclass
class Row:
    name: str
    wall_seconds: float
    samples: int
    prompt_tokens: int  # prompt tokens submitted: once per request (n copies count n times)
    output_tokens: int
    overhead_seconds: float = 0.0
    engine: str = "vllm"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall_seconds, 3),
            "samples": self.samples,
            "samples_per_sec": round(throughput(self.samples, self.wall_seconds), 4),
            "prompt_tokens_submitted": self.prompt_tokens,
            "prompt_tokens_per_sec": round(throughput(self.prompt_tokens, self.wall_seconds), 2),
            "output_tokens": self.output_tokens,
            "output_tokens_per_sec": round(throughput(self.output_tokens, self.wall_seconds), 2),
            "overhead_seconds": round(self.overhead_seconds, 3),
            "engine": self.engine,
            **self.extra,
        }



class BorrowedEngine:
    """An engine lent to a job that must not close it (one engine serving several jobs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name
        self.load_seconds = engine.load_seconds
        if hasattr(engine, "serve_both"):  # both verbs in one batch: keep it so
            self.serve_both = engine.serve_both

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        return self.engine.generate(requests, sampling)

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        return self.engine.loglikelihood(requests)

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def close(self) -> None:  # the lender closes it
        pass

def vllm_prompts(prompts: Sequence[Prompt], copies: int = 1, salt: str | None = None,
                 ) -> list[dict[str, Any]]:
    """Token-id prompt dicts; with `salt`, each copy gets its own cache_salt (no shared KV)."""
    out = []
    for i, p in enumerate(prompts):
        for k in range(copies):
            d: dict[str, Any] = {"prompt_token_ids": list(p.token_ids)}
            if salt is not None:
                d["cache_salt"] = f"{salt}-{i}-{k}"
            out.append(d)
    return out


def timed_generate(name: str, llm: Any, requests: list[dict[str, Any]], params: Any,
                   extra: dict[str, Any] | None = None) -> Row:
    watch = EngineWatch(llm)
    start = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    wall = time.perf_counter() - start
    samples = sum(len(o.outputs) for o in outputs)
    output_tokens = sum(len(s.token_ids) for o in outputs for s in o.outputs)
    prompt_tokens = sum(len(r["prompt_token_ids"]) for r in requests)
    row = Row(name, wall, samples, prompt_tokens, output_tokens,
              extra={"requests": len(requests), "n_per_request": params.n,
                     "engine_metrics": watch.result(), **(extra or {})})
    log.info("%s: %d samples in %.1f s", name, samples, wall)
    return row


def warm_up_vllm(llm: Any, prompts: Sequence[Prompt], job: Job) -> float:
    """One short request before the rows, so no row pays for first-call set-up; its seconds."""
    from inference_vllm.engine import sampling_params

    params = sampling_params(dataclasses.replace(job.sampling, max_tokens=2), 1)
    start = time.perf_counter()
    llm.generate([{"prompt_token_ids": list(prompts[0].token_ids[:WARM_UP_TOKENS])}], params,
                 use_tqdm=False)
    return time.perf_counter() - start


def raw_engine_row(llm: Any, prompts: Sequence[Prompt], job: Job) -> Row:
    from inference_vllm.engine import sampling_params

    return timed_generate("raw_engine", llm, vllm_prompts(prompts),
                          sampling_params(job.sampling, job.sampling.num_samples))


def seed_style_row(name: str, llm: Any, prompts: Sequence[Prompt], job: Job, salted: bool,
                   extra: dict[str, Any] | None = None) -> Row:
    from inference_vllm.engine import sampling_params

    n = job.sampling.num_samples
    requests = vllm_prompts(prompts, copies=n, salt=f"{name}-{time.time_ns()}" if salted else None)
    return timed_generate(name, llm, requests, sampling_params(job.sampling, 1), extra)


def pipeline_row(name: str, engine: Any, job: Job) -> Row:
    """run_job end to end; generation time and the pipeline's own overhead from its shard report."""
    from inference_core.rundir.merge import SUMMARY_FILE, shard_report_path
    from inference_core.run.pipeline import run_job
    from inference_core.rundir.writers import read_json

    watch = EngineWatch(engine.llm)
    start = time.perf_counter()
    run_job(job, lambda *_: BorrowedEngine(engine))
    end_to_end = time.perf_counter() - start
    report = read_json(shard_report_path(job.output_dir, 0, 1))
    summary = read_json(job.output_dir / SUMMARY_FILE)
    overhead = {k: report[k] for k in ("load_data_seconds", "build_prompts_seconds",
                                       "write_seconds")}
    row = Row(name, report["inference_time_seconds"], report["samples_generated"],
              summary["prompt_tokens"], report["generated_tokens_this_run"],
              overhead_seconds=sum(overhead.values()),
              extra={"overhead": overhead, "end_to_end_seconds": round(end_to_end, 3),
                     "skipped_items": len(summary["skipped_items"]),
                     "output_dir": str(job.output_dir), "engine_metrics": watch.result()})
    log.info("%s: %d samples in %.1f s; %.3f s of it writing user files outside engine.step "
             "while requests waited (%.1f%%)", name, row.samples, row.wall_seconds,
             overhead["write_seconds"], 100 * overhead["write_seconds"] / max(row.wall_seconds, 1e-9))
    return row


def hf_row(hf_cfg: dict[str, Any], job: Job, prompts: Sequence[Prompt],
           ) -> tuple[Row, float, float]:
    """The Transformers engine on the same prompts; (row, load seconds, warm-up seconds)."""
    engine = start_engine(hf_cfg, str(job.model_path), job.sampling.seed)
    try:
        n = job.sampling.num_samples
        # The first generate() sets up the CPU kernels: start-up, not part of the row.
        start = time.perf_counter()
        short = dataclasses.replace(job.sampling, max_tokens=2, min_tokens=1)
        warm = GenerationRequest("warm-up", prompts[0].token_ids[:WARM_UP_TOKENS], n)
        for _ in engine.generate([warm], short):
            pass
        warm_up = time.perf_counter() - start
        requests = [GenerationRequest(str(i), p.token_ids, n) for i, p in enumerate(prompts)]
        samples = output_tokens = 0
        start = time.perf_counter()
        for completion in engine.generate(requests, job.sampling):
            samples += len(completion.texts)
            output_tokens += sum(completion.output_tokens)
        wall = time.perf_counter() - start
        row = Row("hf", wall, samples, sum(p.num_tokens for p in prompts), output_tokens,
                  engine="hf", extra={"requests": len(requests), "n_per_request": n,
                                      "engine_stats": engine.stats()})
    finally:
        engine.close()
    log.info("hf: %d samples in %.1f s", row.samples, row.wall_seconds)
    return row, engine.load_seconds, warm_up

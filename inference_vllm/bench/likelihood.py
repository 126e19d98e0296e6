"""`python -m inference_vllm.bench.likelihood` (`make bench-likelihood`): a job scored against its
references vs the same job generated, through one engine start, on the same prompts.

  likelihood   mode=likelihood: one prefill per item (the reference's trained target after the
               prompt), no decoding
  generate     mode=generate: num_samples continuations per item (the default sampling)
  both         mode=both: both verbs in one running batch (the scores' extra cost)

Each is the real pipeline in this process, one after the other, served by the one engine
(started for both verbs, its prefix cache emptied before each: every mode prefills its own
prompts); each row's time is its job's own inference span. Also, on an answer-set
dataset whose options are one token each, the two ways to score them side by side through the
same engine: one request per option (each its whole trained target), and one request per item
reading the options' next-token log-probabilities at the answer slot.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from inference_core.compose import compose_config
from inference_core.engine import GenerationRequest, ScoringRequest
from inference_core.rundir.facts import describe_device, throughput, versions
from inference_core.rundir.writers import read_json, write_json_atomic
from inference_core.run.job import Job, prepare_job
from inference_core.run.job_list import session_engine_cfg
from inference_core.run.pipeline import run_job, start_job_engine

from inference_vllm.bench.rows import WARM_UP_TOKENS, BorrowedEngine

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.bench.likelihood",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="Chameleons")
    p.add_argument("--options-dataset", default="LovinkQuestionnaire",
                   help="an answer-set dataset for the options comparison ('' skips it)")
    p.add_argument("--num-samples", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=None, help="default: the sampling preset's")
    p.add_argument("--max-users", type=int, default=None, help="first K users only")
    p.add_argument("--model-path", default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--out", default="outputs/bench")
    return p.parse_args(argv)


def job(args: argparse.Namespace, dataset: str, mode: str, root: Path) -> Job:
    model = [f"model.path={Path(args.model_path).resolve()}"] if args.model_path else []
    tokens = [f"sampling.max_tokens={args.max_tokens}"] if args.max_tokens else []
    return prepare_job(compose_config(
        f"dataset={dataset}", "dataset.holdout=last", f"mode={mode}", *model, *tokens,
        f"sampling.num_samples={args.num_samples}", f"output_dir={root}/{dataset}-{mode}",
        f"max_users={args.max_users or 'null'}", "overwrite=true", "evaluate=false",
        "report=false", "allow_skips=true"))


def mode_row(name: str, out: Path) -> dict[str, Any]:
    """Items/s and prompt tokens/s over the job's own inference span (summary)."""
    summary = read_json(out / "inference_summary.json")
    seconds = summary["inference_time_seconds"]
    items, prompt_tokens = summary["num_data_items"], summary["prompt_tokens"]
    return {"mode": name, "items": items, "inference_seconds": seconds,
            "items_per_sec": round(throughput(items, seconds), 3),
            "prompt_tokens": prompt_tokens,
            "prompt_tokens_per_sec": round(throughput(prompt_tokens, seconds), 1),
            "samples": summary["total_samples"], "generated_tokens": summary["generated_tokens"]}


def option_rows(engine: Any, job_: Job) -> list[dict[str, Any]]:
    """An answer-set job's items scored both ways; per item the same options' figures."""
    from inference_core.data.loader import load_dataset
    from inference_core.run.prompting import load_tokenizer, prompt_builder, score_collector

    tokenizer = load_tokenizer(job_.model_path)
    builder = prompt_builder(job_, tokenizer, keep_text=True)
    scores = score_collector(job_, tokenizer, builder)
    dataset = load_dataset(job_.dataset_name, job_.dataset_path, holdout=job_.holdout,
                           max_users=job_.max_users)
    tests = {i.location: i for u in dataset.users for i in u.items}
    per_option, per_item = [], []
    for user in dataset.users:
        prompts = [p for p in builder.build_user(user) if not isinstance(p, tuple)]
        per_option += scores.add_user(user, prompts, tests)
        for item in scores.user_items(user.user_hash).values():
            options = [s for s in item.sequences if s.option is not None]
            if not options:
                continue
            first = [s.token_ids[s.target_start + s.body[0]] for s in options]
            slot = options[0].target_start + options[0].body[0]
            if len(set(first)) == len(first):  # each option one distinct token there
                per_item.append(ScoringRequest(str(len(per_item)), options[0].token_ids[:slot],
                                               slot - 1, next_token_ids=tuple(first)))
    rows = []
    for name, requests in (("one_request_per_option", per_option),
                           ("one_request_per_item_next_token", per_item)):
        start = time.perf_counter()
        done = list(engine.loglikelihood(requests))
        seconds = time.perf_counter() - start
        rows.append({"way": name, "requests": len(done), "seconds": round(seconds, 3),
                     "prompt_tokens": sum(len(r.token_ids) for r in requests),
                     "items_per_sec": round(throughput(len(per_item), seconds), 3)})
    return rows


def warm_up(engine: Any, job_: Job) -> None:
    """One untimed request of each verb: a fresh engine's first steps pay one-time costs (its
    kernels' set-up) that neither row should carry."""
    ids = list(range(1000, 1000 + WARM_UP_TOKENS))
    list(engine.loglikelihood([ScoringRequest("warm", ids, WARM_UP_TOKENS // 2)]))
    list(engine.generate([GenerationRequest("warm", ids, 2)], job_.sampling))


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve()
    root = out / "likelihood_runs"
    modes = {m: job(args, args.dataset, m, root) for m in ("likelihood", "generate", "both")}
    scoring = modes["likelihood"]
    shared = session_engine_cfg(list(modes.values()))
    start = time.perf_counter()
    engine = start_job_engine(dataclasses.replace(scoring, engine_cfg=shared))
    load = time.perf_counter() - start
    try:
        warm_up(engine, scoring)
        lend = BorrowedEngine(engine)
        rows = []
        for name, one in modes.items():
            engine.llm.reset_prefix_cache()  # each mode prefills its own prompts
            rows.append(mode_row(name, run_job(one, lambda j, a: lend)))
        options = (option_rows(engine, job(args, args.options_dataset, "likelihood", root))
                   if args.options_dataset else [])
        stats = engine.stats()
    finally:
        engine.close()
    ratio = rows[0]["items_per_sec"] / rows[1]["items_per_sec"] if rows[1]["items_per_sec"] else None
    extra = rows[2]["inference_seconds"] / rows[1]["inference_seconds"] - 1 if rows[1][
        "inference_seconds"] else None
    result = {"dataset": args.dataset, "engine_load_seconds": round(load, 3), "rows": rows,
              "likelihood_vs_generate_items_per_sec": round(ratio, 2) if ratio else None,
              "both_extra_seconds_over_generate": round(extra, 3) if extra is not None else None,
              "options": options, "scoring_step": stats.get("scoring_step"),
              "workload": vars(args), "device": describe_device(), "versions": versions()}
    write_json_atomic(out / "likelihood.json", result)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"{'mode':<12}{'items':>7}{'seconds':>10}{'items/s':>10}{'prompt tok/s':>14}"
             f"{'samples':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['mode']:<12}{r['items']:>7}{r['inference_seconds']:>10.2f}"
                     f"{r['items_per_sec']:>10.3f}{r['prompt_tokens_per_sec']:>14.1f}"
                     f"{r['samples']:>9}")
    lines.append(f"\n{result['dataset']} (dataset.holdout=last), one engine start: scoring is "
                 f"{result['likelihood_vs_generate_items_per_sec']}x generation's items/s; "
                 f"scoring beside generation (both) took "
                 f"{result['both_extra_seconds_over_generate']:+.0%} of generation's time")
    for o in result["options"]:
        lines.append(f"options, {o['way']}: {o['requests']} requests, {o['seconds']:.2f} s, "
                     f"{o['prompt_tokens']} prompt tokens, {o['items_per_sec']} items/s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(parse_args(argv))
    print(render(result))
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    sys.exit(main())

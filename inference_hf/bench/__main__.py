"""`python -m inference_hf.bench` (`make bench-hf`): the Transformers engine's batch against a bare
`model.generate()` of the same rows, per decode step and per prefill, at two batch widths.

    python -m inference_hf.bench --tiny                      # ~1 min on a 2-core CPU
    python -m inference_hf.bench --shape qwen3-8b --tokenizer-path DIR   # random weights, a GPU
    python -m inference_hf.bench --model-path /ckpt/DMSC_8B

One prompt set (random ordinary token ids; lengths spread +-10% around --prompt-tokens), each
prompt with --num-samples samples under the Chameleons preset (T=0.7, top_p=0.85, top_k=50,
repetition penalty 1.1, stop "\\n"). A width of R rows is R / num_samples prompts, all in one
batch. Per width: a timed run of each (the engine's `generate`, then `model.generate` with
`num_return_sequences`), then a breakdown run of each with the device synchronized around every
forward, sampler call and stop check, then timed runs of the engine with one of its choices
undone (VARIANTS). Writes outputs/bench/hf_steps.json after every width.
Imports neither vLLM nor Hydra: it runs where only torch and transformers are installed.
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from inference_core.engine import GenerationRequest, SamplingSettings
from inference_hf.bench.report import print_table, write_report
from inference_hf.bench.shapes import SHAPES, random_model
from inference_hf.bench.timing import TimedEngine, run_engine, run_generate
from inference_hf.budget import auto_budget, release_memory
from inference_hf.engine import resolve_device, resolve_dtype

log = logging.getLogger("inference_hf.bench")
REPO = Path(__file__).resolve().parents[2]

# The workload (Chameleons on Qwen3-8B): ~1,560-token prompts, 5 samples, 64 new tokens.
FULL = {"prompt_tokens": 1560, "max_tokens": 64, "breakdown_tokens": 16}
# --tiny: a 2-layer random model, short prompts and few tokens, for a CPU in about a minute.
TINY = {"prompt_tokens": 128, "max_tokens": 16, "breakdown_tokens": 6}
# The engine with one of its choices undone (timed runs): what each choice buys on this device.
# name: (engine settings, attention implementation during the run or None)
VARIANTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "engine_dynamic_cache": ({"cache": "dynamic"}, None),
    "engine_sdpa_attention": ({}, "sdpa"),  # Transformers' sdpa: repeat_kv under a padding mask
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference_hf.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--tiny", action="store_true", help="2-layer random model, CPU-sized run")
    model.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape")
    model.add_argument("--model-path", help="a checkpoint (default: the embedded SmolLM2-135M)")
    parser.add_argument("--tokenizer-path", help="tokenizer folder (default: the model's, or the "
                        "embedded SmolLM2's for --tiny/--shape)")
    parser.add_argument("--rows", type=int, nargs="+", default=[40, 200],
                        help="batch widths in rows (prompts x samples)")
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, help="mean prompt length")
    parser.add_argument("--max-tokens", type=int, help="new tokens per sample (timed runs)")
    parser.add_argument("--breakdown-tokens", type=int, help="new tokens in breakdown runs")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every run, the fastest of each kept (a shared CPU: 3)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default torch's); on a CPU shared with other "
                             "jobs 1 is steadier: threads waiting on a descheduled one stall")
    parser.add_argument("--device", help="default: cuda if present, else cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "hf_steps.json")
    args = parser.parse_args(argv)
    preset = TINY if args.tiny else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.tiny:
        args.shape = "tiny"
    args.argv = list(argv)
    return args


def tokenizer_path(args: argparse.Namespace) -> str:
    if args.tokenizer_path:
        return args.tokenizer_path
    if args.model_path:
        return args.model_path
    from inference_core.model.store import ensure_default_model

    return str(ensure_default_model(REPO / ".cache"))


def load(args: argparse.Namespace, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, what the model is) for the run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(args))
    dtype = resolve_dtype(args.dtype, device)
    start = time.perf_counter()
    if args.shape:
        model = random_model(args.shape, len(tokenizer), device, dtype)
        what = {"kind": "random weights", "shape": args.shape}
    else:
        path = args.model_path or tokenizer_path(args)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                     attn_implementation="sdpa").to(device).eval()
        what = {"kind": "checkpoint", "path": path}
    config = model.config
    what.update(
        layers=config.num_hidden_layers, hidden_size=config.hidden_size,
        heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
        intermediate_size=config.intermediate_size, vocab_size=config.vocab_size,
        dtype=str(model.dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in model.parameters()),
        build_s=round(time.perf_counter() - start, 2))
    log.info("model: %s", what)
    return model, tokenizer, what


def prompt_set(tokenizer: Any, count: int, mean: int, num_samples: int,
               seed: int) -> list[GenerationRequest]:
    """`count` prompts of random ordinary tokens, lengths uniform within +-10% of `mean`."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    spread = max(mean // 10, 1)
    return [GenerationRequest(f"p{i}", tuple(rng.choices(ordinary, k=rng.randint(
        max(mean - spread, 2), mean + spread))), num_samples, seed=rng.randrange(2**62))
        for i in range(count)]


def sampling_for(args: argparse.Namespace, max_tokens: int) -> SamplingSettings:
    """The Chameleons preset (conf/sampling/chameleons.yaml, conf/dataset/Chameleons.yaml)."""
    return SamplingSettings(num_samples=args.num_samples, temperature=0.7, top_p=0.85, top_k=50,
                            max_tokens=max_tokens, seed=42, repetition_penalty=1.1, stop=("\n",))


def measure_width(engines: dict[str, TimedEngine], requests: list[GenerationRequest],
                  args: argparse.Namespace) -> dict[str, Any]:
    """Timed and breakdown runs of the engine and bare generate(), timed runs of the variants."""
    rows = len(requests) * args.num_samples
    timed, breakdown = sampling_for(args, args.max_tokens), sampling_for(args, args.breakdown_tokens)
    result: dict[str, Any] = {"rows": rows, "prompts": len(requests),
                              "prompt_width": max(len(r.token_ids) for r in requests)}
    runs = [("timed", "engine", timed), ("timed", "generate", timed),
            ("breakdown", "engine", breakdown), ("breakdown", "generate", breakdown),
            *(("timed", name, timed) for name in VARIANTS)]
    log.info("%d rows: warm-up (this width's shapes, one new token)", rows)
    for name in ("engine", "generate"):  # the variants run the engine's shapes
        measure(engines, name, requests, sampling_for(args, 1), False)
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.repeats):  # rounds of every run: a slow spell hits them all
        for kind, name, sampling in runs:
            log.info("%d rows: %s %s run (%d new tokens, round %d)", rows, name, kind,
                     sampling.max_tokens, round_ + 1)
            figures = measure(engines, name, requests, sampling, kind == "breakdown")
            seen.setdefault((kind, name), []).append(figures)
            log.info("%d rows: %s %s: %s", rows, name, kind, figures)
    for (kind, name), repeats in seen.items():
        result.setdefault(kind, {})[name] = fastest(repeats)
    timed_runs = result["timed"]
    result["engine_vs_generate"] = ratio(timed_runs["engine"], timed_runs["generate"], "step_s")
    result["prefill_engine_vs_generate"] = ratio(timed_runs["engine"], timed_runs["generate"],
                                                 "prefill")
    result["variants_vs_engine"] = {name: ratio(timed_runs[name], timed_runs["engine"], "step_s")
                                    for name in VARIANTS}
    return result


def measure(engines: dict[str, TimedEngine], name: str, requests: list[GenerationRequest],
            sampling: SamplingSettings, per_call: bool) -> dict[str, Any]:
    """One run's figures; a run that fails is recorded as its error and the others still run
    (a node may be lent for one try)."""
    engine = engines.get(name, engines["engine"])
    try:
        with attention(engine.model, VARIANTS.get(name, ({}, None))[1]):
            run = run_generate if name == "generate" else run_engine
            return run(engine, requests, sampling, per_call)
    except Exception as error:  # noqa: BLE001 - recorded in hf_steps.json, logged in full
        log.exception("%s run failed", name)
        return {"error": f"{type(error).__name__}: {error}"[:500]}
    finally:
        release_memory()


def fastest(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the fastest decode step (all its figures, so they add up): on a shared
    machine other work only ever adds time."""
    done = [r for r in repeats if "error" not in r] or repeats[:1]
    return {**min(done, key=lambda r: r.get("step_s", 0.0)), "repeats": len(repeats)}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any], key: str) -> float | None:
    if key not in numerator or not denominator.get(key):
        return None
    return round(numerator[key] / denominator[key], 3)


@contextmanager
def attention(model: Any, name: str | None) -> Iterator[None]:
    """The model on another attention implementation while inside (None: unchanged)."""
    before = model.config._attn_implementation
    if name:
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        if name:
            model.set_attn_implementation(before)


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tokenizer, what = load(args, device)
    engines = {name: TimedEngine.around(model, tokenizer, cfg, seed=args.seed)
               for name, (cfg, _) in {"engine": ({}, None), **VARIANTS}.items()}
    # What max_batch_tokens: auto would give on this device (the runs set their own budget).
    what["auto_budget"] = auto_budget(model, device, args.num_samples).as_dict()
    log.info("max_batch_tokens: auto would be %s", what["auto_budget"])
    widths = sorted(args.rows)
    prompts = prompt_set(tokenizer, max(widths) // args.num_samples, args.prompt_tokens,
                         args.num_samples, args.seed)
    results: dict[str, Any] = {}
    for rows in widths:
        results[str(rows)] = measure_width(engines, prompts[:rows // args.num_samples], args)
        report = write_report(args, device, what, engines["engine"], prompts, results)
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

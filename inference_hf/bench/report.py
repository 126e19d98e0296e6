"""hf_steps.json and the printed table of `python -m inference_hf.bench`."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from typing import Any, Sequence

from inference_core.engine import GenerationRequest
from inference_core.rundir.facts import describe_device, versions

TARGET = 1.25  # the engine's decode step at most this many times bare generate()'s


def device_facts(device: str) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        facts.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     cuda=torch.version.cuda)
    return facts


def write_report(args: argparse.Namespace, device: str, model: dict[str, Any], engine: Any,
                 prompts: Sequence[GenerationRequest],
                 results: dict[str, Any]) -> dict[str, Any]:
    lengths = [len(p.token_ids) for p in prompts]
    engine_rate = {rows: r["timed"]["engine"].get("samples_per_s") for rows, r in results.items()}
    ratios = [r["engine_vs_generate"] for r in results.values()]
    report = {
        "command": " ".join(["python -m inference_hf.bench", *args.argv]),
        "machine": {**describe_device(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "device": device_facts(device),
        "versions": versions(),
        "model": model,
        "engine": {"attention": engine.attention, "stats": engine.stats(),
                   "variants": {"engine_dynamic_cache": "engine.cache=dynamic (Transformers' "
                                "DynamicCache, grown by concatenation)",
                                "engine_sdpa_attention": "Transformers' sdpa attention "
                                "(repeat_kv under a padding mask) instead of the GQA decode one"}},
        "workload": {
            "why": "the issue's Chameleons-like workload (Qwen3-8B, ~1,560-token prompts, 5 "
                   "samples, 64 new tokens); --tiny shortens prompts and outputs for a CPU",
            "prompts": len(prompts), "num_samples": args.num_samples,
            "prompt_tokens": {"mean": round(statistics.mean(lengths), 1), "min": min(lengths),
                              "max": max(lengths), "spread": "uniform, +-10% of the mean",
                              "content": "random ordinary token ids"},
            "max_tokens": args.max_tokens, "breakdown_tokens": args.breakdown_tokens,
            "repeats": f"{args.repeats} round(s) of every run after a one-token warm-up at "
                       f"each width; the fastest decode step of each run kept",
            "sampling": "Chameleons preset: temperature 0.7, top_p 0.85, top_k 50, repetition "
                        "penalty 1.1, stop ['\\n']",
            "bare_generate": "model.generate(num_return_sequences=n, do_sample) with the same "
                             "rows, Transformers' own sampler, stop strings, sdpa, DynamicCache",
        },
        "widths": results,
        "engine_vs_generate": {rows: r["engine_vs_generate"] for rows, r in results.items()},
        "target": {"engine_vs_generate_at_most": TARGET,
                   "met": all(r <= TARGET for r in ratios) if None not in ratios else None},
        "engine_samples_per_s": engine_rate,
        "samples_per_s_rises_with_width": None if None in engine_rate.values() else list(
            engine_rate.values()) == sorted(engine_rate.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    return report


def print_table(report: dict[str, Any]) -> None:
    head = (f"{'rows':>5} {'run':<22} {'prefill s':>9} {'step ms':>8} {'steps':>5} "
            f"{'samples/s':>9} {'fwd ms':>7} {'sampler':>7} {'stops':>6} {'loop':>6}")
    lines = [head, "-" * len(head)]
    for rows, result in report["widths"].items():
        for name, t in result["timed"].items():
            b = result["breakdown"].get(name, {})
            if "error" in t:
                lines.append(f"{rows:>5} {name:<22} failed: {t['error'][:80]}")
                continue
            ms = lambda d, k: f"{1000 * d[k]:.1f}" if k in d else "-"  # noqa: E731
            lines.append(
                f"{rows:>5} {name:<22} {t['prefill']:>9.3f} {1000 * t['step_s']:>8.1f} "
                f"{t['steps']:>5} {t['samples_per_s']:>9.2f} "
                f"{ms(b, 'step_forward_per_step_s'):>7} {ms(b, 'sampler_per_step_s'):>7} "
                f"{ms(b, 'stop_criteria_per_step_s'):>6} {ms(b, 'loop_other_per_step_s'):>6}")
        lines.append(f"{rows:>5} engine_vs_generate (decode step) {result['engine_vs_generate']}"
                     f", prefill {result['prefill_engine_vs_generate']}; variants' step over "
                     f"the engine's {result['variants_vs_engine']}")
    lines.append("-" * len(head))
    w = report["workload"]
    lines.append(f"model {report['model'].get('shape') or report['model'].get('path')} "
                 f"({report['model']['dtype']}) on {report['device'].get('name', 'cpu')}; "
                 f"prompts ~{w['prompt_tokens']['mean']:.0f} tokens, {w['num_samples']} samples, "
                 f"{w['max_tokens']} new tokens (breakdown columns, ms a step: "
                 f"{w['breakdown_tokens']} new tokens)")
    met = {True: "met", False: "NOT met", None: "not measured"}[report["target"]["met"]]
    lines.append(f"target engine_vs_generate <= {TARGET}: {met}; engine "
                 f"samples/s by width {report['engine_samples_per_s']} (rises: "
                 f"{report['samples_per_s_rises_with_width']})")
    print("\n".join(lines))

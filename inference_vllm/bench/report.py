"""The benchmark's report: ratios, targets, the printed table and bench.json's contents."""
from __future__ import annotations

import argparse
import statistics
from typing import Any, Sequence

from inference_core.run.job import Job
from inference_core.prompts.builder import Prompt
from inference_core.rundir.facts import describe_device, versions

from inference_vllm.bench.rows import Row

RATIOS = {  # name: (numerator row, denominator row), samples/s over samples/s
    "pipeline_vs_raw_engine": ("pipeline", "raw_engine"),
    "pipeline_vs_seed_style": ("pipeline", "seed_style"),
    "pipeline_vs_seed_style_cached": ("pipeline", "seed_style_cached"),
    "vllm_vs_hf": ("pipeline", "hf"),
}
TARGETS = {"pipeline_vs_raw_engine": 0.95, "pipeline_vs_seed_style": 2.0}


def cache_salt_finding(rows: dict[str, Row]) -> dict[str, Any]:
    salted = rows["seed_style"].extra["engine_metrics"]
    cached = rows["seed_style_cached"].extra["engine_metrics"]
    return {
        "defeats_prefix_cache": salted["prefix_cache_queries"] > 0
        and salted["prefix_cache_hits"] == 0,
        "seed_style_prefix_cache_hits": salted["prefix_cache_hits"],
        "seed_style_prefix_cache_queries": salted["prefix_cache_queries"],
        "seed_style_cached_prefix_cache_hits": cached["prefix_cache_hits"],
        "seed_style_cached_prefix_cache_queries": cached["prefix_cache_queries"],
    }


def report(args: argparse.Namespace, job: Job, prompts: Sequence[Prompt], rows: dict[str, Row],
           startup: dict[str, float], notes: dict[str, Any],
           engine_totals: dict[str, Any]) -> dict[str, Any]:
    table = {name: row.as_dict() for name, row in rows.items()}
    ratios = {}
    for key, (num, den) in RATIOS.items():
        if num in table and den in table and table[den]["samples_per_sec"]:
            ratios[key] = round(table[num]["samples_per_sec"] / table[den]["samples_per_sec"], 4)
        else:
            ratios[key] = None
    lengths = [p.num_tokens for p in prompts]
    users = len({p.user_hash for p in prompts})
    return {
        "command": " ".join(["python -m inference_vllm.bench", *args.argv]),
        "settings": {
            "dataset": job.dataset_name, "dataset_path": str(job.dataset_path),
            "ablation": job.ablation.name, "model_path": str(job.model_path),
            "synthetic_users": args.users, "sample_users_kept": args.keep_sample_users,
            "users": users, "prompts": len(prompts),
            "prompt_tokens": {"total": sum(lengths), "min": min(lengths), "max": max(lengths),
                              "mean": round(statistics.mean(lengths), 1)},
            "truncated_prompts": sum(p.truncated for p in prompts),
            "max_model_len": job.max_model_len, "sampling": job.sampling.as_dict(),
            "num_samples": job.sampling.num_samples, "max_tokens": job.sampling.max_tokens,
            "tiny": args.tiny, "speculative": args.speculative, "seed": args.seed,
            "repeats": args.repeats,
            "engine_args": engine_totals.get("engine_args"),
        },
        "startup_seconds": {k: round(v, 3) for k, v in startup.items()},
        "rows": table,
        "ratios": ratios,
        "targets": {k: {"target": v, "value": ratios.get(k),
                        "met": ratios.get(k) is not None and ratios[k] >= v}
                    for k, v in TARGETS.items()},
        "pipeline_write_seconds_outside_engine_step": table["pipeline"]["overhead"]["write_seconds"],
        "cache_salt": notes.get("cache_salt"),
        "speculative": notes.get("speculative"),
        "engine_metrics": {k: v for k, v in engine_totals.items() if k != "engine_args"},
        "machine": {**describe_device(),
                    # Other processes on the machine skew every row: 1/5/15-minute load averages.
                    "load_average_before": notes.get("load_average_before"),
                    "load_average_after": notes.get("load_average_after")},
        "versions": versions(),
        "definitions": {
            "wall_seconds": "first request submitted to last result returned (pipeline: written)",
            "samples_per_sec": "samples returned / wall_seconds",
            "prompt_tokens_per_sec": "prompt tokens submitted / wall_seconds; a prompt counts once "
                                     "per request, so n=1 copies count it num_samples times",
            "overhead_seconds": "pipeline only: load_data + build_prompts + write_seconds from "
                                "shards/0-of-1.json (write_seconds lies inside wall_seconds)",
            "ratios": "samples/s over samples/s; vllm = the pipeline row",
            "engine_metrics": "the main vLLM engine's own metrics over the warm-up and every vLLM "
                              "row; each row's own difference is under rows.<row>.engine_metrics "
                              "(prefix-cache queries and hits count tokens)",
            "startup_seconds": "engine construction (and each engine's untimed warm-up request), "
                               "kept out of every row",
        },
    }


def render(result: dict[str, Any]) -> str:
    head = (f"{'row':<20}{'wall s':>9}{'samples':>9}{'samples/s':>11}{'prompt tok/s':>14}"
            f"{'output tok/s':>14}{'overhead s':>12}")
    lines = [head, "-" * len(head)]
    for name, r in result["rows"].items():
        overhead = f"{r['overhead_seconds']:.2f}"
        lines.append(f"{name:<20}{r['wall_seconds']:>9.2f}{r['samples']:>9}"
                     f"{r['samples_per_sec']:>11.2f}{r['prompt_tokens_per_sec']:>14.1f}"
                     f"{r['output_tokens_per_sec']:>14.1f}{overhead:>12}")
    s = result["settings"]
    lines.append("-" * len(head))
    lines.append(f"workload: {s['prompts']} prompts of {s['users']} users, {s['prompt_tokens']['mean']:.0f} "
                 f"prompt tokens on average ({s['truncated_prompts']} truncated), "
                 f"{s['num_samples']} samples x <= {s['max_tokens']} tokens each")
    lines.append("start-up (not in any row): " + ", ".join(
        f"{k} {v:.1f} s" for k, v in result["startup_seconds"].items()))
    pipe = result["rows"]["pipeline"]
    lines.append("pipeline overhead: load {load_data_seconds:.2f} s, build {build_prompts_seconds:.2f} s, "
                 "write {write_seconds:.2f} s (writing happens between engine steps while requests "
                 "wait)".format(**pipe["overhead"]))
    lines.append("ratios (samples/s): " + ", ".join(
        f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in result["ratios"].items()))
    for key, t in result["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"target {key} >= {t['target']}: {value} -> "
                     f"{'met' if t['met'] else 'NOT met'}")
    salt = result.get("cache_salt") or {}
    if salt:
        lines.append(f"cache_salt: seed_style {salt['seed_style_prefix_cache_hits']}/"
                     f"{salt['seed_style_prefix_cache_queries']} prefix-cache hits (tokens), "
                     f"seed_style_cached {salt['seed_style_cached_prefix_cache_hits']}/"
                     f"{salt['seed_style_cached_prefix_cache_queries']}: salt "
                     f"{'defeats' if salt['defeats_prefix_cache'] else 'does NOT defeat'} the cache")
    spec = result.get("speculative")
    if spec:
        lines.append(f"speculative {spec['method']}: " + (
            f"error: {spec['error']}" + (" Known cause in bench.json speculative.known_cause."
                                         if spec.get("known_cause") else "")
            if "error" in spec
            else f"acceptance rate {spec.get('acceptance_rate')}"))
    ttft = (result["engine_metrics"] or {}).get("time_to_first_token_seconds")
    if ttft:
        lines.append(f"engine TTFT (all vLLM rows of the main engine) p50/p90/p99: "
                     f"{ttft['p50']}/{ttft['p90']}/{ttft['p99']} s; prefix-cache hit rate "
                     f"{result['engine_metrics'].get('prefix_cache_hit_rate', 0):.2f}")
    m = result["machine"]
    load = "/".join(f"{x:.1f}" for x in m.get("load_average_before") or ())
    lines.append(f"machine: {m['cpu']}, {m['cpu_count']} cores, GPUs: {', '.join(m['gpus']) or 'none'}"
                 f"; load average 1/5/15 min at start {load or 'n/a'}")
    return "\n".join(lines)

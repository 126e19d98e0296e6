"""`python -m inference_vllm.bench.quant --quantized PATH`: a model beside its quantized copy.

Runs the same job twice, one after the other (greedy decoding, so the two outputs are comparable
item by item): the original checkpoint (`--model-path`, default the embedded model) and the
quantized one, each through the normal entry point (`python -m inference_vllm`, or
`inference_hf` with `--engine hf`) into <out>/<label>. Prints samples/s, output tokens/s and
each run's quality metrics (against the references) side by side, then the chrF between the two
models' outputs and how many quantized samples are degenerate; writes <out>/bench_quant.json.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from inference_core.evaluation.scoring import METRICS_FILE
from inference_core.evaluation.quant_quality import chrf_between, exact_matches, is_degenerate
from inference_core.rundir.layout import SUMMARY_FILE, read_user_files
from inference_core.rundir.writers import read_json, write_json_atomic

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
METRIC_COLUMNS = (("bleu", "bleu_mean_of_n"), ("chrf", "chrf_mean_of_n"),
                  ("rouge_l", "rouge_l_mean_of_n"), ("mean_chars", "mean_chars"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.bench.quant", description=__doc__)
    p.add_argument("--quantized", type=Path, required=True, help="the quantized checkpoint folder")
    p.add_argument("--model-path", type=Path, default=None,
                   help="the original checkpoint (default: the embedded SmolLM2)")
    p.add_argument("--dataset", default="Chameleons")
    p.add_argument("--ablation", default="profile_and_history_and_context")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_quant")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides for both runs")
    return p.parse_args(argv)


def run_job(label: str, model_path: Path | None, args: argparse.Namespace) -> Path:
    """One whole run through the public entry point; returns its output folder."""
    out = (args.out / label).resolve()
    command = [sys.executable, "-m", f"inference_{args.engine}", f"dataset={args.dataset}",
               f"ablation={args.ablation}", "sampling=greedy",
               f"sampling.max_tokens={args.max_tokens}", f"output_dir={out}", "overwrite=true"]
    if model_path is not None:
        command.append(f"model.path={model_path.resolve()}")
    if args.max_users:
        command.append(f"max_users={args.max_users}")
    command += list(args.overrides)
    log.info("%s: %s", label, " ".join(command))
    if subprocess.run(command, cwd=REPO).returncode != 0:
        raise SystemExit(f"the {label} run failed: {' '.join(command)}")
    return out


def texts_by_item(run_dir: Path) -> dict[str, str]:
    """The first sample of every item, keyed by user and location."""
    return {f"{user.key}/{item.location.key()}": item.generated_samples[0]
            for user in read_user_files(run_dir) for item in user.items}


def row(label: str, run_dir: Path) -> dict[str, Any]:
    summary = read_json(run_dir / SUMMARY_FILE)
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    texts = texts_by_item(run_dir)
    return {
        "label": label, "checkpoint": summary["checkpoint"],
        "quantization": summary.get("quantization"),
        "load_s": summary["model_load_seconds"], "gen_s": summary["inference_time_seconds"],
        "samples": summary["samples_generated"],
        "samples_per_s": summary["throughput_samples_per_sec"],
        "output_tok_per_s": summary["output_tokens_per_sec"],
        **{name: metrics.get(key) for name, key in METRIC_COLUMNS},
        "degenerate": sum(is_degenerate(t) for t in texts.values()),
        "texts": texts,
    }


def compare(base: dict[str, Any], quant: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(set(base["texts"]) & set(quant["texts"]))
    a = [base["texts"][k] for k in keys]
    b = [quant["texts"][k] for k in keys]
    return {"items": len(keys), "chrf_quantized_vs_original": round(chrf_between(b, a), 2),
            "identical": exact_matches(a, b)}


def describe(q: dict[str, Any] | None) -> str:
    if not q:
        return "none"
    return f"{q.get('algorithm') or q['method']} w{q.get('bits')} g{q.get('group_size')}"


def render(rows: list[dict[str, Any]], agreement: dict[str, Any]) -> list[str]:
    def num(v: Any, digits: int = 2) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    head = (f"{'model':<10}{'quantization':<16}{'load s':>8}{'gen s':>8}{'samples/s':>11}"
            f"{'out tok/s':>11}{'bleu':>7}{'chrf':>7}{'rougeL':>8}{'chars':>7}{'degenerate':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['label']:<10}{describe(r['quantization']):<16}{num(r['load_s'], 1):>8}"
            f"{num(r['gen_s'], 1):>8}{num(r['samples_per_s']):>11}"
            f"{num(r['output_tok_per_s'], 1):>11}"
            f"{num(r['bleu']):>7}{num(r['chrf']):>7}{num(r['rouge_l']):>8}"
            f"{num(r['mean_chars'], 1):>7}{r['degenerate']:>7}/{r['samples']:<4}")
    lines.append(f"greedy agreement over {agreement['items']} items: chrF(quantized vs original) "
                 f"{agreement['chrf_quantized_vs_original']:.1f}, identical "
                 f"{agreement['identical']}/{agreement['items']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not (args.quantized / "config.json").is_file():
        log.error("--quantized %s is not a checkpoint folder (no config.json)", args.quantized)
        return 2
    rows = [row("original", run_job("original", args.model_path, args)),
            row("quantized", run_job("quantized", args.quantized, args))]
    agreement = compare(rows[0], rows[1])
    lines = render(rows, agreement)
    for line in lines:
        print(line)
    report = {"rows": [{k: v for k, v in r.items() if k != "texts"} for r in rows],
              "agreement": agreement, "engine": args.engine, "dataset": args.dataset,
              "ablation": args.ablation, "max_tokens": args.max_tokens, "table": lines}
    write_json_atomic(args.out / "bench_quant.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

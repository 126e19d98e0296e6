"""Leaderboard rows from run folders: per-item means with bootstrap intervals, one row per run.

A row is one run folder, never a merge of several: its checkpoint, sampling, engine and ablation
are columns, so runs of several checkpoints over one dataset stand side by side. A run that
crashed, is empty or lacks items is an incomplete row with its reason and no numbers at all.
The row types live in inference_core.evaluation.leaderboard_rows; paired comparisons with a
baseline in inference_core.evaluation.pairing; the tables and the picture in
inference_core.evaluation.leaderboard_output.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference_core.command import CommandParser
from inference_core.errors import ConfigError
from inference_core.evaluation import stats
from inference_core.evaluation.item_scores import ItemScores, load_item_scores, root_flags
from inference_core.evaluation.leaderboard_rows import (INCOMPLETE, Bootstrap, LeaderboardRow,
                                                        MetricEstimate)
from inference_core.evaluation.leaderboard_output import render_markdown, write_leaderboard
from inference_core.evaluation.metrics import language_for_dataset
from inference_core.evaluation.pairing import add_comparisons
from inference_core.evaluation.scoring import (LIKELIHOOD_FILE, METRICS_FILE, SAMPLES_FILE,
                                              SUMMARY_FILE, evaluate_run)
from inference_core.report.leaderboard_page import refresh_reports, write_leaderboard_html
from inference_core.rundir.resume import IDENTITY_FILE
from inference_core.rundir.writers import iter_user_files, read_json

log = logging.getLogger(__name__)
NOT_SAMPLED = "none (likelihood)"  # a likelihood run's sampling column


def find_run_dirs(roots: Sequence[Path]) -> list[Path]:
    """Every folder under the roots that holds inference_summary.json or a started run's run.json."""
    found = {p.parent.resolve() for root in roots for name in (SUMMARY_FILE, IDENTITY_FILE)
             for p in Path(root).rglob(name)}
    return sorted(found)


def load_metrics(run_dir: Path, recompute: bool = False, scores_likelihood: bool = False,
                 ) -> dict[str, Any]:
    """metrics.json, computed first when missing, forced, older than the summary, or without
    the samples.parquet (and, for a run that scores likelihoods, the likelihood.parquet) the
    per-item scores come from."""
    metrics_path = run_dir / METRICS_FILE
    stale = (
        not metrics_path.is_file() or not (run_dir / SAMPLES_FILE).is_file()
        or (scores_likelihood and not (run_dir / LIKELIHOOD_FILE).is_file())
        or metrics_path.stat().st_mtime < (run_dir / SUMMARY_FILE).stat().st_mtime
    )
    if recompute or stale:
        log.info("computing metrics for %s", run_dir)
        return evaluate_run(run_dir)
    return read_json(metrics_path)


def sampling_label(params: dict[str, Any] | None) -> str:
    """`T=1.0 p=0.9 k=50 n=5 max=512` (+ rep=, min=, stops= where not the default)."""
    if not params:
        return "unknown"
    parts = [f"{label}={params[key]}" for key, label in
             (("temperature", "T"), ("top_p", "p"), ("top_k", "k"), ("num_samples", "n"),
              ("max_tokens", "max")) if params.get(key) is not None]
    if params.get("repetition_penalty") not in (None, 1.0):
        parts.append(f"rep={params['repetition_penalty']}")
    if params.get("min_tokens") not in (None, 1):
        parts.append(f"min={params['min_tokens']}")
    if params.get("stop"):
        parts.append(f"stops={len(params['stop'])}")
    return " ".join(parts) or "unknown"


def checkpoint_label(doc: dict[str, Any]) -> str:
    """The checkpoint path, with the LoRA adapter and quantization that change what it is."""
    label = str(doc.get("checkpoint") or "unknown")
    if doc.get("adapter"):
        label += f" + adapter {doc['adapter']}"
    quant = doc.get("quantization")
    if isinstance(quant, dict) and quant.get("method"):
        bits = f" {quant['bits']}-bit" if quant.get("bits") else ""
        label += f" ({quant['method']}{bits})"
    return label


def _model_name(doc: dict[str, Any]) -> str:
    if doc.get("model_name"):
        return str(doc["model_name"])
    return Path(str(doc.get("checkpoint") or "unknown")).name  # fall back to the path tail


def speed_of(doc: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """samples/s, output tokens/s and whose rate they are: a run's own, or where one engine
    start served several jobs the session's (an older summary without it: unknown)."""
    session = doc.get("engine_session") or {}
    jobs = session.get("jobs") if isinstance(session, dict) else None
    if isinstance(jobs, list) and len(jobs) > 1:
        return (session.get("throughput_samples_per_sec"), session.get("output_tokens_per_sec"),
                f"shared start ({len(jobs)} jobs)")
    return doc.get("throughput_samples_per_sec"), doc.get("output_tokens_per_sec"), "own run"


def _identity_row(run_dir: Path, doc: dict[str, Any], **numbers: Any) -> LeaderboardRow:
    params = doc.get("sampling_params") or {}
    samples_per_s, tokens_per_s, whose = speed_of(doc)
    sampled = doc.get("mode") != "likelihood"  # a likelihood run scores, it samples nothing
    return LeaderboardRow(
        dataset=str(doc.get("dataset") or "unknown"), model=_model_name(doc),
        ablation=str(doc.get("ablation_config") or "unknown"),
        engine=str(doc.get("engine") or "unknown"), checkpoint=checkpoint_label(doc),
        sampling=sampling_label(params) if sampled else NOT_SAMPLED,
        n=params.get("num_samples") if sampled else None,
        items=numbers.get("items"), users=numbers.get("users"), samples=numbers.get("samples"),
        samples_per_s=samples_per_s if sampled else None,
        output_tokens_per_s=tokens_per_s if sampled else None, speed_of=whose,
        seeded=doc.get("per_request_seeds"),
        mean_chars=numbers.get("mean_chars"), run_dir=str(run_dir),
        checkpoint_path=str(doc.get("checkpoint") or ""),
        adapter_path=str(doc["adapter"]) if doc.get("adapter") else None)


def incomplete_row(run_dir: Path, reason: str) -> LeaderboardRow:
    """A run without results: named from whatever identity it left, numbers left empty."""
    doc: dict[str, Any] = {}
    for name in (SUMMARY_FILE, IDENTITY_FILE):
        try:
            doc = {**read_json(run_dir / name), **doc}
        except (OSError, ValueError):
            continue
    return replace(_identity_row(run_dir, doc), status=INCOMPLETE, reason=reason)


def summary_problems(summary: dict[str, Any]) -> list[str]:
    """Why a finished run's summary says items are missing (empty when none are)."""
    problems = []
    shards, expected = len(summary.get("shards") or []), summary.get("num_shards") or 1
    if shards and shards < expected:
        problems.append(f"only {shards} of {expected} shards finished")
    skipped = summary.get("skipped_items") or []
    if skipped:
        problems.append(f"{len(skipped)} items have no generations (reasons in {SUMMARY_FILE})")
    if not summary.get("num_data_items"):
        problems.append("empty: no generated items")
    elif summary.get("mode") == "likelihood" and not (summary.get("likelihood") or {}).get(
            "scored_items"):
        problems.append(f"empty: no item could be scored (reasons in {SUMMARY_FILE})")
    return problems


def score_problems(summary: dict[str, Any], scores: ItemScores) -> list[str]:
    """Items the summary counts but the per-item scores lack, or that have fewer than n samples
    (none in a likelihood run)."""
    problems = []
    expected = summary.get("num_data_items")
    if expected is not None and scores.num_items != expected:
        source = LIKELIHOOD_FILE if summary.get("mode") == "likelihood" else SAMPLES_FILE
        problems.append(f"{source} has {scores.num_items} items, the summary {expected}")
    n = summary.get("num_samples_per_item",
                    (summary.get("sampling_params") or {}).get("num_samples"))
    short = int((scores.frame["num_samples"] < n).sum()) if n else 0
    if short:
        problems.append(f"{short} items have fewer than n={n} samples")
    return problems


def estimate_metrics(scores: ItemScores, boot: Bootstrap) -> tuple[MetricEstimate, ...]:
    users = scores.frame["user_hash"].to_numpy()
    intervals = stats.mean_intervals(scores.values(scores.metrics), users, boot.resamples,
                                     boot.seed, boot.confidence, scores.weights(scores.metrics),
                                     root_flags(scores.metrics))
    return tuple(MetricEstimate(m, iv) for m, iv in zip(scores.metrics, intervals))


def build_row(run_dir: Path, boot: Bootstrap, recompute: bool = False
              ) -> tuple[LeaderboardRow, ItemScores | None]:
    """The run's row and per-item scores; an incomplete row (and None) when it has no results."""
    if not (run_dir / SUMMARY_FILE).is_file():
        users = len(list(iter_user_files(run_dir)))
        return incomplete_row(run_dir, f"no {SUMMARY_FILE}: the run crashed or is still running "
                                       f"({users} user files on disk)"), None
    summary = read_json(run_dir / SUMMARY_FILE)
    problems = summary_problems(summary)
    if problems:
        return incomplete_row(run_dir, "; ".join(problems)), None
    try:
        metrics = load_metrics(run_dir, recompute, "likelihood" in summary)
        language = (metrics.get("language") or summary.get("language")
                    or language_for_dataset(summary.get("dataset")))
        scores = load_item_scores(run_dir, str(language), recompute,
                                  metrics.get("scorer") or summary.get("scorer"))
    except (OSError, ValueError, KeyError) as exc:  # one broken run must not hide the others
        log.warning("%s: no scores: %s", run_dir, exc)
        return incomplete_row(run_dir, f"could not be scored: {exc}"), None
    problems = score_problems(summary, scores)
    if problems:
        return incomplete_row(run_dir, "; ".join(problems)), None
    row = _identity_row(run_dir, summary, items=scores.num_items,
                        users=int(scores.frame["user_hash"].nunique()),
                        samples=int(scores.frame["num_samples"].sum()),
                        mean_chars=metrics.get("mean_chars"))
    return replace(row, metrics=estimate_metrics(scores, boot)), scores


def sort_key(row: LeaderboardRow) -> tuple[Any, ...]:
    return (row.dataset, row.model, row.checkpoint, row.sampling, row.ablation, row.run_dir)


def collect_scored_rows(roots: Sequence[Path], recompute: bool = False,
                        boot: Bootstrap = Bootstrap()
                        ) -> list[tuple[LeaderboardRow, ItemScores | None]]:
    """(row, per-item scores) for every run under the roots, complete ones and incomplete ones."""
    built = [build_row(run_dir, boot, recompute) for run_dir in find_run_dirs(roots)]
    return sorted(built, key=lambda pair: sort_key(pair[0]))


def collect_rows(roots: Sequence[Path], recompute: bool = False,
                 boot: Bootstrap = Bootstrap()) -> list[LeaderboardRow]:
    """Rows for all runs under the roots, sorted by dataset, model, checkpoint, ablation."""
    return [row for row, _ in collect_scored_rows(roots, recompute, boot)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = CommandParser("python -m inference_core.leaderboard",
                           "build the leaderboard (md, csv, json, png, html) over every run "
                           "folder under ROOT")
    parser.add_argument("roots", nargs="+", type=Path, metavar="ROOT",
                        help="folders searched for run folders (several checkpoints: several roots)")
    parser.add_argument("--out", type=Path, default=Path("outputs/leaderboard"),
                        help="output folder")
    parser.add_argument("--baseline", metavar="RUN_DIR|ABLATION|CHECKPOINT",
                        help="add paired differences to this run folder, ablation or checkpoint")
    parser.add_argument("--resamples", type=int, default=stats.DEFAULT_RESAMPLES,
                        help="bootstrap resamples and permutations (default %(default)s)")
    parser.add_argument("--seed", type=int, default=stats.DEFAULT_SEED,
                        help="seed of the resampling (default %(default)s)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute every metrics.json and item_scores.parquet")
    parser.add_argument("--no-reports", action="store_true",
                        help="do not write missing or stale report.html files of the runs")
    args = parser.parse_args(argv)
    parser.require_folders(args.roots)
    if args.resamples < 1:
        parser.error(f"--resamples {args.resamples}: give at least 1 (1000 or more for a table)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    boot = Bootstrap(args.resamples, args.seed)
    scored = collect_scored_rows(args.roots, args.recompute, boot)
    rows = [row for row, _ in scored]
    if args.baseline:
        try:
            rows = add_comparisons(scored, args.baseline, boot)
        except ConfigError as err:
            log.error("%s", err)
            return 2
    if not rows:
        log.warning("no run folders (with %s) under %s", SUMMARY_FILE, args.roots)
    for row in rows:
        if not row.complete:
            log.warning("incomplete run %s: %s", row.run_dir, row.reason)
    paths = write_leaderboard(rows, args.out, boot)
    if not args.no_reports:
        refresh_reports(rows)  # first, so that every row can link to its report
    paths["html"] = write_leaderboard_html(rows, args.out, paths["png"], boot)
    log.info("wrote %d rows to %s", len(rows), ", ".join(map(str, paths.values())))
    print(render_markdown(rows, boot))  # the table is the CLI's product; show it
    return 0

"""Build a leaderboard (markdown, CSV, PNG, HTML) from every run folder under some roots.

Usage: python -m inference_core.leaderboard ROOT [ROOT...] [--out DIR] [--recompute] [--no-reports]
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from inference_core.command import CommandParser
from inference_core.evaluation.scoring import METRICS_FILE, SUMMARY_FILE, evaluate_run
from inference_core.rundir.writers import read_json, write_atomic, write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("outputs/leaderboard")


@dataclass(frozen=True)
class LeaderboardRow:
    """One run; field order is the column order of the markdown and CSV tables."""

    dataset: str
    model: str
    ablation: str
    engine: str
    users: int | None
    samples: int | None
    samples_per_s: float | None
    output_tokens_per_s: float | None
    bleu_mean_of_n: float | None
    bleu_best_of_n: float | None
    chrf_mean_of_n: float | None
    chrf_best_of_n: float | None
    rouge_l_mean_of_n: float | None
    rouge_l_best_of_n: float | None
    distinct_1: float | None
    distinct_2: float | None
    mean_chars: float | None
    run_dir: str


COLUMNS = tuple(f.name for f in fields(LeaderboardRow))
# Markdown shows everything but the (long) run path; the CSV keeps it to trace a row back.
MD_HEADERS = {
    "samples_per_s": "samples/s", "output_tokens_per_s": "output tok/s",
    "bleu_mean_of_n": "bleu mean", "bleu_best_of_n": "bleu best",
    "chrf_mean_of_n": "chrf mean", "chrf_best_of_n": "chrf best",
    "rouge_l_mean_of_n": "rouge_l mean", "rouge_l_best_of_n": "rouge_l best",
}
_THREE_DIGITS = {"distinct_1", "distinct_2"}


def find_run_dirs(roots: Sequence[Path]) -> list[Path]:
    """Every folder under the roots (roots included) that holds inference_summary.json."""
    found = {p.parent.resolve() for root in roots for p in Path(root).rglob(SUMMARY_FILE)}
    return sorted(found)


def load_metrics(run_dir: Path, recompute: bool = False) -> dict[str, Any]:
    """metrics.json, computed first when missing, forced, or older than the run summary."""
    metrics_path = run_dir / METRICS_FILE
    stale = (
        not metrics_path.is_file()
        or metrics_path.stat().st_mtime < (run_dir / SUMMARY_FILE).stat().st_mtime
    )
    if recompute or stale:
        log.info("computing metrics for %s", run_dir)
        return evaluate_run(run_dir)
    return read_json(metrics_path)


def _model_name(summary: dict[str, Any]) -> str:
    if summary.get("model_name"):
        return str(summary["model_name"])
    return Path(str(summary.get("checkpoint") or "unknown")).name  # fall back to the path tail


def make_row(run_dir: Path, summary: dict[str, Any], metrics: dict[str, Any]) -> LeaderboardRow:
    return LeaderboardRow(
        dataset=str(summary.get("dataset") or metrics.get("dataset") or "unknown"),
        model=_model_name(summary),
        ablation=str(summary.get("ablation_config") or "unknown"),
        engine=str(summary.get("engine") or "unknown"),
        users=summary.get("num_users"),
        samples=summary.get("total_samples", metrics.get("num_samples")),
        samples_per_s=summary.get("throughput_samples_per_sec"),
        output_tokens_per_s=summary.get("output_tokens_per_sec"),
        bleu_mean_of_n=metrics.get("bleu_mean_of_n"),
        bleu_best_of_n=metrics.get("bleu_best_of_n"),
        chrf_mean_of_n=metrics.get("chrf_mean_of_n"),
        chrf_best_of_n=metrics.get("chrf_best_of_n"),
        rouge_l_mean_of_n=metrics.get("rouge_l_mean_of_n"),
        rouge_l_best_of_n=metrics.get("rouge_l_best_of_n"),
        distinct_1=metrics.get("distinct_1"),
        distinct_2=metrics.get("distinct_2"),
        mean_chars=metrics.get("mean_chars"),
        run_dir=str(run_dir),
    )


def collect_rows(roots: Sequence[Path], recompute: bool = False) -> list[LeaderboardRow]:
    """Rows for all runs under the roots, sorted by dataset, model, ablation."""
    rows = []
    for run_dir in find_run_dirs(roots):
        try:
            summary = read_json(run_dir / SUMMARY_FILE)
            rows.append(make_row(run_dir, summary, load_metrics(run_dir, recompute)))
        except (OSError, ValueError) as exc:  # one broken run must not hide the others
            log.warning("skipping %s: %s", run_dir, exc)
    return sorted(rows, key=lambda r: (r.dataset, r.model, r.ablation, r.run_dir))


def format_cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if name == "mean_chars":
            return f"{value:.1f}"
        return f"{value:.3f}" if name in _THREE_DIGITS else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def render_markdown(rows: Sequence[LeaderboardRow]) -> str:
    cols = [c for c in COLUMNS if c != "run_dir"]
    lines = [
        "| " + " | ".join(MD_HEADERS.get(c, c) for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(c, getattr(row, c)) for c in cols) + " |")
    return "# Leaderboard\n\n" + "\n".join(lines) + "\n"


def render_csv(rows: Sequence[LeaderboardRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else v for v in astuple(row)])
    return buf.getvalue()


def _quality_metric(rows: Sequence[LeaderboardRow]) -> tuple[str, str]:
    """chrF mean-of-n when the dataset has references, else distinct-2 (always defined)."""
    if any(r.chrf_mean_of_n is not None for r in rows):
        return "chrf_mean_of_n", "chrF (mean of n)"
    return "distinct_2", "distinct-2"


def _grouped_bars(ax: Any, rows: Sequence[LeaderboardRow], attr: str, title: str) -> None:
    """Bars per ablation on the x axis, one colour per model."""
    ablations = sorted({r.ablation for r in rows})
    models = sorted({r.model for r in rows})
    width = 0.8 / len(models)
    for m_idx, model in enumerate(models):
        values = {r.ablation: getattr(r, attr) for r in rows if r.model == model}
        heights = [_num(values.get(a)) for a in ablations]
        xs = [a_idx - 0.4 + width * (m_idx + 0.5) for a_idx in range(len(ablations))]
        ax.bar(xs, heights, width=width, label=model)
    ax.set_xticks(
        range(len(ablations)), ablations, rotation=20, ha="right", rotation_mode="anchor",
        fontsize=8,
    )
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)  # NaN leaves a gap instead of a 0 bar


def render_png(rows: Sequence[LeaderboardRow], path: Path) -> None:
    """One figure row per dataset: quality metric and samples/s per ablation."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on servers without a display
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in rows})
    fig, axes = plt.subplots(
        max(len(datasets), 1), 2, figsize=(12, 3.8 * max(len(datasets), 1)), squeeze=False
    )
    if not datasets:
        axes[0][0].text(0.5, 0.5, "no runs found", ha="center", va="center")
    for (ax_q, ax_s), dataset in zip(axes, datasets):
        subset = [r for r in rows if r.dataset == dataset]
        attr, label = _quality_metric(subset)
        _grouped_bars(ax_q, subset, attr, f"{dataset}: {label}")
        _grouped_bars(ax_s, subset, "samples_per_s", f"{dataset}: samples/s")
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def write_leaderboard(rows: Sequence[LeaderboardRow], out_dir: Path) -> dict[str, Path]:
    """Write leaderboard.md, .csv and .png into out_dir; return their paths."""
    paths = {ext: out_dir / f"leaderboard.{ext}" for ext in ("md", "csv", "png")}
    write_bytes_atomic(paths["md"], render_markdown(rows).encode())
    write_bytes_atomic(paths["csv"], render_csv(rows).encode())
    render_png(rows, paths["png"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser("python -m inference_core.leaderboard",
                           "build the leaderboard (md, csv, png, html) over every run folder "
                           "under ROOT")
    parser.add_argument("roots", nargs="+", type=Path, metavar="ROOT")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--recompute", action="store_true", help="recompute every metrics.json")
    parser.add_argument("--no-reports", action="store_true",
                        help="do not write missing or stale report.html files of the runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser.require_folders(args.roots)
    rows = collect_rows(args.roots, args.recompute)
    if not rows:
        log.warning("no run folders (with %s) under %s", SUMMARY_FILE, args.roots)
    paths = write_leaderboard(rows, args.out)
    from inference_core.report.leaderboard_page import refresh_reports, write_leaderboard_html

    if not args.no_reports:
        refresh_reports(rows)  # before the page, so that every row can link to its report
    paths["html"] = write_leaderboard_html(rows, args.out, paths["png"])
    log.info("wrote %d rows to %s", len(rows), ", ".join(map(str, paths.values())))
    print(render_markdown(rows))  # the table is the CLI's product; show it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

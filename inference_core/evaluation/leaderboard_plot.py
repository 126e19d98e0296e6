"""leaderboard.png: per dataset, the quality metric with its 95% intervals and samples/s.

Bars are grouped by ablation, one colour per series (checkpoint + sampling + engine), so runs
that differ in anything but the ablation are never drawn as one bar. Incomplete runs have no bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference_core.evaluation.leaderboard_rows import LeaderboardRow, metric_header
from inference_core.rundir.writers import write_atomic

Series = tuple[tuple[str, ...], int]  # a setup and the index among its duplicate runs


def quality_metric(rows: Sequence[LeaderboardRow]) -> tuple[str, str]:
    """The task's own metric (choice accuracy, rating MAE) where the dataset has one, else
    chrF mean-of-n when it has references; for runs that only score likelihoods the option
    accuracy of an answer set, else the training loss; else distinct-2 (always defined)."""
    for name, label in (("choice_accuracy", "choice accuracy"), ("rating_mae", "rating MAE")):
        if any(r.estimate(name) is not None for r in rows):
            return name, label
    if any(r.estimate("chrf_mean_of_n") is not None for r in rows):
        return "chrf_mean_of_n", "chrF " + metric_header("chrf_mean_of_n").split(" ", 1)[1]
    for name, label in (("option_accuracy", "option accuracy (likelihood argmax)"),
                        ("loss", "loss: NLL per target token, lower is better")):
        if any(r.estimate(name) is not None for r in rows):
            return name, label
    return "distinct_2", "distinct-2"


def series_labels(rows: Sequence[LeaderboardRow]) -> dict[tuple[str, ...], str]:
    """The model name per setup, with checkpoint and sampling where the name is not enough."""
    setups = sorted({r.setup() for r in rows})
    names = [s[1] for s in setups]
    labels = {}
    for setup in setups:
        _, model, checkpoint, engine, sampling = setup
        label = model
        if names.count(model) > 1:
            label = f"{model} · {Path(checkpoint.split(' ')[0]).name} · {engine} · {sampling}"
        labels[setup] = label
    return labels


def _series(rows: Sequence[LeaderboardRow]) -> dict[Series, dict[str, LeaderboardRow]]:
    """Rows per series and ablation; a second run of the same setup and ablation is its own
    series (drawn, never averaged in)."""
    out: dict[Series, dict[str, LeaderboardRow]] = {}
    for row in rows:
        dup = 0
        while row.ablation in out.get((row.setup(), dup), {}):
            dup += 1
        out.setdefault((row.setup(), dup), {})[row.ablation] = row
    return out


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)  # NaN leaves a gap instead of a 0 bar


def _bar_values(row: LeaderboardRow | None, attr: str) -> tuple[float, float, float]:
    """Height and the two error-bar lengths (NaN when absent)."""
    if row is None:
        return math.nan, math.nan, math.nan
    if attr == "samples_per_s":
        return _num(row.samples_per_s), math.nan, math.nan
    interval = row.estimate(attr)
    if interval is None:
        return math.nan, math.nan, math.nan
    low = interval.mean - interval.low if interval.low is not None else math.nan
    high = interval.high - interval.mean if interval.high is not None else math.nan
    return interval.mean, low, high


def grouped_bars(ax: Any, rows: Sequence[LeaderboardRow], attr: str, title: str) -> None:
    """Bars per ablation on the x axis, one colour per series, error bars where known."""
    ablations = sorted({r.ablation for r in rows})
    series = _series(rows)
    labels = series_labels(rows)
    width = 0.8 / max(len(series), 1)
    for s_idx, ((setup, dup), by_ablation) in enumerate(sorted(series.items())):
        bars = [_bar_values(by_ablation.get(a), attr) for a in ablations]
        xs = [a_idx - 0.4 + width * (s_idx + 0.5) for a_idx in range(len(ablations))]
        yerr = [[b[1] for b in bars], [b[2] for b in bars]]
        label = labels[setup] + (f" (run {dup + 1})" if dup else "")
        ax.bar(xs, [b[0] for b in bars], width=width, label=label,
               yerr=None if attr == "samples_per_s" else yerr, capsize=3,
               error_kw={"elinewidth": 1})
    ax.set_xticks(range(len(ablations)), ablations, rotation=20, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_title(title, fontsize=10)
    # Below the axes: inside, the legend hides the bars it sits on.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)


def speed_title(dataset: str, rows: Sequence[LeaderboardRow]) -> str:
    """samples/s, saying where a bar is a shared engine start's rate rather than a run's."""
    shared = sorted({r.speed_of for r in rows if r.speed_of != "own run"})
    return f"{dataset}: samples/s" + (f" ({', '.join(shared)}: the start's rate)" if shared else "")


def render_png(rows: Sequence[LeaderboardRow], path: Path) -> None:
    """One figure row per dataset: quality metric (with intervals) and samples/s per ablation."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on servers without a display
    import matplotlib.pyplot as plt

    complete = [r for r in rows if r.complete]
    datasets = sorted({r.dataset for r in complete})
    fig, axes = plt.subplots(max(len(datasets), 1), 2,
                             figsize=(12, 4.6 * max(len(datasets), 1)), squeeze=False)
    if not datasets:
        axes[0][0].text(0.5, 0.5, "no complete runs found", ha="center", va="center")
    for (ax_q, ax_s), dataset in zip(axes, datasets):
        subset = [r for r in complete if r.dataset == dataset]
        attr, label = quality_metric(subset)
        grouped_bars(ax_q, subset, attr, f"{dataset}: {label} (95% interval)")
        grouped_bars(ax_s, subset, "samples_per_s", speed_title(dataset, subset))
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)

"""Per-item scores of one run folder: the unit the leaderboard's intervals and paired tests use.

Built from samples.parquet (one row per sample) with metrics.score_item, and for rating/choice
datasets with the run's task scorer called on one item at a time, so they agree with
metrics.json; a run that scores likelihoods adds its per-item figures from likelihood.parquet
(likelihood/table.py: NLL per token, bits per byte, the training loss pooled over tokens, answer
set accuracy and MAE), an item without samples counting 0 of them. Cached as item_scores.parquet
beside it: sentence-level BLEU/chrF/ROUGE over every sample is the slow part and the leaderboard
is rebuilt often.

Task metrics pool samples (each readable sample counts once), so each comes with a weight
column `<metric>_weight` (the item's pooled samples); RMSE is kept per item and pooled as the
root of the weighted mean square.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference_core.evaluation import metrics as scorer
from inference_core.evaluation.item_input import KEY_COLUMNS, WEIGHT_SUFFIX
from inference_core.likelihood import table as likelihood_table
from inference_core.rundir.layout import LIKELIHOOD_FILE, SAMPLES_FILE
from inference_core.rundir.writers import write_atomic

log = logging.getLogger(__name__)

ITEM_SCORES_FILE = "item_scores.parquet"
NUM_SAMPLES_COLUMN = "num_samples"
DIVERSITY_METRICS = ("distinct_1", "distinct_2")
# Task metric -> the scorer's count of samples it pools, mirroring scorers.py's definitions.
POOLED_TASK_METRICS = {
    "rating_mae": "rating_scored_samples", "rating_rmse": "rating_scored_samples",
    "rating_exact": "rating_scored_samples", "choice_accuracy": "choice_scored_samples",
    "choice_mean_distance": "choice_ordered_samples",
}
ROOT_MEAN_SQUARE = frozenset({"rating_rmse"})
TaskScorer = Callable[[list[scorer.ItemInput]], dict]


@dataclass(frozen=True)
class ItemScores:
    """One row per item: KEY_COLUMNS, num_samples, then one float column per metric (NaN where
    the metric does not apply, e.g. no reference)."""

    frame: pd.DataFrame
    metrics: tuple[str, ...]

    @property
    def num_items(self) -> int:
        return len(self.frame)

    def _column(self, name: str, missing: float) -> np.ndarray:
        if name in self.frame:
            return self.frame[name].to_numpy(np.float64)
        return np.full(len(self.frame), missing)

    def values(self, metrics: Iterable[str]) -> np.ndarray:
        """(items x metrics) matrix of what is averaged: NaN for a metric this run lacks,
        squared for root-mean-square metrics."""
        cols = [self._column(m, np.nan) ** (2 if m in ROOT_MEAN_SQUARE else 1) for m in metrics]
        return np.column_stack(cols) if cols else np.empty((len(self.frame), 0))

    def weights(self, metrics: Iterable[str]) -> np.ndarray:
        """(items x metrics) weights: pooled samples for task metrics, 1 for the others."""
        cols = [self._column(m + WEIGHT_SUFFIX, 1.0) for m in metrics]
        return np.column_stack(cols) if cols else np.empty((len(self.frame), 0))


def root_flags(metrics: Iterable[str]) -> list[bool]:
    """Which metrics are the square root of their pooled mean (RMSE)."""
    return [m in ROOT_MEAN_SQUARE for m in metrics]


def metric_names(item: scorer.ItemScores) -> list[str]:
    """Column names of one item's scores: <metric>_mean_of_n, <metric>_best_of_n, distinct-n."""
    names = []
    for metric in (item.mean or {}):
        names += [f"{metric}_mean_of_n", f"{metric}_best_of_n"]
    return names + list(DIVERSITY_METRICS)


def _flatten(item: scorer.ItemScores) -> dict[str, float]:
    row = {"distinct_1": item.distinct_1, "distinct_2": item.distinct_2}
    for metric, value in (item.mean or {}).items():
        row[f"{metric}_mean_of_n"] = value
    for metric, value in (item.best or {}).items():
        row[f"{metric}_best_of_n"] = value
    return {k: np.nan if v is None else float(v) for k, v in row.items()}


def task_scorer(name: str | None) -> TaskScorer | None:
    """The run's `dataset.scorer` (rating, choice); None for text, which adds nothing."""
    if not name or name == "text":
        return None
    try:
        from inference_core.evaluation.scorers import SCORERS
    except ImportError:  # a checkout from before task scorers: text metrics only
        log.warning("scorer %r: no inference_core.evaluation.scorers here; text metrics only", name)
        return None
    if name not in SCORERS:
        raise ValueError(f"scorer {name!r} is not known: choose one of {', '.join(sorted(SCORERS))}")
    return SCORERS[name]


def task_scores(task: TaskScorer | None, item: scorer.ItemInput) -> dict[str, float]:
    """The item's pooled task metrics and their weights (NaN / 0 where nothing was readable)."""
    if task is None:
        return {}
    figures = task([item])
    row: dict[str, float] = {}
    for metric, count_key in POOLED_TASK_METRICS.items():
        if metric not in figures:
            continue
        value, weight = figures[metric], figures.get(count_key) or 0
        row[metric] = np.nan if value is None else float(value)
        row[metric + WEIGHT_SUFFIX] = float(weight) if value is not None else 0.0
    return row


class ItemScoreRows:
    """The per-item table built a row at a time into columns of floats (a dict per row of a
    100k-item run was 0.1 GB before the table was made)."""

    def __init__(self, scorer_name: str | None = None) -> None:
        self.task = task_scorer(scorer_name)
        self.keys: list[tuple[Any, ...]] = []
        self.num_samples: list[int] = []
        self.columns: dict[str, array[float]] = {}
        self.names: dict[str, None] = {}

    def add(self, key: tuple[Any, ...], item: scorer.ItemInput, scores: scorer.ItemScores,
            ) -> None:
        extra = task_scores(self.task, item)
        self.names.update(dict.fromkeys(metric_names(scores)))
        self.names.update(dict.fromkeys(k for k in extra if not k.endswith(WEIGHT_SUFFIX)))
        row = {**_flatten(scores), **extra}
        for name in row.keys() - self.columns.keys():  # a column first seen: NaN above
            self.columns[name] = array("d", [np.nan] * len(self.keys))
        for name, values in self.columns.items():
            values.append(row.get(name, np.nan))
        self.keys.append(key)
        self.num_samples.append(len(item.samples))

    def table(self) -> ItemScores:
        """The rows by key; metric columns in _metric_order, then the task metrics' weights."""
        order = _metric_order(self.names)
        weights = [m + WEIGHT_SUFFIX for m in order if m in POOLED_TASK_METRICS]
        columns = [*KEY_COLUMNS, NUM_SAMPLES_COLUMN, *order, *weights]
        if self.keys:
            data: dict[str, Any] = dict(zip(KEY_COLUMNS, map(list, zip(*self.keys))))
            data[NUM_SAMPLES_COLUMN] = self.num_samples
            for name in [*order, *weights]:
                values = self.columns.get(name)
                data[name] = (np.full(len(self.keys), np.nan) if values is None
                              else np.asarray(values))
            frame = pd.DataFrame(data, columns=columns)
        else:  # no rows: the columns as an empty table has always typed them
            frame = pd.DataFrame([], columns=columns)
        frame = frame.sort_values(list(KEY_COLUMNS), kind="stable", ignore_index=True)
        return ItemScores(frame, tuple(order))


def item_scores_frame(entries: Iterable[tuple[tuple[Any, ...], scorer.ItemInput,
                                             scorer.ItemScores]],
                      scorer_name: str | None = None) -> ItemScores:
    """The table of (item key, item, its metrics.score_item scores), one row each, by key."""
    rows = ItemScoreRows(scorer_name)
    for key, item, scores in entries:
        rows.add(key, item, scores)
    return rows.table()


def score_samples(samples: pd.DataFrame, language: str, scorer_name: str | None = None
                  ) -> ItemScores:
    """Score every item of a samples.parquet frame (samples in sample_index order)."""
    ordered = samples.sort_values([*KEY_COLUMNS, "sample_index"], kind="stable")
    entries = []
    for key, group in ordered.groupby(list(KEY_COLUMNS), sort=True, dropna=False):
        reference = group["reference"].iloc[0]
        item = scorer.ItemInput(tuple(group["text"].fillna("")),
                                None if pd.isna(reference) else str(reference))
        entries.append((key, item, scorer.score_item(item, language)))
    return item_scores_frame(entries, scorer_name)


def location_key(user: str, location: str) -> tuple[Any, ...]:
    """An item's table key from its user and "record/collection/item"."""
    return (user, *map(int, location.split("/")))


def write_item_scores(run_dir: Path, scores: ItemScores) -> None:
    """The cache load_item_scores reads, from scores evaluate_run has already computed."""
    write_atomic(run_dir / ITEM_SCORES_FILE, lambda tmp: scores.frame.to_parquet(tmp, index=False))


def _metric_order(names: Iterable[str]) -> list[str]:
    """Reference metrics first (in scorer order), then task metrics, the diversity ones last."""
    names = list(names)
    return [n for n in names if n not in DIVERSITY_METRICS] + [
        n for n in DIVERSITY_METRICS if n in names]


def with_likelihood(scores: ItemScores, likelihood: pd.DataFrame) -> ItemScores:
    """The text metrics' table and the likelihood metric columns (likelihood/table.py's
    metric_frame) as one, by item: an item only one of them has is NaN in the other's columns
    (and has 0 samples where it has none)."""
    names = [c for c in likelihood.columns
             if c not in KEY_COLUMNS and not c.endswith(WEIGHT_SUFFIX)]
    if scores.frame.empty:  # a likelihood run: no samples, no text metrics
        frame = likelihood.copy()
        frame.insert(len(KEY_COLUMNS), NUM_SAMPLES_COLUMN, 0)
    else:
        frame = scores.frame.merge(likelihood, on=list(KEY_COLUMNS), how="outer")
        frame[NUM_SAMPLES_COLUMN] = frame[NUM_SAMPLES_COLUMN].fillna(0).astype(np.int64)
    frame = frame.sort_values(list(KEY_COLUMNS), kind="stable", ignore_index=True)
    return ItemScores(frame, (*scores.metrics, *names))


def _cache_is_fresh(cache: Path, samples: Path, likelihood: Path) -> bool:
    if not cache.is_file():
        return False
    # The scorers' own files count too: changed scoring code must not reuse old scores.
    sources = [samples, Path(scorer.__file__)]
    if likelihood.is_file():
        sources += [likelihood, Path(likelihood_table.__file__)]
    return cache.stat().st_mtime >= max(p.stat().st_mtime for p in sources)


def load_item_scores(run_dir: Path, language: str, recompute: bool = False,
                     scorer_name: str | None = None) -> ItemScores:
    """Per-item scores of a run that has samples.parquet (and likelihood.parquet where it
    scores likelihoods), from the cache when it is fresh."""
    samples_path = run_dir / SAMPLES_FILE
    likelihood_path = run_dir / LIKELIHOOD_FILE
    cache = run_dir / ITEM_SCORES_FILE
    if not recompute and _cache_is_fresh(cache, samples_path, likelihood_path):
        frame = pd.read_parquet(cache)
        metrics = [c for c in frame.columns if c not in (*KEY_COLUMNS, NUM_SAMPLES_COLUMN)
                   and not c.endswith(WEIGHT_SUFFIX)]
        return ItemScores(frame, tuple(metrics))
    log.info("scoring the items of %s", run_dir)
    samples = pd.read_parquet(samples_path, columns=[*KEY_COLUMNS, "sample_index", "reference",
                                                     "text"])
    scores = score_samples(samples, language, scorer_name)
    if likelihood_path.is_file():
        scores = with_likelihood(scores, likelihood_table.read_metric_frame(likelihood_path))
    write_item_scores(run_dir, scores)
    return scores

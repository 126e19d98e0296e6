"""Per-item scores of one run folder: the unit the leaderboard's intervals and paired tests use.

Built from samples.parquet (one row per sample) with metrics.score_item, so they agree with
metrics.json, and cached as item_scores.parquet beside it: sentence-level BLEU/chrF/ROUGE over
every sample is the slow part and the leaderboard is rebuilt often.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inference_core.evaluation import metrics as scorer
from inference_core.evaluation.scoring import SAMPLES_FILE
from inference_core.rundir.writers import write_atomic

log = logging.getLogger(__name__)

ITEM_SCORES_FILE = "item_scores.parquet"
# An item is its user and its location in the test file: the same in every run of a dataset.
KEY_COLUMNS = ("user_hash", "record", "collection", "item")
NUM_SAMPLES_COLUMN = "num_samples"
DIVERSITY_METRICS = ("distinct_1", "distinct_2")


@dataclass(frozen=True)
class ItemScores:
    """One row per item: KEY_COLUMNS, num_samples, then one float column per metric (NaN where
    the metric does not apply, e.g. no reference)."""

    frame: pd.DataFrame
    metrics: tuple[str, ...]

    @property
    def num_items(self) -> int:
        return len(self.frame)

    def values(self, metrics: Iterable[str]) -> np.ndarray:
        """(items x metrics) matrix, NaN for a metric this run does not have."""
        cols = [self.frame[m].to_numpy(np.float64) if m in self.frame else
                np.full(len(self.frame), np.nan) for m in metrics]
        return np.column_stack(cols) if cols else np.empty((len(self.frame), 0))


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


def score_samples(samples: pd.DataFrame, language: str) -> ItemScores:
    """Score every item of a samples.parquet frame (samples in sample_index order)."""
    rows, names = [], {}
    ordered = samples.sort_values([*KEY_COLUMNS, "sample_index"], kind="stable")
    for key, group in ordered.groupby(list(KEY_COLUMNS), sort=True, dropna=False):
        reference = group["reference"].iloc[0]
        item = scorer.ItemInput(tuple(group["text"].fillna("")),
                                None if pd.isna(reference) else str(reference))
        scores = scorer.score_item(item, language)
        names.update(dict.fromkeys(metric_names(scores)))
        rows.append({**dict(zip(KEY_COLUMNS, key)), NUM_SAMPLES_COLUMN: len(group),
                     **_flatten(scores)})
    order = _metric_order(names)
    frame = pd.DataFrame(rows, columns=[*KEY_COLUMNS, NUM_SAMPLES_COLUMN, *order])
    return ItemScores(frame, tuple(order))


def _metric_order(names: Iterable[str]) -> list[str]:
    """Reference metrics first (in scorer order), the diversity ones last."""
    names = list(names)
    return [n for n in names if n not in DIVERSITY_METRICS] + [
        n for n in DIVERSITY_METRICS if n in names]


def _cache_is_fresh(cache: Path, samples: Path) -> bool:
    if not cache.is_file():
        return False
    # The scorer's own file counts too: changed scoring code must not reuse old scores.
    sources = [samples, Path(scorer.__file__)]
    return cache.stat().st_mtime >= max(p.stat().st_mtime for p in sources)


def load_item_scores(run_dir: Path, language: str, recompute: bool = False) -> ItemScores:
    """Per-item scores of a run that has samples.parquet, from the cache when it is fresh."""
    samples_path = run_dir / SAMPLES_FILE
    cache = run_dir / ITEM_SCORES_FILE
    if not recompute and _cache_is_fresh(cache, samples_path):
        frame = pd.read_parquet(cache)
        metrics = [c for c in frame.columns if c not in (*KEY_COLUMNS, NUM_SAMPLES_COLUMN)]
        return ItemScores(frame, tuple(metrics))
    log.info("scoring the items of %s", run_dir)
    samples = pd.read_parquet(samples_path, columns=[*KEY_COLUMNS, "sample_index", "reference",
                                                     "text"])
    scores = score_samples(samples, language)
    write_atomic(cache, lambda tmp: scores.frame.to_parquet(tmp, index=False))
    return scores

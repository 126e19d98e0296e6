"""Uncertainty of leaderboard numbers: cluster bootstrap intervals and paired permutation tests.

The unit is one test item's score. Items of the same user are not independent (one writing
style, one profile), so resampling draws whole users (clusters) with replacement and the
statistic is the mean over every item drawn. When every user has one item this is the plain
item bootstrap. Everything is vectorised with numpy and done in chunks of resamples so that
memory stays bounded (chunk x clusters) whatever the number of items. All metrics of a run
share one set of resamples: one draw of user counts, one matrix product per chunk.

A metric that does not apply to an item (no reference, no bigram) is NaN there: that item adds
neither to the sum nor to the count, so the mean is over the items the metric applies to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
# Index matrix cells per chunk: 4M int64 = 32 MB, fast to gather and small enough for laptops.
_CHUNK_CELLS = 4_000_000
# Up to this many users the paired test enumerates all 2**users sign patterns (4096 at most).
EXACT_MAX_CLUSTERS = 12


@dataclass(frozen=True)
class Interval:
    """A mean over items with its percentile bootstrap interval (None when too few items)."""

    mean: float
    low: float | None
    high: float | None
    num_items: int
    num_clusters: int


@dataclass(frozen=True)
class PairedResult:
    """Mean of (run - baseline) over the shared items, its interval and two-sided p-value."""

    diff: Interval
    p_value: float | None


def cluster_sums(values: np.ndarray, clusters: Sequence[object] | np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of the finite values and their counts: two (clusters x metrics) arrays.

    `values` is (items x metrics); each item is its own cluster when `clusters` is None.
    """
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    if clusters is None:
        return filled, finite.astype(np.float64)
    _, codes = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    num = int(codes.max()) + 1 if codes.size else 0
    sums = np.zeros((num, values.shape[1]))
    counts = np.zeros((num, values.shape[1]))
    np.add.at(sums, codes, filled)
    np.add.at(counts, codes, finite.astype(np.float64))
    return sums, counts


def _chunk_sizes(total: int, clusters: int) -> list[int]:
    size = max(1, min(total, _CHUNK_CELLS // max(clusters, 1)))
    return [min(size, total - start) for start in range(0, total, size)]


def resample_weights(num_clusters: int, resamples: int, rng: np.random.Generator
                     ) -> Iterator[np.ndarray]:
    """Chunks of (resamples x clusters) matrices: how often each cluster is drawn per resample."""
    for size in _chunk_sizes(resamples, num_clusters):
        idx = rng.integers(0, num_clusters, size=(size, num_clusters))
        flat = (idx + np.arange(size)[:, None] * num_clusters).ravel()
        counts = np.bincount(flat, minlength=size * num_clusters)
        yield counts.reshape(size, num_clusters).astype(np.float64)


def bootstrap_means(sums: np.ndarray, counts: np.ndarray, resamples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(resamples x metrics) means over the items of clusters drawn with replacement.

    NaN where a resample drew no item the metric applies to.
    """
    out = []
    for weights in resample_weights(len(sums), resamples, rng):
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((weights @ sums) / (weights @ counts))
    return np.concatenate(out) if out else np.empty((0, sums.shape[1]))


def _as_matrix(values: Sequence[float] | np.ndarray) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    return matrix[:, None] if matrix.ndim == 1 else matrix


def mean_intervals(values: Sequence[Sequence[float]] | np.ndarray,
                   clusters: Sequence[object] | np.ndarray | None = None,
                   resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   confidence: float = CONFIDENCE) -> list[Interval | None]:
    """Per column of (items x metrics) `values`: the mean of its finite values and its interval.

    None for a column without any finite value; low/high are None when the items with a value
    come from fewer than two users: resampling one user says nothing about other users.
    """
    matrix = _as_matrix(values)
    sums, counts = cluster_sums(matrix, clusters)
    draws = None
    if resamples >= 1 and len(sums) >= 2:
        draws = bootstrap_means(sums, counts, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0 * 100.0
    out: list[Interval | None] = []
    for col in range(matrix.shape[1]):
        items = int(counts[:, col].sum())
        users = int(np.count_nonzero(counts[:, col]))
        if items == 0:
            out.append(None)
            continue
        mean = float(sums[:, col].sum() / items)
        low = high = None
        if draws is not None and users >= 2:
            low, high = (float(v) for v in np.nanpercentile(draws[:, col], [tail, 100 - tail]))
        out.append(Interval(mean, low, high, items, users))
    return out


def mean_interval(values: Sequence[float] | np.ndarray,
                  clusters: Sequence[object] | np.ndarray | None = None,
                  resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                  confidence: float = CONFIDENCE) -> Interval | None:
    """mean_intervals for one metric."""
    return mean_intervals(_as_matrix(values), clusters, resamples, seed, confidence)[0]


def _all_sign_patterns(num_clusters: int) -> np.ndarray:
    """Every +-1 vector of that length, one per row (2**num_clusters rows)."""
    bits = (np.arange(2 ** num_clusters)[:, None] >> np.arange(num_clusters)) & 1
    return bits.astype(np.float64) * 2 - 1


def sign_flip_p_values(sums: np.ndarray, resamples: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """Two-sided p-values of a paired randomisation test, one per column of per-cluster sums.

    Under "no difference" the two runs' labels are exchangeable within each user, so every
    user's sum of differences is as likely negated. Up to EXACT_MAX_CLUSTERS users every sign
    pattern is tried (exact p: with k users it cannot go below 2 / 2**k); beyond, `resamples`
    random ones with p = (1 + #{|T*| >= |T|}) / (1 + resamples), never 0. Both are exactly 1
    when every difference is 0.
    """
    observed = np.abs(sums.sum(axis=0))
    # Float noise must not make a permutation with the same |T| look smaller.
    tolerance = 1e-9 * np.maximum(1.0, np.abs(sums).sum(axis=0))
    if len(sums) <= EXACT_MAX_CLUSTERS:
        flipped = np.abs(_all_sign_patterns(len(sums)) @ sums)
        return np.count_nonzero(flipped >= observed - tolerance, axis=0) / len(flipped)
    hits = np.zeros(sums.shape[1])
    for size in _chunk_sizes(resamples, len(sums)):
        signs = rng.integers(0, 2, size=(size, len(sums))).astype(np.float64) * 2 - 1
        hits += np.count_nonzero(np.abs(signs @ sums) >= observed - tolerance, axis=0)
    return (1 + hits) / (1 + resamples)


def paired_differences(values: np.ndarray, baseline: np.ndarray,
                       clusters: Sequence[object] | np.ndarray | None = None,
                       resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       confidence: float = CONFIDENCE) -> list[PairedResult | None]:
    """Per metric column: mean of values - baseline over items where both are finite, its
    bootstrap interval and the sign-flip p-value (rows of both arrays are the same items)."""
    values, baseline = _as_matrix(values), _as_matrix(baseline)
    if values.shape != baseline.shape:
        raise ValueError(f"paired scores differ in shape: {values.shape} vs {baseline.shape}")
    diff = values - baseline  # NaN wherever either run lacks the metric: the item is left out
    intervals = mean_intervals(diff, clusters, resamples, seed, confidence)
    sums, _ = cluster_sums(diff, clusters)
    p_values = (sign_flip_p_values(sums, resamples, np.random.default_rng(seed + 1))
                if resamples >= 1 and len(sums) else None)
    return [None if iv is None else
            PairedResult(iv, None if p_values is None else float(p_values[col]))
            for col, iv in enumerate(intervals)]


def paired_difference(values: Sequence[float] | np.ndarray,
                      baseline: Sequence[float] | np.ndarray,
                      clusters: Sequence[object] | np.ndarray | None = None,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                      confidence: float = CONFIDENCE) -> PairedResult | None:
    """paired_differences for one metric."""
    return paired_differences(_as_matrix(values), _as_matrix(baseline), clusters, resamples,
                              seed, confidence)[0]

"""Uncertainty of leaderboard numbers: cluster bootstrap intervals and paired permutation tests.

The unit is one test item's score. Items of the same user are not independent (one writing
style, one profile), so resampling draws whole users (clusters) with replacement and the
statistic is the mean over every item drawn. When every user has one item this is the plain
item bootstrap. Everything is vectorised with numpy and done in chunks of resamples so that
memory stays bounded (chunk x clusters) whatever the number of items. All metrics of a run
share one set of resamples: one draw of user counts, one matrix product per chunk.

A metric that does not apply to an item (no reference, no bigram) is NaN there: that item adds
neither to the sum nor to the count, so the mean is over the items the metric applies to.

Pooled metrics (a rating error over every readable sample, not a mean of per-item means) give
each item a weight, its number of pooled samples: the statistic is sum(weight * value) /
sum(weight), a ratio the same resampling handles. `root` marks columns whose statistic is the
square root of that ratio (an RMSE from per-item mean squared errors).

Paired comparisons draw the same users for both runs and take the difference of the two
statistics; the p-value comes from swapping the two runs' results within users.
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
# Up to this many users the paired test enumerates all 2**users swap patterns (4096 at most).
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


Array = np.ndarray
Columns = Sequence[Sequence[float]] | np.ndarray


def _as_matrix(values: Sequence[float] | Columns) -> Array:
    matrix = np.asarray(values, dtype=np.float64)
    return matrix[:, None] if matrix.ndim == 1 else matrix


def item_totals(values: Columns, weights: Columns | None = None) -> tuple[Array, Array]:
    """(weight * value, weight) per item and metric; weight 0 where the value is not finite."""
    matrix = _as_matrix(values)
    weight = np.ones_like(matrix) if weights is None else _as_matrix(weights)
    weight = np.where(np.isfinite(matrix) & np.isfinite(weight) & (weight > 0), weight, 0.0)
    return np.where(weight > 0, matrix * weight, 0.0), weight


def cluster_sums(sums: Array, counts: Array, clusters: Sequence[object] | Array | None
                 ) -> tuple[Array, Array]:
    """Per-cluster totals of item sums and counts: two (clusters x metrics) arrays.

    Each item is its own cluster when `clusters` is None.
    """
    if clusters is None:
        return sums, counts
    _, codes = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    num = int(codes.max()) + 1 if codes.size else 0
    out_sums, out_counts = np.zeros((num, sums.shape[1])), np.zeros((num, sums.shape[1]))
    np.add.at(out_sums, codes, sums)
    np.add.at(out_counts, codes, counts)
    return out_sums, out_counts


def _statistic(sums: Array, counts: Array, root: Array) -> Array:
    """sum / count per metric (NaN where count is 0), square-rooted where `root`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sums / counts
        return np.where(root, np.sqrt(np.abs(ratio)), ratio)


def _root_mask(root: Sequence[bool] | None, columns: int) -> Array:
    return np.zeros(columns, dtype=bool) if root is None else np.asarray(root, dtype=bool)


def _chunk_sizes(total: int, clusters: int) -> list[int]:
    size = max(1, min(total, _CHUNK_CELLS // max(clusters, 1)))
    return [min(size, total - start) for start in range(0, total, size)]


def resample_weights(num_clusters: int, resamples: int, rng: np.random.Generator
                     ) -> Iterator[Array]:
    """Chunks of (resamples x clusters) matrices: how often each cluster is drawn per resample."""
    for size in _chunk_sizes(resamples, num_clusters):
        idx = rng.integers(0, num_clusters, size=(size, num_clusters))
        flat = (idx + np.arange(size)[:, None] * num_clusters).ravel()
        counts = np.bincount(flat, minlength=size * num_clusters)
        yield counts.reshape(size, num_clusters).astype(np.float64)


def _percentile_bounds(draws: Array | None, col: int, users: int, confidence: float
                       ) -> tuple[float | None, float | None]:
    if draws is None or users < 2 or np.all(np.isnan(draws[:, col])):
        return None, None  # resampling one user says nothing about other users
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(draws[:, col], [tail, 100.0 - tail])
    return float(low), float(high)


def mean_intervals(values: Columns, clusters: Sequence[object] | Array | None = None,
                   resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   confidence: float = CONFIDENCE, weights: Columns | None = None,
                   root: Sequence[bool] | None = None) -> list[Interval | None]:
    """Per column of (items x metrics) `values`: the (weighted) mean and its interval.

    None for a column without any finite value; low/high are None when the items with a value
    come from fewer than two users.
    """
    sums, counts = item_totals(values, weights)
    cl_sums, cl_counts = cluster_sums(sums, counts, clusters)
    mask = _root_mask(root, sums.shape[1])
    draws = None
    if resamples >= 1 and len(cl_sums) >= 2:
        draws = np.concatenate([_statistic(w @ cl_sums, w @ cl_counts, mask) for w in
                                resample_weights(len(cl_sums), resamples,
                                                 np.random.default_rng(seed))])
    point = _statistic(cl_sums.sum(axis=0), cl_counts.sum(axis=0), mask)
    out: list[Interval | None] = []
    for col in range(sums.shape[1]):
        items, users = np.count_nonzero(counts[:, col]), np.count_nonzero(cl_counts[:, col])
        if items == 0:
            out.append(None)
            continue
        low, high = _percentile_bounds(draws, col, users, confidence)
        out.append(Interval(float(point[col]), low, high, int(items), int(users)))
    return out


def mean_interval(values: Sequence[float] | Array,
                  clusters: Sequence[object] | Array | None = None,
                  resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                  confidence: float = CONFIDENCE) -> Interval | None:
    """mean_intervals for one metric."""
    return mean_intervals(_as_matrix(values), clusters, resamples, seed, confidence)[0]


def _all_swap_patterns(num_clusters: int) -> Array:
    """Every 0/1 vector of that length, one per row (2**num_clusters rows)."""
    bits = (np.arange(2 ** num_clusters)[:, None] >> np.arange(num_clusters)) & 1
    return bits.astype(np.float64)


@dataclass(frozen=True)
class _Pair:
    """Per-cluster totals of both runs over the items both have, and the statistic's shape."""

    sums: Array
    counts: Array
    base_sums: Array
    base_counts: Array
    root: Array

    def difference(self, swap: Array | None = None) -> Array:
        """Run minus baseline; with `swap` (patterns x clusters, 1 = swapped) one row each."""
        if swap is None:
            return (_statistic(self.sums.sum(0), self.counts.sum(0), self.root)
                    - _statistic(self.base_sums.sum(0), self.base_counts.sum(0), self.root))
        moved_sums = swap @ (self.base_sums - self.sums)
        moved_counts = swap @ (self.base_counts - self.counts)
        return (_statistic(self.sums.sum(0) + moved_sums, self.counts.sum(0) + moved_counts,
                           self.root)
                - _statistic(self.base_sums.sum(0) - moved_sums,
                             self.base_counts.sum(0) - moved_counts, self.root))

    def resampled(self, weights: Array) -> Array:
        return (_statistic(weights @ self.sums, weights @ self.counts, self.root)
                - _statistic(weights @ self.base_sums, weights @ self.base_counts, self.root))


def swap_p_values(pair: _Pair, resamples: int, rng: np.random.Generator) -> Array:
    """Two-sided p-values of a paired randomisation test, one per metric.

    Under "no difference" the two runs' results are exchangeable within each user, so every
    user's results are as likely swapped. Up to EXACT_MAX_CLUSTERS users every swap pattern is
    tried (exact p: with k users it cannot go below 2 / 2**k); beyond, `resamples` random ones
    with p = (1 + #{|T*| >= |T|}) / (1 + resamples), never 0. Both are 1 when nothing differs.
    For an unweighted mean this is the sign-flip test on per-user sums of differences.
    """
    observed = np.abs(pair.difference())
    # Float noise must not make a permutation with the same |T| look smaller.
    tolerance = 1e-9 * np.maximum(1.0, observed)
    users = len(pair.sums)
    if users <= EXACT_MAX_CLUSTERS:
        flipped = np.abs(pair.difference(_all_swap_patterns(users)))
        return np.count_nonzero(flipped >= observed - tolerance, axis=0) / len(flipped)
    hits = np.zeros(pair.sums.shape[1])
    for size in _chunk_sizes(resamples, users):
        swap = rng.integers(0, 2, size=(size, users)).astype(np.float64)
        hits += np.count_nonzero(np.abs(pair.difference(swap)) >= observed - tolerance, axis=0)
    return (1 + hits) / (1 + resamples)


def paired_differences(values: Columns, baseline: Columns,
                       clusters: Sequence[object] | Array | None = None,
                       resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       confidence: float = CONFIDENCE, weights: Columns | None = None,
                       baseline_weights: Columns | None = None,
                       root: Sequence[bool] | None = None) -> list[PairedResult | None]:
    """Per metric column: run statistic minus baseline statistic over the items both have (rows
    of both arrays are the same items), its bootstrap interval and the swap-test p-value."""
    sums, counts = item_totals(values, weights)
    base_sums, base_counts = item_totals(baseline, baseline_weights)
    if sums.shape != base_sums.shape:
        raise ValueError(f"paired scores differ in shape: {sums.shape} vs {base_sums.shape}")
    both = (counts > 0) & (base_counts > 0)  # an item either run lacks is left out of both
    totals = [cluster_sums(np.where(both, s, 0.0), np.where(both, c, 0.0), clusters)
              for s, c in ((sums, counts), (base_sums, base_counts))]
    pair = _Pair(totals[0][0], totals[0][1], totals[1][0], totals[1][1],
                 _root_mask(root, sums.shape[1]))
    draws = None
    if resamples >= 1 and len(pair.sums) >= 2:
        draws = np.concatenate([pair.resampled(w) for w in resample_weights(
            len(pair.sums), resamples, np.random.default_rng(seed))])
    p_values = swap_p_values(pair, resamples, np.random.default_rng(seed + 1)) \
        if resamples >= 1 and len(pair.sums) else None
    point = pair.difference()
    out: list[PairedResult | None] = []
    for col in range(sums.shape[1]):
        items = int(np.count_nonzero(both[:, col]))
        users = int(np.count_nonzero(pair.counts[:, col]))
        if items == 0:
            out.append(None)
            continue
        low, high = _percentile_bounds(draws, col, users, confidence)
        out.append(PairedResult(Interval(float(point[col]), low, high, items, users),
                                None if p_values is None else float(p_values[col])))
    return out


def paired_difference(values: Sequence[float] | Array, baseline: Sequence[float] | Array,
                      clusters: Sequence[object] | Array | None = None,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                      confidence: float = CONFIDENCE) -> PairedResult | None:
    """paired_differences for one metric."""
    return paired_differences(_as_matrix(values), _as_matrix(baseline), clusters, resamples,
                              seed, confidence)[0]

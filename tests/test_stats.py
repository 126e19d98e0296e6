"""Bootstrap intervals and paired tests of inference_core.evaluation.stats on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from inference_core.evaluation import stats


def test_interval_covers_the_true_mean_at_about_the_stated_rate() -> None:
    # 400 data sets of 80 skewed (exponential, mean 1) scores, 1000 resamples each. With 400
    # trials the coverage estimate has a standard error of sqrt(.95 * .05 / 400) = 0.011, and the
    # percentile bootstrap is known to undercover a little at n=80 on skewed data (about 0.93);
    # [0.90, 0.985] is that known bias plus more than 2.5 standard errors on each side, and
    # excludes the coverages of a broken interval (0.68 for a one-sd band, 1.0 for a too wide one).
    rng = np.random.default_rng(12345)
    trials, hits = 400, 0
    for trial in range(trials):
        iv = stats.mean_interval(rng.exponential(1.0, size=80), resamples=1000, seed=trial)
        assert iv is not None and iv.low is not None and iv.high is not None
        hits += iv.low <= 1.0 <= iv.high
    assert 0.90 <= hits / trials <= 0.985


def test_mean_is_the_plain_mean_and_interval_brackets_it() -> None:
    values = [1.0, 2.0, 3.0, 4.0, np.nan]  # NaN: the metric does not apply to that item
    iv = stats.mean_interval(values, resamples=500, seed=1)
    assert iv is not None and iv.mean == pytest.approx(2.5) and iv.num_items == 4
    assert iv.low is not None and iv.high is not None and 1.0 <= iv.low <= 2.5 <= iv.high <= 4.0
    assert stats.mean_interval([np.nan, np.nan]) is None
    assert stats.mean_interval([np.nan]) is None


def test_one_user_gives_a_mean_without_interval() -> None:
    iv = stats.mean_interval([1.0, 2.0, 3.0], clusters=["u", "u", "u"])
    assert iv is not None and iv.mean == pytest.approx(2.0) and iv.low is None and iv.high is None


def test_same_seed_same_interval_and_seed_changes_it() -> None:
    values = np.random.default_rng(0).normal(size=200)
    assert stats.mean_interval(values, seed=3) == stats.mean_interval(values, seed=3)
    assert stats.mean_interval(values, seed=3) != stats.mean_interval(values, seed=4)


def test_clustered_resampling_is_wider_when_a_user_has_many_correlated_items() -> None:
    # 20 users x 50 items; a strong per-user effect makes items of one user alike, so the
    # information is in 20 users, not 1000 items: the item bootstrap is far too narrow.
    rng = np.random.default_rng(7)
    users = np.repeat([f"user{k}" for k in range(20)], 50)
    values = np.repeat(rng.normal(0, 3, size=20), 50) + rng.normal(0, 1, size=1000)
    clustered = stats.mean_interval(values, users, resamples=2000, seed=0)
    by_item = stats.mean_interval(values, None, resamples=2000, seed=0)
    assert clustered is not None and by_item is not None
    assert clustered.num_clusters == 20 and by_item.num_clusters == 1000
    assert clustered.mean == pytest.approx(by_item.mean)
    width = lambda iv: iv.high - iv.low  # noqa: E731
    assert width(clustered) > 3 * width(by_item)


def test_one_item_per_user_matches_the_item_bootstrap() -> None:
    values = np.random.default_rng(2).normal(size=300)
    clustered = stats.mean_interval(values, [f"u{k}" for k in range(300)], seed=5)
    by_item = stats.mean_interval(values, None, seed=5)
    assert clustered is not None and by_item is not None
    # Cluster codes are the sorted labels, so the draws land on other items: close, not equal.
    assert clustered.low == pytest.approx(by_item.low, abs=0.05)
    assert clustered.high == pytest.approx(by_item.high, abs=0.05)


def test_identical_runs_differ_by_zero_with_p_one() -> None:
    values = np.random.default_rng(1).uniform(0, 100, size=60)
    users = np.repeat([f"u{k}" for k in range(20)], 3)
    result = stats.paired_difference(values, values.copy(), users, resamples=1000, seed=0)
    assert result is not None and result.p_value == 1.0
    assert result.diff.mean == 0.0 and result.diff.low == 0.0 and result.diff.high == 0.0


def test_every_item_improved_gives_a_small_p_value() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.uniform(0, 50, size=60)
    improved = baseline + rng.uniform(0.5, 5.0, size=60)
    users = np.repeat([f"u{k}" for k in range(20)], 3)
    result = stats.paired_difference(improved, baseline, users, resamples=2000, seed=0)
    assert result is not None and result.p_value is not None and result.p_value < 0.05
    assert result.diff.low is not None and result.diff.low > 0
    worse = stats.paired_difference(baseline, improved, users, resamples=2000, seed=0)
    assert worse is not None and worse.p_value < 0.05 and worse.diff.high < 0  # two-sided


def test_p_value_is_about_uniform_without_a_difference() -> None:
    # Two runs drawn from one distribution: p < 0.05 should happen about 5% of the time.
    rng = np.random.default_rng(11)
    p_values = [stats.paired_difference(rng.normal(size=40), rng.normal(size=40),
                                        resamples=400, seed=k).p_value for k in range(200)]
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.12


def test_paired_skips_items_either_run_lacks_and_checks_shapes() -> None:
    result = stats.paired_difference([1.0, np.nan, 3.0, 5.0], [0.0, 1.0, np.nan, 4.0])
    assert result is not None and result.diff.num_items == 2 and result.diff.mean == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_many_metrics_at_once_match_one_at_a_time() -> None:
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(500, 3))
    matrix[::4, 1] = np.nan
    users = rng.integers(0, 50, size=500).astype(str)
    together = stats.mean_intervals(matrix, users, resamples=300, seed=9)
    assert together[1].num_items == 375
    alone = stats.mean_interval(matrix[:, 0], users, resamples=300, seed=9)
    # One set of resamples: column 0 sees the same draws (equal up to matrix-product rounding).
    assert alone is not None and together[0] is not None
    assert (together[0].low, together[0].high) == pytest.approx((alone.low, alone.high))


def test_few_users_get_the_exact_permutation_p_value() -> None:
    # 5 users, all better: only the observed labelling and its mirror are as extreme: 2 / 32.
    result = stats.paired_difference([2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert result is not None and result.p_value == pytest.approx(2 / 32)
    same = stats.paired_difference([1.0, 2.0], [1.0, 2.0])
    assert same is not None and same.p_value == 1.0


def test_weighted_columns_pool_samples_and_root_gives_an_rmse() -> None:
    # Item means with their sample counts as weights: the pooled mean over all samples.
    item_means = np.array([1.0, 3.0, np.nan])
    counts = np.array([1.0, 3.0, 5.0])  # the NaN item counts for nothing, whatever its weight
    iv = stats.mean_intervals(item_means[:, None], weights=counts[:, None], resamples=200)[0]
    assert iv is not None and iv.mean == pytest.approx((1 * 1 + 3 * 3) / 4) and iv.num_items == 2
    # Per-item mean squared errors, rooted: sqrt((1*4 + 3*1) / 4), the pooled RMSE.
    rmse = stats.mean_intervals(np.array([[4.0], [1.0]]), weights=np.array([[1.0], [3.0]]),
                                root=[True], resamples=200)[0]
    assert rmse is not None and rmse.mean == pytest.approx(np.sqrt(7 / 4))


def test_weighted_paired_difference_is_the_difference_of_pooled_statistics() -> None:
    rng = np.random.default_rng(8)
    users = np.repeat([f"u{k}" for k in range(30)], 2)
    base, base_w = rng.uniform(0, 2, size=60), rng.integers(1, 5, size=60).astype(float)
    run, run_w = base + 0.5, rng.integers(1, 5, size=60).astype(float)
    result = stats.paired_differences(run[:, None], base[:, None], users, resamples=500,
                                      weights=run_w[:, None], baseline_weights=base_w[:, None])[0]
    pooled = np.sum(run * run_w) / run_w.sum() - np.sum(base * base_w) / base_w.sum()
    assert result is not None and result.diff.mean == pytest.approx(pooled)
    assert result.p_value is not None and result.p_value < 0.05
    same = stats.paired_differences(base[:, None], base[:, None], users, weights=base_w[:, None],
                                    baseline_weights=base_w[:, None])[0]
    assert same is not None and same.diff.mean == 0.0 and same.p_value == 1.0

"""Bootstrap intervals, paired comparisons and detectable differences against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vprdistill.eval.recall import recall_at_n
from vprdistill.eval.statistics import (
    bootstrap_means,
    detectable_difference,
    mcnemar_exact,
    mean_interval,
    paired_comparison,
    per_query_hits,
    percentile_interval,
    recall_interval,
    recall_intervals,
)

Z95 = 1.959963984540054  # two-sided 95 % standard normal quantile
T95_2DOF = 4.302652729749464  # two-sided 95 % Student-t quantile, 2 degrees of freedom


def test_bootstrap_interval_of_a_bernoulli_sample_matches_the_normal_approximation() -> None:
    hits = np.zeros(2000, dtype=bool)
    hits[:600] = True  # p = 0.3
    interval = recall_interval(hits, seed=3)
    half = 100 * Z95 * math.sqrt(0.3 * 0.7 / 2000)  # 2.01 points
    assert interval.estimate == pytest.approx(30.0)
    assert interval.low == pytest.approx(30.0 - half, abs=0.15)
    assert interval.high == pytest.approx(30.0 + half, abs=0.15)
    assert interval.num_queries == 2000 and interval.resamples == 10_000 and interval.level == 0.95


def test_percentile_interval_on_a_hand_case() -> None:
    # 0, 1, ..., 100: with linear interpolation the 5 % and 95 % quantiles are 5 and 95.
    low, high = percentile_interval(np.arange(101.0), level=0.90)
    assert (float(low), float(high)) == (pytest.approx(5.0), pytest.approx(95.0))
    # One hit in three queries: a resample holds k hits with P = C(3,k) 2^(3-k) / 27, so
    # P(k=0) = 8/27 > 5 % and P(k <= 2) = 26/27 lies between 95 % and 97.5 %.
    ninety = recall_interval([1, 0, 0], level=0.90, seed=0)
    ninety_five = recall_interval([1, 0, 0], level=0.95, seed=0)
    assert (ninety.low, ninety.high) == (0.0, pytest.approx(200 / 3))
    assert (ninety_five.low, ninety_five.high) == (0.0, 100.0)


def test_bootstrap_resamples_are_queries_drawn_with_replacement() -> None:
    values = np.array([0.0, 1.0, 3.0])
    means = bootstrap_means(values, resamples=60_000, seed=1)
    # Each resample mean takes one of the 10 values (sum of 3 draws)/3; its mean is the sample mean
    # and its variance the plug-in variance / M.
    assert means.mean() == pytest.approx(values.mean(), abs=0.01)
    assert means.var() == pytest.approx(values.var() / 3, rel=0.03)
    assert set(np.round(3 * means).astype(int)) <= {0, 1, 2, 3, 4, 5, 6, 7, 9}


def test_seeded_and_shared_across_columns() -> None:
    rng = np.random.default_rng(5)
    hits1, hits5 = rng.random(300) < 0.2, rng.random(300) < 0.5
    first, again = recall_intervals({1: hits1, 5: hits5}, seed=7), recall_intervals({1: hits1, 5: hits5}, seed=7)
    assert first == again
    # The index draws depend on the seed and the query count only: one N alone sees the same resamples.
    assert recall_interval(hits5, seed=7) == first[5]
    assert list(first) == [1, 5]
    together = bootstrap_means(np.stack([hits1, hits5], axis=1), resamples=500, seed=7)
    np.testing.assert_array_equal(together[:, 1], bootstrap_means(hits5, resamples=500, seed=7))
    assert not np.array_equal(bootstrap_means(hits5, resamples=500, seed=8), together[:, 1])


def test_mcnemar_against_a_hand_binomial() -> None:
    # 8 against 2 discordant queries: two-sided P = 2 * P(X <= 2), X ~ Bin(10, 1/2).
    hand = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10
    assert hand == pytest.approx(0.109375)
    assert mcnemar_exact(8, 2) == pytest.approx(hand, rel=1e-12)
    assert mcnemar_exact(2, 8) == pytest.approx(hand, rel=1e-12)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(12, 0) == pytest.approx(2 / 2**12)
    with pytest.raises(ValueError, match="a_only must be a non-negative count"):
        mcnemar_exact(-1, 3)


def test_paired_comparison_counts_and_interval() -> None:
    a = np.array([1] * 30 + [1] * 8 + [0] * 2 + [0] * 60)
    b = np.array([1] * 30 + [0] * 8 + [1] * 2 + [0] * 60)
    result = paired_comparison(a, b, seed=2)
    assert (result.a_only, result.b_only, result.both, result.neither) == (8, 2, 30, 60)
    assert result.difference == pytest.approx(6.0)
    assert result.p_value == pytest.approx(mcnemar_exact(8, 2))
    # The per-query differences d are +1 (8), -1 (2), 0 (90): the normal interval of their mean.
    d = a - b
    half = 100 * Z95 * d.std() / math.sqrt(len(d))
    assert result.low == pytest.approx(6.0 - half, abs=0.6)
    assert result.high == pytest.approx(6.0 + half, abs=0.6)
    # Queries both find or both miss cancel: the paired interval is narrower than an unpaired one.
    unpaired = 100 * Z95 * math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert result.half_width < unpaired
    swapped = paired_comparison(b, a, seed=2)
    assert swapped.difference == pytest.approx(-6.0) and swapped.p_value == result.p_value
    with pytest.raises(ValueError, match="same queries"):
        paired_comparison(a, b[:-1])
    with pytest.raises(ValueError, match="hits_a must hold only 0/1"):
        paired_comparison(a * 2, b)


def test_detectable_difference_is_the_two_sided_threshold_of_independent_estimates() -> None:
    assert detectable_difference(20.0, 480) == pytest.approx(100 * Z95 * math.sqrt(2 * 0.2 * 0.8 / 480))
    # Monte Carlo: two independent splits of 480 queries at the same recall differ by more than
    # the detectable difference in about 5 % of draws.
    rng = np.random.default_rng(0)
    gaps = 100 * (rng.binomial(480, 0.2, 100_000) - rng.binomial(480, 0.2, 100_000)) / 480
    beyond = np.mean(np.abs(gaps) > detectable_difference(20.0, 480))
    assert 0.035 < beyond < 0.065
    assert detectable_difference(0.0, 100) == 0.0
    with pytest.raises(ValueError, match="percentage"):
        detectable_difference(120.0, 10)


def test_mean_interval_over_seeds_by_hand() -> None:
    mean, low, high = mean_interval([10.0, 12.0, 14.0])
    half = T95_2DOF * 2.0 / math.sqrt(3)  # sample std 2 over 3 seeds
    assert mean == 12.0
    assert (low, high) == (pytest.approx(12.0 - half), pytest.approx(12.0 + half))
    single = mean_interval([7.0])
    assert single[0] == 7.0 and math.isnan(single[1]) and math.isnan(single[2])


def test_per_query_hits_give_recall_at_n() -> None:
    predictions = np.array([[3, 1, 0], [2, 0, 1], [0, 1, 2], [1, 2, 3]])
    positives = [np.array([1]), np.array([5]), np.array([0, 2]), np.array([], dtype=np.int64)]
    hits = per_query_hits(predictions, positives, [1, 2])
    assert hits[1].tolist() == [False, False, True, False]
    assert hits[2].tolist() == [True, False, True, False]
    expected, _ = recall_at_n(predictions, positives, [1, 2])
    assert {n: 100 * h.mean() for n, h in hits.items()} == expected
    excluded = per_query_hits(predictions, positives, [2], convention="exclude")
    assert excluded[2].tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: recall_interval([]), "non-empty 1-D"),
        (lambda: recall_interval([0, 1], level=95), "level must lie strictly between 0 and 1"),
        (lambda: recall_interval([0, 1], resamples=0), "resamples must be a positive integer"),
        (lambda: recall_intervals({1: [0, 1], 5: [1]}), "same queries"),
        (lambda: recall_intervals({}), "at least one N"),
    ],
)
def test_bad_input_is_named(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()

"""How sure a Recall@N figure is: bootstrap intervals over queries, paired comparisons, detectable differences.

A Recall@N is the mean of one 0/1 outcome per query (was a positive among its
top N?), so its uncertainty comes from which queries the test split happens to
hold. Everything here works on those per-query hit indicators
(:func:`per_query_hits`):

- :func:`recall_interval` / :func:`recall_intervals`: a percentile bootstrap
  interval of Recall@N, resampling queries with replacement (seeded; 10,000
  resamples by default).
- :func:`paired_comparison`: two methods evaluated on the *same* queries. The
  interval of their difference resamples queries and keeps each query's pair
  of outcomes together, so what both find (or both miss) cancels; the exact
  McNemar test asks whether the queries only one of them finds split evenly.
- :func:`detectable_difference`: the smallest gap between two recall figures
  in a table that is significant at the given level, by the normal
  approximation for two *independent* estimates at the same recall,
  ``z·sqrt(2·p·(1−p)/n)``. It is what a reader of a table can use without the
  per-query outcomes; a paired comparison of the same queries is usually
  tighter, and its own interval (:class:`PairedComparison`) is the better test
  when the outcomes are at hand.
- :func:`mean_interval`: a Student-t interval of a mean over runs (e.g. seeds
  of initialisation), which measures the spread between runs, not the query
  sampling.

All percentages are in percent (0-100) and differences in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import stats

from vprdistill.eval.recall import DEFAULT_QUERIES_WITHOUT_POSITIVE, QueriesWithoutPositive, query_ranks

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
# Index draws per chunk of resamples, to bound memory (8 MiB of int64) whatever the split size.
_DRAWS_PER_CHUNK = 1 << 20

Key = TypeVar("Key")


def per_query_hits(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int],
    convention: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> dict[int, np.ndarray]:
    """Per query, whether a positive is among its top N: ``{N: (M',) bool}``.

    Args:
        predictions: (M, K) database indices, best first, K ≥ max(ns).
        positives: per query, the database indices within the threshold.
        ns: the N of Recall@N.
        convention: ``count-as-miss`` keeps all M queries (one without a
            positive is a miss); ``exclude`` leaves those out (M' < M), as
            :func:`~vprdistill.eval.recall.recall_at_n` does.

    Returns:
        ``{N: hits}``; ``100 * hits.mean()`` is Recall@N.
    """
    convention, ns, ranks, has_positive = query_ranks(predictions, positives, ns, convention, "hits")
    if convention == "exclude":
        ranks = ranks[has_positive]
    return {n: ranks < n for n in ns}


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level}")
    return float(level)


def _as_hits(hits: Any, name: str = "hits") -> np.ndarray:
    """A non-empty 1-D 0/1 array as float64 ``(M,)``."""
    array = np.asarray(hits)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-query 0/1 outcomes, got shape {array.shape}")
    values = array.astype(np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold only 0/1 (or False/True) per query, got values {np.unique(values)[:5]}")
    return values


def bootstrap_means(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the rows of ``values``.

    Args:
        values: (M,) or (M, J): one row per query; the J columns are resampled
            together (the same queries for every column).
        resamples: B.
        seed: of ``numpy.random.default_rng``; the index draws depend only on
            ``seed``, M and B, so columns passed together or apart see the same resamples.

    Returns:
        (B,) or (B, J) float64.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError(f"values must be (M,) or (M, J) with M > 0, got shape {values.shape}")
    if isinstance(resamples, bool) or int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    resamples = int(resamples)
    rng = np.random.default_rng(seed)
    count = len(values)
    per_chunk = max(1, _DRAWS_PER_CHUNK // count)
    means = np.empty((resamples,) + values.shape[1:], dtype=np.float64)
    for start in range(0, resamples, per_chunk):
        stop = min(start + per_chunk, resamples)
        indices = rng.integers(0, count, size=(stop - start, count))
        means[start:stop] = values[indices].mean(axis=1)
    return means


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of ``samples`` along axis 0 (linear interpolation)."""
    level = _check_level(level)
    samples = np.asarray(samples, dtype=np.float64)
    low, high = np.quantile(samples, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return low, high


class _Interval:
    """What the interval records share: ``low`` and ``high`` in percent (points), and their JSON form."""

    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width, in percentage points (of a difference: the smallest these two could show)."""
        return (self.high - self.low) / 2.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class RecallInterval(_Interval):
    """Recall@N in percent with its bootstrap interval over queries."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    num_queries: int

    def __str__(self) -> str:
        return f"{self.estimate:.1f} [{self.low:.1f}, {self.high:.1f}]"


def recall_intervals(
    hits: Mapping[Key, Any],
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[Key, RecallInterval]:
    """Bootstrap intervals of several Recall@N of the same queries, from one set of resamples.

    Args:
        hits: ``{N: (M,) 0/1}``, every array over the same M queries (e.g. :func:`per_query_hits`).
        level, resamples, seed: see :func:`recall_interval`.

    Returns:
        ``{N: RecallInterval}``, in the order of ``hits``.
    """
    if not hits:
        raise ValueError("recall_intervals: give the hits of at least one N")
    keys = list(hits)
    columns = [_as_hits(hits[key], f"hits[{key!r}]") for key in keys]
    if len({len(c) for c in columns}) != 1:
        raise ValueError(f"hits of every N must cover the same queries, got lengths {[len(c) for c in columns]}")
    matrix = np.stack(columns, axis=1)
    means = bootstrap_means(matrix, resamples, seed)
    low, high = percentile_interval(means, level)
    estimate = matrix.mean(axis=0)
    return {
        key: RecallInterval(
            estimate=100.0 * float(estimate[j]),
            low=100.0 * float(low[j]),
            high=100.0 * float(high[j]),
            level=float(level),
            resamples=int(resamples),
            num_queries=len(matrix),
        )
        for j, key in enumerate(keys)
    }


def recall_interval(
    hits: Any, level: float = DEFAULT_LEVEL, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> RecallInterval:
    """Recall (percent) of per-query ``hits`` (M,) 0/1, with its percentile bootstrap interval.

    Queries are resampled with replacement ``resamples`` times (numpy's
    ``default_rng(seed)``); the interval is the central ``level`` share of the
    resampled recalls.
    """
    return recall_intervals({0: hits}, level, resamples, seed)[0]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``a_only`` of ``a_only + b_only`` against 1/2.

    ``a_only``: queries the first method finds and the second misses;
    ``b_only``: the reverse. With no discordant query there is no evidence
    either way and the p-value is 1.
    """
    for name, value in (("a_only", a_only), ("b_only", b_only)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative count, got {value!r}")
    discordant = int(a_only) + int(b_only)
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(int(a_only), discordant, 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedComparison(_Interval):
    """Method A against method B on the same queries (recall A − recall B, percentage points)."""

    difference: float
    low: float
    high: float
    level: float
    resamples: int
    num_queries: int
    a_only: int  # queries A finds and B misses
    b_only: int  # queries B finds and A misses
    both: int
    neither: int
    p_value: float  # exact McNemar test on the a_only / b_only split

    def __str__(self) -> str:
        return f"{self.difference:+.1f} [{self.low:+.1f}, {self.high:+.1f}], p = {self.p_value:.3g}"


def paired_comparison(
    hits_a: Any,
    hits_b: Any,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedComparison:
    """Compare two methods' per-query outcomes on the same queries.

    Args:
        hits_a, hits_b: (M,) 0/1, query i of one the same query as query i of the other.
        level, resamples, seed: of the bootstrap interval of the difference.

    Returns:
        A :class:`PairedComparison`: the recall difference A − B with the
        percentile bootstrap interval of the mean per-query difference
        (queries resampled, each query's two outcomes kept together), the
        counts of the 2×2 table and the exact McNemar p-value.
    """
    a, b = _as_hits(hits_a, "hits_a"), _as_hits(hits_b, "hits_b")
    if len(a) != len(b):
        raise ValueError(f"hits_a and hits_b must cover the same queries, got {len(a)} and {len(b)}")
    differences = bootstrap_means(a - b, resamples, seed)
    low, high = percentile_interval(differences, level)
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    return PairedComparison(
        difference=100.0 * float(np.mean(a - b)),
        low=100.0 * float(low),
        high=100.0 * float(high),
        level=float(level),
        resamples=int(resamples),
        num_queries=len(a),
        a_only=a_only,
        b_only=b_only,
        both=int(np.sum((a == 1) & (b == 1))),
        neither=int(np.sum((a == 0) & (b == 0))),
        p_value=mcnemar_exact(a_only, b_only),
    )


def detectable_difference(recall: float, num_queries: int, level: float = DEFAULT_LEVEL) -> float:
    """Smallest recall gap (percentage points) between two table entries that is significant at ``level``.

    The normal approximation for two independent estimates of the same recall
    ``p`` over ``n`` queries each: ``z · sqrt(2 · p · (1 − p) / n)``, with ``z``
    the two-sided standard normal quantile (1.96 at 95 %). A gap smaller than
    this is within the noise of the query sample.

    Args:
        recall: p in percent (the recall the two entries are near).
        num_queries: n, the queries behind each entry.
        level: e.g. 0.95.
    """
    level = _check_level(level)
    if not 0.0 <= recall <= 100.0:
        raise ValueError(f"recall is a percentage in [0, 100], got {recall}")
    if int(num_queries) != num_queries or num_queries < 1:
        raise ValueError(f"num_queries must be a positive integer, got {num_queries!r}")
    p = recall / 100.0
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    return 100.0 * z * math.sqrt(2.0 * p * (1.0 - p) / num_queries)


def mean_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> tuple[float, float, float]:
    """Mean of ``values`` (e.g. one figure per seed) with its Student-t interval ``(mean, low, high)``.

    ``mean ± t · s / sqrt(k)``, ``s`` the sample standard deviation (k − 1
    degrees of freedom) and ``t`` the two-sided quantile; one value gives no
    interval (``low`` and ``high`` are NaN).
    """
    level = _check_level(level)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {array.shape}")
    mean = float(array.mean())
    if array.size == 1:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, array.size - 1)) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return mean, mean - half, mean + half


__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "PairedComparison",
    "RecallInterval",
    "bootstrap_means",
    "detectable_difference",
    "mcnemar_exact",
    "mean_interval",
    "paired_comparison",
    "per_query_hits",
    "percentile_interval",
    "recall_interval",
    "recall_intervals",
]

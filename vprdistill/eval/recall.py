"""Recall@N: the share of queries whose top N predictions hold a positive (METHODS.md §1).

A query with no database image within the threshold can never be right. Two
conventions exist for it: ``count-as-miss`` keeps it in the denominator (as
VPR-methods-evaluation, deep-visual-geo-localization-benchmark and gsv-cities
do) and ``exclude`` leaves it out (as the TSCM code does). The default is
``count-as-miss``; either way the number of such queries is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

DEFAULT_RECALL_NS = (1, 5, 10, 20)

QueriesWithoutPositive = Literal["count-as-miss", "exclude"]
QUERIES_WITHOUT_POSITIVE: tuple[str, ...] = ("count-as-miss", "exclude")
DEFAULT_QUERIES_WITHOUT_POSITIVE: QueriesWithoutPositive = "count-as-miss"


def check_recall_ns(ns: Sequence[int]) -> tuple[int, ...]:
    """Return ``ns`` sorted and de-duplicated; every N must be a positive integer."""
    values = tuple(sorted({int(n) for n in ns}))
    if not values:
        raise ValueError("recall: give at least one N")
    if values[0] < 1:
        raise ValueError(f"recall: every N must be at least 1, got {list(ns)}")
    return values


def check_convention(convention: str, field: str = "queries_without_positive") -> QueriesWithoutPositive:
    """``convention`` if it is one of :data:`QUERIES_WITHOUT_POSITIVE`, else a ``ValueError`` naming ``field``."""
    if convention not in QUERIES_WITHOUT_POSITIVE:
        raise ValueError(f"{field} must be one of {', '.join(QUERIES_WITHOUT_POSITIVE)}, got {convention!r}")
    return convention  # type: ignore[return-value]


def first_positive_rank(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Rank (0-based) of the first positive among each query's predictions.

    Args:
        predictions: (M, K) database indices, best first; negative entries never match.
        positives: per query, the database indices that count as right.

    Returns:
        (M,) int64: the rank of the first right prediction, or K when none of the K is right.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"predictions must be a 2-D integer array (M, K), got {predictions.dtype} {predictions.shape}")
    num_queries, num_predicted = predictions.shape
    if len(positives) != num_queries:
        raise ValueError(f"predictions has {num_queries} queries but positives has {len(positives)}")
    counts = np.fromiter((len(p) for p in positives), dtype=np.int64, count=num_queries)
    positive_ids = (
        np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in positives])
        if counts.sum()
        else np.zeros(0, np.int64)
    )
    predictions = predictions.astype(np.int64, copy=False)
    # One key per (query, database index) pair turns "is this prediction among
    # the query's positives" into a single np.isin over all queries at once.
    stride = int(max(predictions.max(initial=0), positive_ids.max(initial=0))) + 1
    positive_keys = np.repeat(np.arange(num_queries, dtype=np.int64), counts) * stride + positive_ids
    prediction_keys = np.arange(num_queries, dtype=np.int64)[:, None] * stride + predictions
    hits = np.isin(prediction_keys, positive_keys) & (predictions >= 0)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), num_predicted)


def query_ranks(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int],
    convention: str,
    what: str = "recall",
) -> tuple[QueriesWithoutPositive, tuple[int, ...], np.ndarray, np.ndarray]:
    """Checked ``convention`` and ``ns``, then per query its :func:`first_positive_rank` and whether it has a positive.

    ``predictions`` ``(M, K)`` must hold at least max(ns) columns; ``what`` names the figure in that error.
    Returns ``(convention, ns, ranks (M,) int64, has_positive (M,) bool)``.
    """
    convention = check_convention(convention, "convention")
    ns = check_recall_ns(ns)
    predictions = np.asarray(predictions)
    if predictions.ndim == 2 and ns[-1] > predictions.shape[1]:
        raise ValueError(f"{what}@{ns[-1]} needs at least {ns[-1]} predictions per query, got {predictions.shape[1]}")
    ranks = first_positive_rank(predictions, positives)
    has_positive = np.fromiter((len(p) > 0 for p in positives), dtype=bool, count=len(positives))
    return convention, ns, ranks, has_positive


def recall_at_n(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_RECALL_NS,
    convention: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> tuple[dict[int, float], int]:
    """Recall@N in percent.

    Args:
        predictions: (M, K) database indices ranked best first, K >= max(ns).
        positives: per query, an array of the database indices within the threshold.
        ns: the N values to report.
        convention: what a query without any positive counts for:
            ``count-as-miss`` divides by all M queries (such a query is never
            right), ``exclude`` divides by the queries that have a positive.

    Returns:
        ``({N: percent}, number of queries without any positive)``.

    Raises:
        ValueError: on malformed input, and with ``exclude`` when no query has a
            positive (the percentage is then 0 / 0).
    """
    convention, ns, ranks, has_positive = query_ranks(predictions, positives, ns, convention, "recall")
    if len(ranks) == 0:
        raise ValueError("recall: there are no queries")
    num_without = int((~has_positive).sum())
    if convention == "exclude":
        if not has_positive.any():
            raise ValueError(
                f"none of the {len(positives)} queries has a positive within the threshold: recall excluding them "
                "is undefined (is the distance threshold too small, or are the UTM coordinates wrong?)"
            )
        ranks = ranks[has_positive]
    # A query without positives has rank K (no prediction matched), so it counts as a miss for every N.
    recalls = {n: float(100.0 * np.count_nonzero(ranks < n) / len(ranks)) for n in ns}
    return recalls, num_without

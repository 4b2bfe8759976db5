"""Recall@N against a per-query brute-force count on random positions and descriptors, under both
conventions for queries without a positive."""

from __future__ import annotations

import numpy as np
import pytest

from vprdistill.eval.recall import first_positive_rank, recall_at_n
from vprdistill.retrieval.search import exact_search


def brute_force_recall(predictions, utm_db, utm_q, threshold, ns, convention):
    counted, hits = 0, {n: 0 for n in ns}
    without = 0
    for query in range(len(utm_q)):
        distances = np.sqrt(((utm_db - utm_q[query]) ** 2).sum(axis=1))
        positives = set(np.flatnonzero(distances <= threshold).tolist())
        if not positives:
            without += 1
            counted += convention == "count-as-miss"
            continue
        counted += 1
        for n in ns:
            hits[n] += any(int(p) in positives for p in predictions[query, :n])
    return {n: 100.0 * hits[n] / counted for n in ns}, without


def random_problem(seed: int, num_db: int = 400, num_q: int = 120, dim: int = 16):
    rng = np.random.default_rng(seed)
    utm_db = rng.uniform(0, 1000, (num_db, 2))
    # Queries near database images, plus some far outside the map: those have no positive.
    utm_q = utm_db[rng.integers(0, num_db, num_q)] + rng.normal(0, 20, (num_q, 2))
    utm_q[: num_q // 10] += 5000.0
    db = rng.standard_normal((num_db, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    # Query descriptors are noisy copies of a nearby database image's, so recall is neither 0 nor 100.
    nearest = np.argmin(((utm_q[:, None] - utm_db[None]) ** 2).sum(-1), axis=1)
    q = db[nearest] + rng.normal(0, 0.35, (num_q, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return utm_db, utm_q, db, q


@pytest.mark.parametrize("convention", ["count-as-miss", "exclude"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed, convention):
    utm_db, utm_q, db, q = random_problem(seed)
    ns, threshold = (1, 5, 10, 20), 25.0
    _, predictions = exact_search(db, q, 20)
    distances = np.sqrt(((utm_q[:, None] - utm_db[None]) ** 2).sum(-1))
    positives = [np.flatnonzero(row <= threshold) for row in distances]
    recalls, without = recall_at_n(predictions, positives, ns, convention=convention)
    expected, expected_without = brute_force_recall(predictions, utm_db, utm_q, threshold, ns, convention)
    assert without == expected_without and without >= len(utm_q) // 10
    assert recalls.keys() == expected.keys()
    for n in ns:
        assert recalls[n] == pytest.approx(expected[n])
    values = [recalls[n] for n in ns]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert values == sorted(values), "recall must not decrease with N"
    assert 0.0 < values[0] < 100.0


def test_first_positive_rank_and_no_false_matches_across_queries():
    predictions = np.array([[3, 1, 2], [0, 4, 5], [-1, 7, 8]])
    positives = [np.array([2]), np.array([9]), np.array([8, 7])]
    # Query 2's "-1" (no prediction) must not match query 1's positive 9, its neighbour
    # in the (query, index) key space: rank 1 (its 7), not 0.
    np.testing.assert_array_equal(first_positive_rank(predictions, positives), [2, 3, 1])
    recalls, without = recall_at_n(predictions, positives, ns=(1, 2, 3))
    assert without == 0
    assert recalls == {1: 0.0, 2: pytest.approx(100 / 3), 3: pytest.approx(200 / 3)}


def test_queries_without_positive_are_excluded_and_counted():
    predictions = np.array([[0, 1], [2, 3], [1, 0]])
    positives = [np.array([0]), np.array([], dtype=np.int64), np.array([0])]
    recalls, without = recall_at_n(predictions, positives, ns=(1, 2), convention="exclude")
    assert without == 1
    assert recalls == {1: 50.0, 2: 100.0}
    # Counted as a miss, the query without a positive stays in the denominator: 1/3 and 2/3.
    recalls, without = recall_at_n(predictions, positives, ns=(1, 2))
    assert without == 1
    assert recalls == {1: pytest.approx(100 / 3), 2: pytest.approx(200 / 3)}


def test_the_two_conventions_on_a_hand_worked_case():
    # Query 0: right at rank 1. Query 1: right at rank 2. Query 3: never right.
    # Queries 2 and 4 have no positive at all (their predictions are irrelevant).
    predictions = np.array([[4, 1, 2], [0, 7, 3], [1, 2, 3], [5, 6, 8], [0, 1, 2]])
    positives = [np.array([4]), np.array([2, 7]), np.array([], np.int64), np.array([9]), np.array([], np.int64)]
    miss, without = recall_at_n(predictions, positives, ns=(1, 2, 3), convention="count-as-miss")
    assert without == 2
    assert miss == {1: 20.0, 2: 40.0, 3: 40.0}  # 1, 2, 2 right of all 5 queries
    excluded, without = recall_at_n(predictions, positives, ns=(1, 2, 3), convention="exclude")
    assert without == 2
    assert excluded == {1: pytest.approx(100 / 3), 2: pytest.approx(200 / 3), 3: pytest.approx(200 / 3)}
    assert recall_at_n(predictions, positives, ns=(1, 2, 3)) == (miss, 2), "count-as-miss is the default"


def test_no_query_with_a_positive():
    predictions = np.array([[0, 1], [1, 0]])
    nothing = [np.array([], np.int64)] * 2
    with pytest.raises(ValueError, match="none of the 2 queries has a positive"):
        recall_at_n(predictions, nothing, ns=(1, 2), convention="exclude")
    assert recall_at_n(predictions, nothing, ns=(1, 2), convention="count-as-miss") == ({1: 0.0, 2: 0.0}, 2)


def test_bad_inputs_are_refused():
    predictions = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="recall@5 needs at least 5 predictions"):
        recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(1, 5))
    with pytest.raises(ValueError, match="positives has 1"):
        recall_at_n(predictions, [np.array([0])], ns=(1,))
    with pytest.raises(ValueError, match="convention must be one of count-as-miss, exclude, got 'drop'"):
        recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(1,), convention="drop")
    with pytest.raises(ValueError, match="no queries"):
        recall_at_n(np.zeros((0, 2), np.int64), [], ns=(1,))
    with pytest.raises(ValueError, match="at least 1"):
        recall_at_n(predictions, [np.array([0]), np.array([1])], ns=(0, 1))
    with pytest.raises(ValueError, match="integer"):
        recall_at_n(predictions.astype(float), [np.array([0]), np.array([1])], ns=(1,))

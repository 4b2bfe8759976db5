"""Exact search: both backends agree with a brute-force NumPy ranking; bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._search_helpers import ONEDNN_MIN_QUERIES, onednn_search
from vprdistill.retrieval.search import SEARCH_BACKENDS, exact_search


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    array = rng.standard_normal((rows, dim)).astype(np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def brute_force(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
@pytest.mark.parametrize(
    "num_queries, batch_size",
    # 7: NumPy blocks only; 150 in blocks of 100 and 50: a oneDNN block, then a NumPy one.
    [(40, None), (40, 7), (150, None), (150, 100)],
)
def test_exact_search_matches_brute_force(backend, num_queries, batch_size):
    rng = np.random.default_rng(0)
    database, queries = unit_rows(rng, 300, 32), unit_rows(rng, num_queries, 32)
    scores, indices = exact_search(database, queries, 10, batch_size=batch_size, backend=backend)
    expected_scores, expected_indices = brute_force(database, queries, 10)
    assert scores.shape == indices.shape == (num_queries, 10)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    # Ranking by inner product on unit vectors is ranking by L2 distance.
    l2 = np.linalg.norm(queries[:, None, :] - database[None, :, :], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(l2, axis=1, kind="stable")[:, :10])


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_single_query_and_k_clipped_to_database_size(backend):
    rng = np.random.default_rng(1)
    database, query = unit_rows(rng, 6, 16), unit_rows(rng, 1, 16)
    scores, indices = exact_search(database, query, 50, backend=backend)
    assert indices.shape == (1, 6)
    assert sorted(indices[0].tolist()) == list(range(6))
    assert np.all(np.diff(scores[0]) <= 0)
    np.testing.assert_array_equal(indices, brute_force(database, query, 6)[1])


@pytest.mark.parametrize("min_queries", [1, ONEDNN_MIN_QUERIES, 10**9])
def test_benchmarked_onednn_path_matches_brute_force(min_queries):
    # 1: every block through oneDNN (where available); 10**9: NumPy's BLAS only.
    rng = np.random.default_rng(4)
    database, queries = unit_rows(rng, 500, 64), unit_rows(rng, 90, 64)
    search = onednn_search(database, min_queries)
    for rows in (90, 1, 30):
        scores, indices = search(queries[:rows], 15)
        expected_scores, expected_indices = brute_force(database, queries[:rows], 15)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_bad_input_gives_clear_errors(backend):
    rng = np.random.default_rng(3)
    database, queries = unit_rows(rng, 20, 8), unit_rows(rng, 3, 8)
    with pytest.raises(ValueError, match="2-D"):
        exact_search(database[0], queries, 3, backend=backend)
    with pytest.raises(ValueError, match="dimension"):
        exact_search(database, unit_rows(rng, 3, 9), 3, backend=backend)
    with pytest.raises(ValueError, match="k must be at least 1"):
        exact_search(database, queries, 0, backend=backend)
    with pytest.raises(ValueError, match="empty"):
        exact_search(np.zeros((0, 8), np.float32), queries, 3, backend=backend)
    with pytest.raises(ValueError, match="real numbers"):
        exact_search(database.astype(str), queries, 3, backend=backend)
    bad_database = database.copy()
    bad_database[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"database descriptors contain NaN or inf \(rows \[7\]"):
        exact_search(bad_database, queries, 3, backend=backend)
    many_queries = unit_rows(rng, ONEDNN_MIN_QUERIES + 1, 8)
    with pytest.raises(ValueError, match=r"database descriptors contain NaN or inf \(rows \[7\]"):
        exact_search(bad_database, many_queries, 3, backend=backend)
    bad_queries = queries.copy()
    bad_queries[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"query descriptors contain NaN or inf \(rows \[1\]"):
        exact_search(database, bad_queries, 3, backend=backend)
    with pytest.raises(ValueError, match="unknown search backend"):
        exact_search(database, queries, 3, backend="annoy")

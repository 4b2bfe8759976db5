"""Exact nearest-neighbour search on L2-normalised descriptors.

On unit vectors ``||a - b||² = 2 - 2 a·b``, so ranking a database by inner
product (higher is better) is exactly its L2 ranking.

Two backends give the same ranking:

- ``matmul`` (default): a float32 matrix product (NumPy's BLAS), then
  ``np.argpartition`` and a sort of the top k only. Queries go in blocks, so the
  score matrix of one block stays within a fixed memory budget; a single query
  is a matrix-vector product that reads the database once. Plain float32
  arithmetic: the scores agree with faiss to rounding.
- ``faiss``: a faiss flat inner-product index
  (``vprdistill.retrieval.approximate.build_index``), kept as the reference.

``benchmarks/_search_helpers.py`` times a oneDNN product (a private torch
operator) against both.
"""

from __future__ import annotations

import numpy as np

SEARCH_BACKENDS = ("matmul", "faiss")

# Bound on the (block, N) float32 score matrix of one block of queries.
_SCORE_BLOCK_BYTES = 256 * 2**20


def _as_descriptors(array: np.ndarray, name: str) -> np.ndarray:
    """Check an (N, D) descriptor array and return it as C-contiguous float32."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has descriptors of dimension 0")
    return np.ascontiguousarray(array, dtype=np.float32)


def _raise_non_finite(database: np.ndarray, queries: np.ndarray) -> None:
    """Name the array whose values made the scores non-finite."""
    for name, array in (("query", queries), ("database", database)):
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if bad_rows.size:
            more = ", ..." if bad_rows.size > 5 else ""
            rows = ", ".join(str(r) for r in bad_rows[:5])
            raise ValueError(f"{name} descriptors contain NaN or inf (rows [{rows}{more}] of {len(array)})")
    raise ValueError("inner products overflowed float32: are the descriptors L2-normalised?")


def _top_k_of_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns of each row of ``scores`` (B, N), best first, ties by lower index."""
    num_columns = scores.shape[1]
    if k < num_columns:
        candidates = np.argpartition(scores, num_columns - k, axis=1)[:, num_columns - k :]
    else:
        candidates = np.broadcast_to(np.arange(num_columns), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    return (
        np.take_along_axis(candidate_scores, order, axis=1),
        np.take_along_axis(candidates, order, axis=1).astype(np.int64, copy=False),
    )


def exact_search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    batch_size: int | None = None,
    backend: str = "matmul",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-nearest-neighbour search by inner product on L2-normalised descriptors.

    Args:
        database: (N, D) float32 descriptors.
        queries: (M, D) float32 descriptors.
        k: neighbours per query; clipped to N.
        batch_size: queries per block (bounds memory to batch_size × N floats;
            default: as many as fit a 256 MiB score matrix).
        backend: ``matmul`` (default) or ``faiss``; both return the same ranking.

    Returns:
        scores (M, k) float32, descending, and indices (M, k) int64 into ``database``.
    """
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}; choose one of {', '.join(SEARCH_BACKENDS)}")
    database, queries = _as_descriptors(database, "database"), _as_descriptors(queries, "queries")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the database has {database.shape[1]}")
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(database) == 0:
        raise ValueError("cannot search an empty database")
    k = min(int(k), len(database))
    if backend == "faiss":
        from vprdistill.retrieval.approximate import build_index, search

        # faiss ranks NaN arbitrarily, so this backend checks values before searching.
        if not (np.isfinite(database).all() and np.isfinite(queries).all()):
            _raise_non_finite(database, queries)
        return search(build_index(database, "flat"), queries, k)
    num_queries, num_database = len(queries), len(database)
    # Queries per block: batch_size, or as many as fit the score-matrix budget.
    block = min(batch_size or max(1, _SCORE_BLOCK_BYTES // (4 * num_database)), max(num_queries, 1))
    scores_out = np.empty((num_queries, k), dtype=np.float32)
    indices_out = np.empty((num_queries, k), dtype=np.int64)
    buffer = np.empty((block, num_database), dtype=np.float32)
    for start in range(0, num_queries, block):
        stop = min(start + block, num_queries)
        scores = buffer[: stop - start]
        np.matmul(queries[start:stop], database.T, out=scores)
        # Checking the scores costs 1/D of the product and catches a NaN or inf
        # anywhere in the database without scanning it on every call.
        if not np.isfinite(scores).all():
            _raise_non_finite(database, queries[start:stop])
        scores_out[start:stop], indices_out[start:stop] = _top_k_of_scores(scores, k)
    return scores_out, indices_out

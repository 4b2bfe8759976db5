"""Milliseconds per query of each matching mode, and what each compact mode costs in recall.

A mode is (PCA size, dtype, index type) of a map index, built and searched as
``deploy.index.MapIndex`` does, so these figures are those of ``vprdistill localize``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from vprdistill.deploy.index import storage_kind
from vprdistill.retrieval.approximate import build_index, l2_normalise, recall_against_exact, search
from vprdistill.retrieval.search import exact_search


@dataclass(frozen=True)
class MatchingMode:
    """How the database is kept: optional PCA size, dtype and index type."""

    name: str
    pca_dim: int | None = None
    dtype: str = "float32"
    index_type: str = "flat"

    def build(self, database: np.ndarray) -> faiss.Index:
        """The faiss index a map index of this mode keeps for `(N, D)` ``database``."""
        return build_index(database, storage_kind(self.index_type, self.dtype), pca_dim=self.pca_dim, normalise=True)


EXACT_MODE = MatchingMode("exact-float32")
COMPACT_MODES = (
    MatchingMode("pca256-float32", 256),
    MatchingMode("pca128-float32", 128),
    MatchingMode("float16", None, "float16"),
    MatchingMode("int8", None, "int8"),
    MatchingMode("pca256-int8", 256, "int8"),
    MatchingMode("pca128-float16", 128, "float16"),
)


def applicable_modes(dim: int, modes: tuple[MatchingMode, ...] = COMPACT_MODES) -> list[MatchingMode]:
    """The modes whose PCA size is below ``dim`` (a PCA that keeps every dimension saves nothing)."""
    return [mode for mode in modes if mode.pca_dim is None or mode.pca_dim < dim]


def random_unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    """`(rows, dim)` float32 rows drawn uniformly on the unit sphere."""
    return l2_normalise(rng.standard_normal((rows, dim), dtype=np.float32))


def time_search(
    search: Callable[[np.ndarray, int], object], queries: np.ndarray, k: int, repeats: int
) -> dict[str, float]:
    """ms per query answering all `(M, D)` queries in one call, and one query per call (best of ``repeats``)."""
    from vprdistill.deploy.bench import best_seconds

    batched = best_seconds(lambda: search(queries, k), repeats)
    single = best_seconds(lambda: [search(queries[row : row + 1], k) for row in range(len(queries))], repeats)
    return {"ms_per_query_batched": 1e3 * batched / len(queries), "ms_per_query_single": 1e3 * single / len(queries)}


def measure_mode(
    mode: MatchingMode,
    database: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    repeats: int = 3,
    recall_database: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
) -> dict[str, float | str | int | None]:
    """Time ``mode`` on `(N, D)` database and `(M, D)` queries; recall is measured on the ``recall_*`` pair.

    The searcher (PCA included) is built on the database it is timed on, and
    rebuilt on the recall database, so both measure the deployed code path.
    """
    store = mode.build(database)
    row: dict[str, float | str | int | None] = {
        "mode": mode.name,
        "pca": mode.pca_dim,
        "dtype": mode.dtype,
        "type": mode.index_type,
        "stored_dim": mode.pca_dim or database.shape[1],
        **time_search(lambda q, n: search(store, q, n), queries, k, repeats),
    }
    if recall_database is not None and recall_queries is not None:
        recall_store = mode.build(recall_database)
        _, exact_indices = exact_search(recall_database, recall_queries, 1)
        _, found = search(recall_store, recall_queries, k)
        recalls = recall_against_exact(found, exact_indices, ks=(1, min(10, k)))
        row.update({f"recall@{n}_vs_exact": value for n, value in recalls.items()})
    return row

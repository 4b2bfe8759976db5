"""Milliseconds per query of each matching mode, and what each compact mode costs in recall.

A mode is (PCA size, dtype, index type) of ``CompactSearcher``, the object a
map index searches with, so these figures are those of ``vprdistill localize``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vprdistill.deploy.pca import l2_normalise
from vprdistill.deploy.searcher import CompactSearcher
from vprdistill.retrieval.search import exact_search


@dataclass(frozen=True)
class MatchingMode:
    """How the database is kept: optional PCA size, dtype and index type."""

    name: str
    pca_dim: int | None = None
    dtype: str = "float32"
    index_type: str = "flat"


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


def structured_descriptors(
    rng: np.random.Generator,
    num_database: int,
    num_queries: int,
    dim: int,
    latent_dim: int = 128,
    route_correlation: float = 0.9,
    view_noise: float = 0.5,
    appearance_noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Route-like descriptors: database `(N, dim)` and queries `(M, dim)`, L2-normalised.

    Places follow a route: each place's ``latent_dim`` Gaussian factor is the
    previous one's times ``route_correlation`` plus fresh variation, so
    consecutive database images look alike, as along a street. Factors are
    mapped linearly into ``dim`` dimensions, plus isotropic appearance noise. A
    query is a view of a random database place (its factor perturbed by
    ``view_noise``, new appearance noise). Unlike uniform random vectors, these
    have the low-rank structure and close competing neighbours of real
    descriptors, so PCA and quantisation can lose neighbours on them.
    """
    latent_dim = min(latent_dim, dim)
    innovation = np.sqrt(1.0 - route_correlation**2)
    places = np.empty((num_database, latent_dim), dtype=np.float32)
    places[0] = rng.standard_normal(latent_dim)
    steps = rng.standard_normal((num_database, latent_dim), dtype=np.float32)
    for i in range(1, num_database):
        places[i] = route_correlation * places[i - 1] + innovation * steps[i]
    mixing = rng.standard_normal((latent_dim, dim), dtype=np.float32) / np.sqrt(latent_dim)
    database = places @ mixing + appearance_noise * rng.standard_normal((num_database, dim), dtype=np.float32)
    sources = rng.integers(0, num_database, size=num_queries)
    views = places[sources] + view_noise * rng.standard_normal((num_queries, latent_dim), dtype=np.float32)
    queries = views @ mixing + appearance_noise * rng.standard_normal((num_queries, dim), dtype=np.float32)
    return l2_normalise(database), l2_normalise(queries)


def best_ms_per_query(run: Callable[[], object], num_queries: int, repeats: int) -> float:
    """Best of ``repeats`` wall-clock runs of ``run`` (after one warm-up), in ms per query."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / num_queries


def time_search(
    search: Callable[[np.ndarray, int], object], queries: np.ndarray, k: int, repeats: int
) -> dict[str, float]:
    """ms per query answering all `(M, D)` queries in one call, and one query per call."""
    batched = best_ms_per_query(lambda: search(queries, k), len(queries), repeats)

    def one_at_a_time() -> None:
        for row in range(len(queries)):
            search(queries[row : row + 1], k)

    single = best_ms_per_query(one_at_a_time, len(queries), repeats)
    return {"ms_per_query_batched": batched, "ms_per_query_single": single}


def recall_against_exact(found: np.ndarray, exact_top1: np.ndarray, ns: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Share of queries whose exact nearest neighbour is among a mode's top-N, for each N."""
    return {f"recall@{n}_vs_exact": float((found[:, :n] == exact_top1[:, None]).any(axis=1).mean()) for n in ns}


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
    searcher = CompactSearcher.build(database, mode.index_type, mode.dtype, mode.pca_dim)
    row: dict[str, float | str | int | None] = {
        "mode": mode.name,
        "pca": mode.pca_dim,
        "dtype": mode.dtype,
        "type": mode.index_type,
        "stored_dim": searcher.stored_dim,
        **time_search(searcher.search, queries, k, repeats),
    }
    if recall_database is not None and recall_queries is not None:
        recall_searcher = CompactSearcher.build(recall_database, mode.index_type, mode.dtype, mode.pca_dim)
        _, exact_indices = exact_search(recall_database, recall_queries, 1)
        _, found = recall_searcher.search(recall_queries, k)
        row.update(recall_against_exact(found, exact_indices[:, 0], ns=(1, min(10, k))))
    return row

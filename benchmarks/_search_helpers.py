"""Search helpers that only the benchmarks (and their tests) use.

- ``structured_descriptors``: route-like synthetic descriptors for recall measurements.
- ``set_search_params`` and ``index_memory_bytes``: the accuracy/speed knobs and
  the size of a faiss index of ``vprdistill.retrieval.approximate``.
- ``onednn_search``: exact search whose large query blocks run the product in
  oneDNN through a private torch operator (``torch._C._nn.mkldnn_linear``). Its
  AVX-512 kernels are about twice as fast as the AVX2 kernels NumPy's BLAS picks
  on some CPUs (AMD Zen 4/5 among them), but the operator is not public API, so
  the package searches with NumPy's BLAS and ``benchmarks/eval_speed.py`` times
  this path beside it. Where torch lacks the operator, every block falls back to
  ``np.matmul``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import faiss
import numpy as np

from vprdistill.retrieval.approximate import l2_normalise
from vprdistill.retrieval.search import _as_descriptors, _raise_non_finite, _top_k_of_scores

# From this many queries in a block on, oneDNN computes the product: below it,
# preparing the database for oneDNN costs more than its faster kernels save.
ONEDNN_MIN_QUERIES = 64


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


def set_search_params(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Change the accuracy/speed knob of a built or loaded index (IVF ``nprobe``, HNSW ``ef_search``)."""
    if nprobe is not None:
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError as error:
            raise ValueError(f"nprobe applies to IVF indexes, not {type(index).__name__}") from error
        ivf.nprobe = min(int(nprobe), ivf.nlist)
    if ef_search is not None:
        if not hasattr(index, "hnsw"):
            raise ValueError(f"ef_search applies to HNSW indexes, not {type(index).__name__}")
        index.hnsw.efSearch = int(ef_search)


def index_memory_bytes(index: faiss.Index) -> int:
    """Bytes the index takes serialised (codes, ids, centroids, codebooks, graph): its in-RAM size up to slack."""
    return int(faiss.serialize_index(index).nbytes)


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether torch's oneDNN float32 inner product can be used (and is set to full float32 precision)."""
    import torch

    if not torch.backends.mkldnn.is_available() or not hasattr(torch._C._nn, "mkldnn_linear"):
        return False
    # A reduced-precision setting (bf16 or tf32 products) would make the search inexact.
    precision = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", "none")
    return precision in ("none", "ieee")


def onednn_search(
    database: np.ndarray, min_queries: int = ONEDNN_MIN_QUERIES
) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """``search(queries (M, D), k) -> (scores (M, k), indices (M, k))`` over `(N, D)` ``database``.

    Blocks of at least ``min_queries`` queries go through oneDNN (the database is
    converted once); smaller ones, and every block where oneDNN is unavailable,
    through ``np.matmul``. Same ranking as ``exact_search``.
    """
    import torch

    database = _as_descriptors(database, "database")
    converted = torch.from_numpy(database).to_mkldnn() if onednn_available() else None
    block_rows = max(1, 256 * 2**20 // (4 * len(database)))

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_descriptors(queries, "queries")
        k = min(int(k), len(database))
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        indices_out = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), block_rows):
            block = queries[start : start + block_rows]
            if converted is not None and len(block) >= min_queries:
                with torch.inference_mode():
                    product = torch._C._nn.mkldnn_linear(torch.from_numpy(block).to_mkldnn(), converted, None)
                    scores = product.to_dense().numpy()
            else:
                scores = block @ database.T
            if not np.isfinite(scores).all():
                _raise_non_finite(database, block)
            scores_out[start : start + len(block)], indices_out[start : start + len(block)] = _top_k_of_scores(
                scores, k
            )
        return scores_out, indices_out

    return search

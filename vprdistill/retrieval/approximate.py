"""Indexes for maps too large for exact search: faiss flat, IVF-PQ and HNSW.

- ``flat``: every descriptor in float32, exact search; the reference.
- ``ivfpq``: an inverted file of ``nlist`` coarse cells (k-means centroids) whose
  entries hold product-quantised residuals, ``m_pq`` codes of ``nbits`` each.
  A query scans the ``nprobe`` nearest cells only. Trained on a random sample.
- ``hnsw``: a navigable small-world graph over float32 descriptors, ``hnsw_m``
  links per node; a query explores ``ef_search`` candidates. No training, fast
  and accurate, but it keeps every descriptor plus the graph in memory.

Descriptors come as one ``(N, D)`` array (a ``np.memmap`` is fine) or as chunks
(e.g. the shards of ``vprdistill.eval.sharded``), added a chunk at a time so the
float32 database never has to be in RAM at once (only what the index itself
keeps). ``search_reranked`` puts an index's shortlist in exact order from the
float32 rows (a memmap or the shards on disk). Index files are faiss's own
binary format, never pickles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

from vprdistill.utils.atomic import atomic_path

INDEX_KINDS = ("flat", "ivfpq", "hnsw")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

# faiss k-means wants at least 39 training points per centroid and uses at most 256.
_MIN_POINTS_PER_CELL = 39
_ADD_CHUNK_ROWS = 65_536
# Bound on the (queries, shortlist, D) float32 block gathered for re-ranking.
_RERANK_BLOCK_BYTES = 64 * 2**20

Descriptors = np.ndarray | Iterable[np.ndarray]


class IndexFileError(ValueError):
    """An index file that cannot be read as a faiss index."""


def default_nlist(count: int) -> int:
    """Coarse cells for ``count`` descriptors: about √N, a power of two, at least 39 points per cell.

    faiss suggests 4·√N to 16·√N cells; fewer cells make training and the
    coarse search cheaper and lists longer, which a larger ``nprobe`` pays back.
    """
    if count < 1:
        raise ValueError(f"cannot size an inverted file for {count} descriptors")
    cells = 2 ** round(math.log2(max(1.0, math.sqrt(count))))
    return max(1, min(cells, count // _MIN_POINTS_PER_CELL))


def default_m_pq(dim: int) -> int:
    """PQ sub-quantisers for ``dim``: the largest divisor of ``dim`` not above ``dim / 8``.

    Sub-vectors of 8 dimensions give one byte per 8 float32 values (32× smaller)
    and train fast: faiss's k-means is about 10× slower on sub-vectors of fewer
    than 8 dimensions (no SIMD kernel), so ``m_pq = D / 4`` (16×, more recall)
    costs minutes of training. Where PQ recall is short, re-rank a shortlist
    with :func:`search_reranked` instead.
    """
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def _as_chunk(chunk: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    rows = np.ascontiguousarray(chunk, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] == 0 or (dim is not None and rows.shape[1] != dim):
        expected = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"{what} must be {expected} descriptors, got shape {tuple(rows.shape)}")
    if not np.isfinite(rows).all():
        raise ValueError(f"{what} hold NaN or inf")
    return rows


def _array_chunks(array: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    # Slices of a memmap are read from disk only when converted, one chunk at a time.
    for start in range(0, len(array), rows):
        yield array[start : start + rows]


def _chunk_source(descriptors: Descriptors) -> tuple[Iterable[np.ndarray], bool]:
    """(chunks, re-iterable?) for an array or an iterable of arrays."""
    if isinstance(descriptors, np.ndarray):
        if descriptors.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D array (N, D), got shape {descriptors.shape}")
        return _ArrayChunks(descriptors), True
    if iter(descriptors) is descriptors:
        return descriptors, False
    return descriptors, True


class _ArrayChunks:
    """An ``(N, D)`` array seen as a re-iterable sequence of row chunks."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __iter__(self) -> Iterator[np.ndarray]:
        return _array_chunks(self.array, _ADD_CHUNK_ROWS)


def _random_sample(chunks: Iterable[np.ndarray], size: int, seed: int) -> tuple[np.ndarray, int]:
    """``size`` rows drawn uniformly without replacement from all chunks, and the total row count.

    Two passes: chunk sizes (free for memmaps), then the picked rows.
    """
    lengths = [len(chunk) for chunk in chunks]
    total = sum(lengths)
    if total == 0:
        raise ValueError("cannot train an index on zero descriptors")
    size = min(size, total)
    picked = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    parts, start = [], 0
    for chunk, length in zip(chunks, lengths):
        inside = picked[(picked >= start) & (picked < start + length)] - start
        if inside.size:
            parts.append(np.asarray(chunk[inside], dtype=np.float32))
        start += length
    return np.concatenate(parts), total


def _add_chunks(index: faiss.Index, chunks: Iterable[np.ndarray]) -> None:
    for chunk in chunks:
        # Large chunks (a whole memmapped database) are split so only one slice is converted at a time.
        for part in _array_chunks(chunk, _ADD_CHUNK_ROWS) if len(chunk) > _ADD_CHUNK_ROWS else (chunk,):
            rows = _as_chunk(part, index.d, "descriptors")
            if len(rows):
                index.add(rows)


def _first_dim(chunks: Iterable[np.ndarray], reiterable: bool) -> tuple[int, Iterable[np.ndarray]]:
    """Descriptor size from the first chunk, and chunks that still include it."""
    if reiterable:
        for chunk in chunks:
            return _as_chunk(chunk[:1], None, "descriptors").shape[1], chunks
        raise ValueError("cannot build an index from zero chunks of descriptors")
    iterator = iter(chunks)
    first = next(iterator, None)
    if first is None:
        raise ValueError("cannot build an index from zero chunks of descriptors")
    dim = _as_chunk(np.asarray(first)[:1], None, "descriptors").shape[1]

    def replay() -> Iterator[np.ndarray]:
        yield first
        yield from iterator

    return dim, replay()


def build_index(
    descriptors: Descriptors,
    kind: str = "flat",
    *,
    train_sample: int = 131_072,
    nlist: int | None = None,
    m_pq: int | None = None,
    nbits: int = 8,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 64,
    nprobe: int = 16,
    metric: str = "ip",
    seed: int = 0,
) -> faiss.Index:
    """A faiss index of kind ``kind`` holding ``descriptors``.

    Args:
        descriptors: ``(N, D)`` float32 (an array or memmap) or an iterable of
            ``(n_i, D)`` chunks. IVF-PQ draws a training sample before adding,
            so it needs an array or a re-iterable (a list of memmaps, not a
            one-shot generator).
        kind: ``flat``, ``ivfpq`` or ``hnsw``.
        train_sample: IVF-PQ training rows, drawn uniformly at random (``seed``).
        nlist: IVF-PQ coarse cells; default :func:`default_nlist` of N.
        m_pq, nbits: PQ code of ``m_pq`` sub-vectors × ``nbits`` bits (``m_pq``
            must divide D); default :func:`default_m_pq` of D and 8 bits.
        hnsw_m, ef_construction, ef_search: HNSW links per node, build-time and
            search-time candidate lists. ``ef_construction=80`` (faiss: 40)
            costs 1.8× the build time for a graph that stays navigable
            between clusters: recall@1 0.96 instead of 0.75 at
            ``ef_search=64`` on 1M clustered 256-d descriptors (docs/SCALE.md).
        nprobe: IVF cells scanned per query.
        metric: ``ip`` (inner product; L2-normalised descriptors) or ``l2``.

    Returns:
        A ``faiss.Index`` with ``ntotal == N``; ``index.search(queries (M, D), k)``
        gives scores/distances ``(M, k)`` and indices ``(M, k)`` (``-1`` = none).
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    chunks, reiterable = _chunk_source(descriptors)
    dim, chunks = _first_dim(chunks, reiterable)
    faiss_metric = METRICS[metric]
    if kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
    elif kind == "hnsw":
        if hnsw_m < 2:
            raise ValueError(f"hnsw_m must be at least 2, got {hnsw_m}")
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
    else:
        if not reiterable:
            raise ValueError(
                "IVF-PQ draws a training sample before adding, so it reads the descriptors twice: "
                "pass an (N, D) array/memmap or a list of chunks, not a one-shot iterator"
            )
        index = _trained_ivfpq(chunks, dim, train_sample, nlist, m_pq, nbits, nprobe, faiss_metric, seed)
    _add_chunks(index, chunks)
    return index


def _trained_ivfpq(
    chunks: Iterable[np.ndarray],
    dim: int,
    train_sample: int,
    nlist: int | None,
    m_pq: int | None,
    nbits: int,
    nprobe: int,
    metric: int,
    seed: int,
) -> faiss.Index:
    m_pq = default_m_pq(dim) if m_pq is None else int(m_pq)
    if m_pq < 1 or dim % m_pq:
        raise ValueError(f"m_pq={m_pq} must divide the descriptor size {dim}")
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must lie in 1..16, got {nbits}")
    sample, total = _random_sample(chunks, train_sample, seed)
    nlist = min(default_nlist(total), len(sample) // _MIN_POINTS_PER_CELL or 1) if nlist is None else int(nlist)
    needed = max(nlist, 2**nbits)
    if len(sample) < needed:
        raise ValueError(
            f"IVF-PQ with nlist={nlist} and {nbits}-bit codes needs at least {needed} training descriptors, "
            f"got {len(sample)}; lower nlist/nbits or use kind='hnsw'/'flat'"
        )
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{m_pq}x{nbits}", metric)
    index.cp.seed = seed  # coarse k-means
    index.pq.cp.seed = seed  # PQ codebooks
    # Polysemous training (codes ordered for Hamming filtering) is unused by plain
    # IVF-PQ search and costs minutes: it is most of the build time otherwise.
    index.do_polysemous_training = False
    # Each of the m_pq codebooks is a k-means over the sample. 64 points per
    # centroid instead of faiss's 256 trains 2.4× faster with the same recall
    # (0.86 vs 0.85 recall@1, 100k clustered 256-d descriptors, PQ32).
    index.pq.cp.max_points_per_centroid = 64
    index.train(_as_chunk(sample, dim, "training descriptors"))
    index.nprobe = min(int(nprobe), nlist)
    return index


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


def recall_against_exact(
    index: faiss.Index, queries: np.ndarray, exact_indices: np.ndarray, ks: Sequence[int] = (1, 10)
) -> dict[int, float]:
    """Share of queries whose exact nearest neighbour is among the index's top-k, for each k in ``ks``.

    Args:
        index: a built index.
        queries: ``(M, D)`` float32.
        exact_indices: ``(M,)`` or ``(M, K)`` exact neighbours, best first (column 0 is used).
        ks: cut-offs.

    Returns:
        ``{k: recall}`` with recall in [0, 1].
    """
    queries = _as_chunk(queries, index.d, "queries")
    truth = np.asarray(exact_indices)
    truth = truth.reshape(len(truth), -1)[:, 0] if truth.ndim > 1 else truth
    if len(truth) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(truth)} exact neighbours")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {tuple(ks)}")
    _, found = index.search(queries, int(max(ks)))
    return {int(k): float((found[:, :k] == truth[:, None]).any(axis=1).mean()) for k in ks}


def search_reranked(
    index: faiss.Index, queries: np.ndarray, k: int, database: np.ndarray, shortlist: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by exact score among the index's top-``shortlist`` candidates.

    The usual large-map recipe: compressed IVF-PQ codes in RAM find a
    shortlist, the float32 descriptors (a ``np.memmap`` on disk is enough; only
    the shortlisted rows are read) put it in exact order. Recall@k then equals
    the index's recall@shortlist.

    Args:
        index: a built index over ``database``.
        queries: ``(M, D)`` float32.
        k: results per query (``k <= shortlist``).
        database: ``(N, D)`` float32 the index was built from; anything that
            takes a sorted int64 array as a row index (array, memmap).
        shortlist: candidates per query taken from ``index``.

    Returns:
        scores ``(M, k)`` (inner product, or negative squared L2 for ``l2``
        indexes; higher is better) and indices ``(M, k)`` int64, ``-1`` where the
        index found fewer than ``k`` entries.
    """
    queries = _as_chunk(queries, index.d, "queries")
    if not 1 <= k <= shortlist:
        raise ValueError(f"need 1 <= k <= shortlist, got k={k}, shortlist={shortlist}")
    if len(database) != index.ntotal:
        raise ValueError(f"the database holds {len(database)} descriptors, the index {index.ntotal}")
    _, candidates = index.search(queries, int(shortlist))
    scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    indices_out = np.full((len(queries), k), -1, dtype=np.int64)
    block = max(1, _RERANK_BLOCK_BYTES // (4 * shortlist * index.d))
    for start in range(0, len(queries), block):
        found = candidates[start : start + block]
        wanted, position = np.unique(found[found >= 0], return_inverse=True)
        rows = np.asarray(database[wanted], dtype=np.float32)  # sorted rows: sequential reads on a memmap
        slots = np.zeros(found.shape, dtype=np.int64)
        slots[found >= 0] = position
        vectors = rows[slots]  # (B, shortlist, D)
        query_block = queries[start : start + block, None, :]
        if index.metric_type == faiss.METRIC_L2:
            scores = -np.square(vectors - query_block).sum(axis=2)
        else:
            scores = (vectors * query_block).sum(axis=2)
        scores[found < 0] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores_out[start : start + block] = np.take_along_axis(scores, order, axis=1)
        indices_out[start : start + block] = np.where(
            np.isfinite(scores_out[start : start + block]), np.take_along_axis(found, order, axis=1), -1
        )
    return scores_out, indices_out


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write ``index`` in faiss's binary format, atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read an index written by :func:`save_index`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index file {path} does not exist")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexFileError(f"{path} is not a faiss index file: {error}") from error

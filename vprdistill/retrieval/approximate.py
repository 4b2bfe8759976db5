"""Every index kind, built through faiss ``index_factory``: flat, IVF-PQ, HNSW, SQ8 and fp16, with optional PCA.

- ``flat``: every descriptor in float32, exact search; the reference.
- ``fp16``: every descriptor in float16 (half the memory, exact up to rounding).
- ``sq8``: one byte per dimension, each dimension's range trained on a sample.
- ``ivfpq``: an inverted file of ``nlist`` coarse cells (k-means centroids) whose
  entries hold product-quantised residuals, ``m_pq`` codes of ``nbits`` each.
  A query scans the ``nprobe`` nearest cells only. Trained on a random sample.
- ``hnsw``: a navigable small-world graph over float32 descriptors, ``hnsw_m``
  links per node; a query explores ``ef_search`` candidates. No training, fast
  and accurate, but it keeps every descriptor plus the graph in memory.

``pca_dim`` puts a PCA reduction in front (faiss ``IndexPreTransform``:
L2 normalisation, the projection, L2 normalisation again), so inner products of
reduced descriptors stay cosine similarities. The projection is learnt with
scikit-learn's covariance eigen-solver (about a second on 10,000 × 2048, where
faiss ``PCAMatrix`` training takes over ten) and loaded into the faiss chain;
the search results are those of the same projection applied in NumPy.

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

from vprdistill.retrieval.search import exact_search
from vprdistill.utils.atomic import atomic_path

INDEX_KINDS = ("flat", "ivfpq", "hnsw", "sq8", "fp16")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
# Kinds that learn parameters from a training sample (PCA does too).
_TRAINED_KINDS = ("ivfpq", "sq8")

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


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; `(N, D)` float32 (all-zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _as_chunk(chunk: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    rows = np.ascontiguousarray(chunk, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] == 0 or (dim is not None and rows.shape[1] != dim):
        expected = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"{what} must be {expected} descriptors, got shape {tuple(rows.shape)}")
    if not np.isfinite(rows).all():
        raise ValueError(f"{what} hold NaN or inf")
    return rows


def _row_chunks(array: np.ndarray) -> list[np.ndarray]:
    """An ``(N, D)`` array as a re-iterable list of row slices (views: a memmap's are read only when converted)."""
    return [array[start : start + _ADD_CHUNK_ROWS] for start in range(0, len(array), _ADD_CHUNK_ROWS)]


def _chunk_source(descriptors: Descriptors) -> tuple[int, Iterable[np.ndarray], bool]:
    """(descriptor size, chunks, re-iterable?) for an array or an iterable of arrays."""
    if isinstance(descriptors, np.ndarray):
        if descriptors.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D array (N, D), got shape {descriptors.shape}")
        descriptors = _row_chunks(descriptors)
    reiterable = iter(descriptors) is not descriptors
    iterator = iter(descriptors)
    first = next(iterator, None)
    if first is None:
        raise ValueError("cannot build an index from zero chunks of descriptors")
    dim = _as_chunk(np.asarray(first)[:1], None, "descriptors").shape[1]
    if reiterable:
        return dim, descriptors, True

    def replay() -> Iterator[np.ndarray]:
        yield first
        yield from iterator

    return dim, replay(), False


def _random_sample(chunks: Iterable[np.ndarray], size: int, seed: int) -> tuple[np.ndarray, int]:
    """``size`` rows drawn uniformly without replacement from all chunks, and the total row count.

    Two passes: chunk sizes (free for memmaps), then the picked rows.
    """
    lengths = [len(chunk) for chunk in chunks]
    total = sum(lengths)
    if total == 0:
        raise ValueError("cannot train an index on zero descriptors")
    picked = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    parts, start = [], 0
    for chunk, length in zip(chunks, lengths):
        inside = picked[(picked >= start) & (picked < start + length)] - start
        if inside.size:
            parts.append(np.asarray(chunk[inside], dtype=np.float32))
        start += length
    return np.concatenate(parts), total


def fit_pca(descriptors: np.ndarray, output_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix (D_out, D_in), bias (D_out,))`` float32 projecting `(N, D_in)` rows onto their top components."""
    from sklearn.decomposition import PCA

    count, input_dim = descriptors.shape
    if not 0 < output_dim <= input_dim:
        raise ValueError(f"PCA dimension {output_dim} must lie in 1..{input_dim} (the descriptor size)")
    if count < max(2, output_dim):
        raise ValueError(f"PCA to {output_dim} dimensions needs at least {max(2, output_dim)} descriptors, got {count}")
    pca = PCA(output_dim, svd_solver="covariance_eigh").fit(descriptors)
    matrix = np.ascontiguousarray(pca.components_, dtype=np.float32)
    return matrix, np.ascontiguousarray(-(matrix @ pca.mean_.astype(np.float32)), dtype=np.float32)


def with_transforms(
    base: faiss.Index, input_dim: int, pca: tuple[np.ndarray, np.ndarray] | None, normalise: bool = True
) -> faiss.Index:
    """``base`` behind L2 normalisation and, with ``pca`` (matrix `(D_out, D_in)`, bias), ``normalise(matrix @ x + bias)``."""
    if pca is None and not normalise:
        return base
    transforms = [faiss.NormalizationTransform(input_dim)] if normalise else []
    if pca is not None:
        matrix, bias = (np.ascontiguousarray(array, dtype=np.float32) for array in pca)
        if matrix.shape != (base.d, input_dim) or bias.shape != (base.d,):
            raise ValueError(f"PCA arrays of shapes {matrix.shape} and {bias.shape} do not map {input_dim} → {base.d}")
        projection = faiss.LinearTransform(input_dim, base.d, True)
        faiss.copy_array_to_vector(matrix.ravel(), projection.A)
        faiss.copy_array_to_vector(bias, projection.b)
        projection.is_trained = True
        transforms += [projection, faiss.NormalizationTransform(base.d)]
    index = faiss.IndexPreTransform(base)
    for step in reversed(transforms):
        index.prepend_transform(step)
    return index


def index_parts(index: faiss.Index) -> tuple[faiss.Index, tuple[np.ndarray, np.ndarray] | None, bool]:
    """``(base index, PCA (matrix, bias) or None, normalised?)`` of an index made by :func:`with_transforms`."""
    index = faiss.downcast_index(index)
    if not isinstance(index, faiss.IndexPreTransform):
        return index, None, False
    transforms = [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
    linear = [t for t in transforms if isinstance(t, faiss.LinearTransform)]
    pca = None
    if linear:
        matrix = faiss.vector_to_array(linear[0].A).reshape(linear[0].d_out, linear[0].d_in)
        pca = (matrix, faiss.vector_to_array(linear[0].b))
    normalised = isinstance(transforms[0], faiss.NormalizationTransform)
    return faiss.downcast_index(index.index), pca, normalised


def transform(index: faiss.Index, descriptors: np.ndarray) -> np.ndarray:
    """`(N, D_in)` descriptors as ``index`` stores them `(N, D_stored)` (its pre-transforms applied)."""
    rows = np.ascontiguousarray(descriptors, dtype=np.float32)
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            rows = faiss.downcast_VectorTransform(index.chain.at(i)).apply(rows)
    return rows


def empty_like(index: faiss.Index) -> faiss.Index:
    """An index with what ``index`` learnt (PCA, scalar ranges, centroids, codebooks) and no entries."""
    base, pca, normalised = index_parts(index)
    clone = faiss.clone_index(base)
    clone.reset()
    return with_transforms(clone, index.d, pca, normalised)


def _factory(kind: str, dim: int, total: int, sample: int, options: dict, metric: int) -> faiss.Index:
    """An untrained faiss index of ``kind`` for ``dim``-d descriptors (``total`` of them, ``sample`` for training)."""
    if kind == "ivfpq":
        m_pq = default_m_pq(dim) if options["m_pq"] is None else int(options["m_pq"])
        nbits, nlist = options["nbits"], options["nlist"]
        if m_pq < 1 or dim % m_pq:
            raise ValueError(f"m_pq={m_pq} must divide the descriptor size {dim}")
        if not 1 <= nbits <= 16:
            raise ValueError(f"nbits must lie in 1..16, got {nbits}")
        nlist = min(default_nlist(total), sample // _MIN_POINTS_PER_CELL or 1) if nlist is None else int(nlist)
        needed = max(nlist, 2**nbits)
        if sample < needed:
            raise ValueError(
                f"IVF-PQ with nlist={nlist} and {nbits}-bit codes needs at least {needed} training descriptors, "
                f"got {sample}; lower nlist/nbits or use kind='hnsw'/'flat'"
            )
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m_pq}x{nbits}", metric)
        index.cp.seed = index.pq.cp.seed = options["seed"]  # coarse k-means, PQ codebooks
        # Polysemous training (codes ordered for Hamming filtering) is unused by plain
        # IVF-PQ search and costs minutes: it is most of the build time otherwise.
        index.do_polysemous_training = False
        # Each of the m_pq codebooks is a k-means over the sample. 64 points per
        # centroid instead of faiss's 256 trains 2.4× faster with the same recall
        # (0.86 vs 0.85 recall@1, 100k clustered 256-d descriptors, PQ32).
        index.pq.cp.max_points_per_centroid = 64
        index.nprobe = min(int(options["nprobe"]), nlist)
        return index
    if kind == "hnsw":
        if options["hnsw_m"] < 2:
            raise ValueError(f"hnsw_m must be at least 2, got {options['hnsw_m']}")
        index = faiss.index_factory(dim, f"HNSW{int(options['hnsw_m'])}", metric)
        index.hnsw.efConstruction = int(options["ef_construction"])
        index.hnsw.efSearch = int(options["ef_search"])
        return index
    return faiss.index_factory(dim, {"flat": "Flat", "sq8": "SQ8", "fp16": "SQfp16"}[kind], metric)


def build_index(
    descriptors: Descriptors,
    kind: str = "flat",
    *,
    pca_dim: int | None = None,
    normalise: bool = False,
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
            ``(n_i, D)`` chunks. Kinds that train (IVF-PQ, SQ8, any PCA) draw a
            sample before adding, so they need an array or a re-iterable (a list
            of memmaps, not a one-shot generator).
        kind: one of ``INDEX_KINDS``.
        pca_dim: reduce descriptors to this many PCA components first (learnt on
            the training sample), L2-normalising before and after.
        normalise: L2-normalise every descriptor added or searched (implied by ``pca_dim``).
        train_sample: training rows (IVF-PQ, SQ8, PCA), drawn uniformly at random (``seed``).
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
        A ``faiss.Index`` with ``ntotal == N`` taking ``(M, D)`` queries;
        ``index.search(queries, k)`` gives scores/distances ``(M, k)`` and indices ``(M, k)`` (``-1`` = none).
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    dim, chunks, reiterable = _chunk_source(descriptors)
    trains = kind in _TRAINED_KINDS or bool(pca_dim)
    sample, total = None, 0
    if trains:
        if not reiterable:
            raise ValueError(
                f"{kind} with pca_dim={pca_dim} draws a training sample before adding, so it reads the descriptors "
                "twice: pass an (N, D) array/memmap or a list of chunks, not a one-shot iterator"
            )
        sample, total = _random_sample(chunks, train_sample, seed)
        sample = _as_chunk(sample, dim, "training descriptors")
    normalise = normalise or bool(pca_dim)
    pca = fit_pca(l2_normalise(sample), int(pca_dim)) if pca_dim else None
    options = {"nlist": nlist, "m_pq": m_pq, "nbits": nbits, "hnsw_m": hnsw_m, "seed": seed,
               "ef_construction": ef_construction, "ef_search": ef_search, "nprobe": nprobe}  # fmt: skip
    base = _factory(kind, int(pca_dim or dim), total, 0 if sample is None else len(sample), options, METRICS[metric])
    index = with_transforms(base, dim, pca, normalise)
    if not base.is_trained:
        index.train(sample)  # the pre-transforms are trained already, so only the base learns here
    for chunk in chunks:
        # Large chunks (a whole memmapped database) are split so only one slice is converted at a time.
        for part in _row_chunks(chunk) if len(chunk) > _ADD_CHUNK_ROWS else (chunk,):
            rows = _as_chunk(part, index.d, "descriptors")
            if len(rows):
                index.add(rows)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (clipped to ``ntotal``) of `(M, D)` queries → scores `(M, k)` float32, indices `(M, k)` int64 (−1 = none)."""
    queries = _as_chunk(queries, index.d, "queries")
    k = min(int(k), int(index.ntotal))
    if k < 1:
        raise ValueError(f"cannot search for k={k} entries of an index holding {index.ntotal}")
    scores, indices = index.search(queries, k)
    return scores.astype(np.float32, copy=False), indices.astype(np.int64, copy=False)


def recall_against_exact(found: np.ndarray, exact: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[int, float]:
    """Share of queries whose exact nearest neighbour is among their ``found`` top-k, for each k in ``ks``.

    Args:
        found: ``(M, K)`` indices returned by an index, best first (``K >= max(ks)``).
        exact: ``(M,)`` or ``(M, K')`` exact neighbours, best first (column 0 is used).
        ks: cut-offs.

    Returns:
        ``{k: recall}`` with recall in [0, 1].
    """
    truth = np.asarray(exact)
    truth = truth.reshape(len(truth), -1)[:, 0]
    found = np.asarray(found)
    if len(truth) != len(found):
        raise ValueError(f"{len(found)} queries but {len(truth)} exact neighbours")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {tuple(ks)}")
    return {int(k): float((found[:, :k] == truth[:, None]).any(axis=1).mean()) for k in ks}


def neighbour_recall(index: faiss.Index, descriptors: np.ndarray, sample: int = 500, k: int = 10) -> float:
    """Share of each sampled entry's exact top-``k`` neighbours (itself excluded) that ``index`` also returns.

    ``descriptors`` is the `(N, D)` float32 array ``index`` was built from; exact
    search runs in the stored space (after any PCA), so this is what compression
    or approximation costs. Sampling is deterministic.
    """
    count = len(descriptors)
    if count < 2:
        return 1.0
    k = min(k, count - 1)
    rows = np.random.default_rng(0).choice(count, size=min(sample, count), replace=False)
    stored = transform(index, descriptors)
    _, truth = exact_search(stored, stored[rows], k + 1)
    _, found = search(index, np.asarray(descriptors, dtype=np.float32)[rows], k + 1)
    hits = 0
    for row, true_row, found_row in zip(rows, truth, found):
        expected = [i for i in true_row if i != row][:k]
        hits += len(set(expected) & {i for i in found_row if i != row})
    return float(hits / (len(rows) * k))


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

"""Where an index keeps its descriptors, and how it searches them.

One store per (index type, dtype) pair, all with the same small interface:
``add``, ``search``, ``save``, ``empty_like``. Scores are inner products of
L2-normalised descriptors (higher is better) for every store, so a threshold
on the score means the same thing whatever the storage.

| type  | dtype   | kept as                                   | search                          |
|-------|---------|-------------------------------------------|---------------------------------|
| flat  | float32 | ``descriptors.npy`` (float32)             | ``retrieval.search.exact_search`` |
| flat  | float16 | ``descriptors.npy`` (float16)             | faiss ``IndexScalarQuantizer`` fp16 |
| flat  | int8    | ``descriptors.faiss`` (8-bit per dimension, trained ranges) | faiss ``IndexScalarQuantizer`` SQ8 |
| hnsw  | float32 | ``descriptors.faiss``                     | faiss ``IndexHNSWFlat``         |
| ivfpq | float32 | ``descriptors.faiss``                     | faiss ``IndexIVFPQ``            |

HNSW and IVF-PQ come from ``vprdistill.retrieval.approximate`` (its default
sizes). faiss index files are faiss's own binary format, not pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from vprdistill.retrieval.approximate import build_index, load_index, save_index
from vprdistill.retrieval.search import exact_search

INDEX_TYPES = ("flat", "ivfpq", "hnsw")
DTYPES = ("float32", "float16", "int8")
ARRAY_FILE = "descriptors.npy"
FAISS_FILE = "descriptors.faiss"
_SQ_SUFFIX = {"float16": "SQfp16", "int8": "SQ8"}


class DescriptorStore(Protocol):
    """The searchable descriptors of an index, `(N, D)`."""

    dim: int

    def __len__(self) -> int: ...

    def add(self, descriptors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, folder: Path) -> None: ...

    def empty_like(self) -> DescriptorStore: ...


def _as_rows(descriptors: np.ndarray, dim: int, what: str) -> np.ndarray:
    rows = np.ascontiguousarray(descriptors, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ValueError(f"{what} must be (N, {dim}) descriptors, got shape {tuple(rows.shape)}")
    return rows


class ExactFloat32Store:
    """Full-precision descriptors searched exactly (the reference every other store is measured against)."""

    def __init__(self, dim: int, array: np.ndarray | None = None) -> None:
        self.dim = dim
        self.array = np.zeros((0, dim), np.float32) if array is None else _as_rows(array, dim, "descriptors")

    def __len__(self) -> int:
        return len(self.array)

    def add(self, descriptors: np.ndarray) -> None:
        self.array = np.concatenate([self.array, _as_rows(descriptors, self.dim, "new descriptors")])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of `(M, D)` queries → scores `(M, k)` float32, indices `(M, k)` int64."""
        k = min(k, len(self.array))
        scores, indices = exact_search(self.array, _as_rows(queries, self.dim, "queries"), k)
        return np.asarray(scores, np.float32), np.asarray(indices, np.int64)

    def save(self, folder: Path) -> None:
        np.save(folder / ARRAY_FILE, self.array, allow_pickle=False)

    def empty_like(self) -> ExactFloat32Store:
        return ExactFloat32Store(self.dim)


class FaissStore:
    """Descriptors held by a faiss index (compressed and/or approximate)."""

    def __init__(self, index: faiss.Index, half_precision_file: bool = False) -> None:
        self.index = index
        self.dim = int(index.d)
        # float16 flat stores are saved as a plain float16 array (readable without faiss).
        self.half_precision_file = half_precision_file

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, descriptors: np.ndarray) -> None:
        self.index.add(_as_rows(descriptors, self.dim, "new descriptors"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of `(M, D)` queries → scores `(M, k)`, indices `(M, k)` (``-1`` where fewer were found)."""
        k = min(k, len(self))
        scores, indices = self.index.search(_as_rows(queries, self.dim, "queries"), k)
        return scores.astype(np.float32), indices.astype(np.int64)

    def save(self, folder: Path) -> None:
        if self.half_precision_file:
            decoded = self.index.reconstruct_n(0, self.index.ntotal) if len(self) else np.zeros((0, self.dim))
            np.save(folder / ARRAY_FILE, decoded.astype(np.float16), allow_pickle=False)
        else:
            save_index(self.index, folder / FAISS_FILE)

    def empty_like(self) -> FaissStore:
        # A copy keeps what was trained (scalar ranges, coarse centroids, PQ codebooks).
        clone = faiss.clone_index(self.index)
        clone.reset()
        return FaissStore(clone, self.half_precision_file)


def check_storage(index_type: str, dtype: str) -> None:
    """Raise ``ValueError`` for an unknown or unsupported (type, dtype) pair."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if index_type != "flat" and dtype != "float32":
        raise ValueError(f"dtype {dtype} applies to flat indexes; {index_type} keeps its own float32 or PQ codes")


def build_store(descriptors: np.ndarray, index_type: str = "flat", dtype: str = "float32") -> DescriptorStore:
    """A store of type ``index_type`` trained on and holding `(N, D)` L2-normalised descriptors."""
    check_storage(index_type, dtype)
    rows = np.ascontiguousarray(descriptors, dtype=np.float32)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"an index needs at least one (N, D) descriptor, got shape {tuple(rows.shape)}")
    dim = rows.shape[1]
    if index_type == "flat" and dtype == "float32":
        return ExactFloat32Store(dim, rows)
    if index_type != "flat":
        return FaissStore(build_index(rows, index_type, metric="ip"))
    index = faiss.index_factory(dim, _SQ_SUFFIX[dtype], faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.add(rows)
    return FaissStore(index, half_precision_file=dtype == "float16")


def load_store(folder: Path, index_type: str, dtype: str, dim: int) -> DescriptorStore:
    """Read the store written by ``save`` into ``folder``; the manifest gives type, dtype and size."""
    check_storage(index_type, dtype)
    if index_type == "flat" and dtype in ("float32", "float16"):
        array = np.load(folder / ARRAY_FILE, allow_pickle=False)
        if array.ndim != 2 or array.shape[1] != dim:
            raise ValueError(f"{folder / ARRAY_FILE}: expected (N, {dim}) descriptors, found {array.shape}")
        if dtype == "float32":
            return ExactFloat32Store(dim, array)
        index = faiss.index_factory(dim, _SQ_SUFFIX["float16"], faiss.METRIC_INNER_PRODUCT)
        index.add(np.ascontiguousarray(array, dtype=np.float32))  # float16 → fp16 codes is lossless
        return FaissStore(index, half_precision_file=True)
    index = load_index(folder / FAISS_FILE)
    if index.d != dim:
        raise ValueError(f"{folder / FAISS_FILE}: descriptor size {index.d} differs from the manifest's {dim}")
    return FaissStore(index)


def neighbour_recall(store: DescriptorStore, exact: np.ndarray, sample: int = 500, k: int = 10) -> float:
    """Share of each sampled entry's exact top-``k`` neighbours (itself excluded) that ``store`` also returns.

    ``exact`` is the `(N, D)` float32 array ``store`` was built from; sampling is
    deterministic. This is how an approximate or compressed store reports its
    recall loss against exact search.
    """
    count = len(exact)
    if count < 2:
        return 1.0
    k = min(k, count - 1)
    rows = np.random.default_rng(0).choice(count, size=min(sample, count), replace=False)
    queries = exact[rows]
    _, truth = exact_search(exact, queries, k + 1)
    _, found = store.search(queries, k + 1)
    hits = 0
    for row, true_row, found_row in zip(rows, np.asarray(truth), found):
        expected = [i for i in true_row if i != row][:k]
        hits += len(set(expected) & {i for i in found_row if i != row})
    return float(hits / (len(rows) * k))

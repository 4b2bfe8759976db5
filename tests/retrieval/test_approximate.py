"""Approximate large-map indexes against exact search: recall, memory, chunked building, files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from benchmarks._search_helpers import index_memory_bytes
from vprdistill.retrieval.approximate import (
    IndexFileError,
    build_index,
    empty_like,
    load_index,
    recall_against_exact,
    save_index,
    search_reranked,
)
from vprdistill.retrieval.search import exact_search

NUM, DIM, CLUSTERS = 4000, 64, 40


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread() -> Iterator[None]:
    # OpenMP threads spin on a shared 2-core machine; k-means then runs several times slower.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered unit descriptors (N, D), queries that are perturbed database rows (M, D), their exact top-10."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((CLUSTERS, DIM)))
    database = unit(centres[rng.integers(0, CLUSTERS, NUM)] + rng.standard_normal((NUM, DIM)) * 0.4 / np.sqrt(DIM))
    sources = rng.choice(NUM, 200, replace=False)
    queries = unit(database[sources] + rng.standard_normal((200, DIM)) * 0.3 / np.sqrt(DIM))
    _, exact = exact_search(database, queries, 10)
    return database, queries, exact


@pytest.fixture(scope="module")
def ivfpq(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> faiss.Index:
    return build_index(data[0], "ivfpq")


@pytest.fixture(scope="module")
def hnsw(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> faiss.Index:
    return build_index(data[0], "hnsw")


def test_flat_is_exact(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    database, queries, exact = data
    index = build_index(database, "flat")
    assert index.ntotal == NUM
    assert recall_against_exact(index.search(queries, 10)[1], exact) == {1: 1.0, 10: 1.0}


def test_approximate_indexes_find_the_exact_neighbour(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], ivfpq: faiss.Index, hnsw: faiss.Index
) -> None:
    _, queries, exact = data
    # HNSW keeps float32 vectors; with 32 links and ef_search 64 on 4,000 points a
    # search visits a large share of the graph, so missing the true neighbour in
    # the top 10 should be rare (faiss reports > 0.95 recall@1 at this setting on SIFT1M).
    assert recall_against_exact(hnsw.search(queries, 10)[1], exact)[10] >= 0.95
    # IVF-PQ: 8 bytes per 64-d vector (32× smaller than float32), 16 of 64 cells
    # scanned. Quantisation reorders near-ties (recall@1 ≈ 0.9 on these data) but
    # its error is well under the gap between a query's source row and the rest
    # of its cluster, so the neighbour stays in the top 10 (≥ 0.985 over 4 seeds).
    recall = recall_against_exact(ivfpq.search(queries, 10)[1], exact)
    assert recall[10] >= 0.9
    # Near-ties reorder under quantisation, so the exact first neighbour is not always first.
    assert recall[1] < recall[10]


def test_ivfpq_is_far_smaller_than_flat(data: tuple[np.ndarray, np.ndarray, np.ndarray], ivfpq: faiss.Index) -> None:
    flat = index_memory_bytes(build_index(data[0], "flat"))
    assert flat >= NUM * DIM * 4
    # 8 code bytes + an 8-byte id per vector against 256 bytes, plus fixed centroids
    # and codebooks (~80 kB) that a larger map amortises: about 7× smaller here.
    assert index_memory_bytes(ivfpq) < flat / 4


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_save_load_round_trip_searches_identically(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], ivfpq: faiss.Index, hnsw: faiss.Index, kind: str, tmp_path: Path
) -> None:
    index = {"ivfpq": ivfpq, "hnsw": hnsw}[kind]
    path = save_index(index, tmp_path / f"{kind}.faiss")
    loaded = load_index(path)
    before, after = index.search(data[1], 10), loaded.search(data[1], 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_chunks_build_the_same_index_as_one_array(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], ivfpq: faiss.Index
) -> None:
    database, queries, _ = data
    chunks = [database[:1500], database[1500:1501], database[1501:]]
    from_chunks = build_index(chunks, "ivfpq")
    np.testing.assert_array_equal(from_chunks.search(queries, 10)[1], ivfpq.search(queries, 10)[1])
    flat_from_generator = build_index((chunk for chunk in chunks), "flat")
    np.testing.assert_array_equal(flat_from_generator.search(queries, 5)[1], exact_search(database, queries, 5)[1])
    with pytest.raises(ValueError, match="one-shot iterator"):
        build_index((chunk for chunk in chunks), "ivfpq")


def test_reranking_a_memmapped_database_orders_the_shortlist_exactly(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], ivfpq: faiss.Index, tmp_path: Path
) -> None:
    database, queries, exact = data
    np.save(tmp_path / "db.npy", database)
    on_disk = np.load(tmp_path / "db.npy", mmap_mode="r")
    scores, indices = search_reranked(ivfpq, queries, 10, on_disk, shortlist=50)
    _, shortlist = ivfpq.search(queries, 50)
    in_shortlist = (shortlist == exact[:, :1]).any(axis=1)
    assert in_shortlist.mean() >= 0.95
    # Wherever the exact neighbour was shortlisted, re-ranking must put it first.
    np.testing.assert_array_equal(indices[in_shortlist, 0], exact[in_shortlist, 0])
    np.testing.assert_allclose(scores[:, 0], np.einsum("md,md->m", queries, database[indices[:, 0]]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_bad_arguments_and_files_are_named(data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    database = data[0]
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(database, "lsh")
    with pytest.raises(ValueError, match="m_pq=5 must divide"):
        build_index(database, "ivfpq", m_pq=5)
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((10, DIM), np.nan, np.float32), "flat")
    not_an_index = tmp_path / "notes.faiss"
    not_an_index.write_text("hello")
    with pytest.raises(IndexFileError, match="notes.faiss"):
        load_index(not_an_index)
    with pytest.raises(FileNotFoundError, match="missing.faiss"):
        load_index(tmp_path / "missing.faiss")


def numpy_pca_space(database: np.ndarray, rows: np.ndarray, dim: int) -> np.ndarray:
    """``rows`` normalised, projected on the top ``dim`` principal axes of the normalised database, normalised."""
    centred = unit(database) - unit(database).mean(axis=0)
    axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)[2][:dim]
    return unit((unit(rows) - unit(database).mean(axis=0)) @ axes.T)


def test_pca_prefix_searches_as_numpy_pca_then_normalisation(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    database, queries, _ = data
    index = build_index(database * 3.0, "flat", pca_dim=16)  # un-normalised input: the chain normalises it
    assert index.d == DIM and index.ntotal == NUM
    scores, indices = index.search(queries, 5)
    reduced_db, reduced_queries = numpy_pca_space(database, database, 16), numpy_pca_space(database, queries, 16)
    expected = reduced_queries @ reduced_db.T
    # Principal axes are defined up to sign, which inner products of projections do not see.
    np.testing.assert_allclose(scores, np.take_along_axis(expected, indices, axis=1), atol=1e-4)
    np.testing.assert_allclose(scores[:, 0], expected.max(axis=1), atol=1e-4)


@pytest.mark.parametrize(("kind", "pca_dim"), [("fp16", None), ("sq8", None), ("sq8", 32), ("hnsw", 32)])
def test_compressed_kinds_keep_the_exact_neighbour_and_survive_empty_like(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], kind: str, pca_dim: int | None
) -> None:
    database, queries, exact = data
    index = build_index(database, kind, pca_dim=pca_dim)
    found = index.search(queries, 10)[1]
    # fp16 and SQ8 err far below the gap between a query's source row and its
    # cluster; PCA to 32 of 64 dimensions keeps these 40 clusters apart.
    assert recall_against_exact(found, exact)[10] >= 0.9
    if kind == "fp16":
        scores = index.search(queries, 1)[0][:, 0]
        np.testing.assert_allclose(scores, np.einsum("md,md->m", queries, database[exact[:, 0]]), atol=2e-3)
    empty = empty_like(index)
    assert empty.ntotal == 0 and empty.d == DIM
    empty.add(database[:60])
    assert empty.search(database[:6], 1)[1][:, 0].tolist() == list(range(6))


def test_recall_against_exact_counts_hits_within_each_cut_off() -> None:
    found = np.array([[3, 1, 2], [0, 5, 6], [7, 8, 9]])
    assert recall_against_exact(found, np.array([1, 0, 4]), ks=(1, 2)) == {1: 1 / 3, 2: 2 / 3}

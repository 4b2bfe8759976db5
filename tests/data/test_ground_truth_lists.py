"""Datasets whose positives are lists: VPR-Bench folders and gsv-cities ``.npy`` lists.

Fixtures are written in the released formats: VPR-Bench's ``ground_truth_new.npy``
as Python 2 wrote it (pickle protocol 2, the published files) and as NumPy writes
it today, gsv-cities' lists with ``np.save``. Object arrays are read without
unpickling; the tests compare with NumPy's own (unpickling) loader on files
they made themselves.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprdistill.data.ground_truth_lists import (
    find_gsv_lists,
    is_gsv_lists_dir,
    is_gsv_lists_file,
    is_vprbench_dir,
    load_npy,
    read_gsv_lists,
    read_vprbench,
)
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.eval.evaluate import evaluate_descriptors


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def npy_bytes(pickled: bytes, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` file of an object array whose data is ``pickled``."""
    header = f"{{'descr': '|O', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin-1") + pickled


def python2_ground_truth(rows: list[tuple[int, list[int]]]) -> bytes:
    """``ground_truth_new.npy`` as VPR-Bench's Python 2 code wrote it (protocol 2, byte strings as STRING)."""

    def small_int(value: int) -> bytes:
        return b"K" + bytes([value]) if value < 256 else b"M" + struct.pack("<H", value)

    def short_string(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text

    out = [
        b"\x80\x02", b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", b"K\x00\x85", short_string(b"b"),
        b"\x87R(K\x01", small_int(len(rows)), b"K\x02\x86", b"cnumpy\ndtype\n", short_string(b"O8"),
        b"K\x00K\x01\x87R(K\x03", short_string(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb\x89]",
        b"(",
    ]  # fmt: skip
    for query, positives in rows:
        out.append(small_int(query) + b"](" + b"".join(small_int(p) for p in positives) + b"e")
    out.append(b"etb.")
    return npy_bytes(b"".join(out), (len(rows), 2))


# ---------------------------------------------------------------- .npy decoding


def test_python2_ground_truth_decodes_as_numpy_reads_it(tmp_path: Path) -> None:
    rows = [(0, [0, 1, 2]), (1, [1, 300]), (2, [])]
    path = tmp_path / "gt.npy"
    path.write_bytes(python2_ground_truth(rows))
    mine = load_npy(path)
    reference = np.load(path, allow_pickle=True, encoding="latin1")  # the fixture is ours: NumPy as the reference
    assert mine.shape == reference.shape == (3, 2) and mine.dtype == object
    for got, want, (query, positives) in zip(mine, reference, rows):
        assert got[0] == want[0] == query
        assert got[1] == list(want[1]) == positives


def test_numpy_object_arrays_decode_exactly(tmp_path: Path) -> None:
    values = np.empty(5, dtype=object)
    values[0] = np.array([3, 1, 2], dtype=np.int64)
    values[1] = np.array([], dtype=np.int64)
    values[2] = np.array([7], dtype=">i4")  # big-endian
    values[3] = range(2, 9, 3)
    values[4] = [np.int64(4), 5]
    path = tmp_path / "mixed.npy"
    np.save(path, values, allow_pickle=True)
    mine = load_npy(path)
    assert mine.dtype == object and mine.shape == (5,)
    for index in (0, 1, 2):
        assert mine[index].dtype == values[index].dtype
        np.testing.assert_array_equal(mine[index], values[index])
    assert mine[3] == [2, 5, 8] and mine[4] == [4, 5]
    # Plain arrays go through NumPy with allow_pickle=False.
    np.save(tmp_path / "plain.npy", np.array(["ref/a.jpg", "ref/b.jpg"]))
    assert load_npy(tmp_path / "plain.npy").tolist() == ["ref/a.jpg", "ref/b.jpg"]


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    values = np.empty(1, dtype=object)
    values[0] = _RunsACommand(marker)
    buffer = io.BytesIO()
    pickle.dump(values, buffer, protocol=2)
    path = tmp_path / "evil.npy"
    path.write_bytes(npy_bytes(buffer.getvalue(), (1,)))
    with pytest.raises(DatasetFormatError, match=r"evil\.npy.*system"):
        load_npy(path)
    assert not marker.exists()


def test_a_truncated_or_self_containing_object_array_is_a_format_error(tmp_path: Path) -> None:
    full = python2_ground_truth([(0, [0]), (1, [1])])
    path = tmp_path / "cut.npy"
    path.write_bytes(full[:-6])
    with pytest.raises(DatasetFormatError, match=r"cut\.npy"):
        load_npy(path)
    path = tmp_path / "loop.npy"
    path.write_bytes(npy_bytes(b"\x80\x02]q\x00h\x00a.", ()))  # a list appended to itself
    with pytest.raises(DatasetFormatError, match=r"loop\.npy"):
        load_npy(path)


# ---------------------------------------------------------------- VPR-Bench


@pytest.fixture
def vprbench_root(tmp_path: Path) -> Path:
    """ref/ with 12 images and query/ with 4, named 0..N without padding (numeric order differs from text order)."""
    root = tmp_path / "Toy"
    for index in range(12):
        write_jpeg(root / "ref" / f"{index}.jpg", index)
    for index in range(4):
        write_jpeg(root / "query" / f"{index}.jpg", 100 + index)
    # Rows in a shuffled order: the first column says which query a row is for.
    rows = [(2, [10, 11]), (0, [0, 1, 2]), (3, []), (1, [10])]
    (root / "ground_truth_new.npy").write_bytes(python2_ground_truth(rows))
    return root


def test_vprbench_positives_and_order_read_back(vprbench_root: Path) -> None:
    assert is_vprbench_dir(vprbench_root) and not is_vprbench_dir(vprbench_root / "ref")
    dataset = read_vprbench(vprbench_root)
    assert dataset.name == "Toy" and not dataset.has_positions
    # Numbered as VPR-Bench numbers them: 0, 1, ..., 10, 11 (text order would put 10 before 2).
    assert [p.name for p in dataset.database_paths] == [f"{i}.jpg" for i in range(12)]
    assert [p.name for p in dataset.query_paths] == [f"{i}.jpg" for i in range(4)]
    expected = {0: [0, 1, 2], 1: [10], 2: [10, 11], 3: []}
    for radius in (0.0, 25.0, 1e6):  # the radius is not used: the lists are the ground truth
        found = dataset.positives(radius)
        assert [f.tolist() for f in found] == [expected[q] for q in range(4)]
    assert np.isnan(dataset.distances_to_database(0)).all()
    with pytest.raises(DatasetFormatError, match="training mining"):
        dataset.require_positions("training mining")


def test_vprbench_ground_truth_written_by_numpy_today(vprbench_root: Path) -> None:
    table = np.empty((4, 2), dtype=object)
    for query, positives in enumerate([[5], [6, 7], [], [0]]):
        table[query, 0], table[query, 1] = query, list(positives)
    np.save(vprbench_root / "ground_truth_new.npy", table, allow_pickle=True)
    found = read_vprbench(vprbench_root).positives(25.0)
    assert [f.tolist() for f in found] == [[5], [6, 7], [], [0]]


def test_vprbench_index_outside_the_database_is_refused(vprbench_root: Path) -> None:
    (vprbench_root / "ground_truth_new.npy").write_bytes(python2_ground_truth([(0, [0]), (1, [12]), (2, []), (3, [])]))
    with pytest.raises(DatasetFormatError, match=r"row 1: database index 12 is outside the 12"):
        read_vprbench(vprbench_root)
    (vprbench_root / "ground_truth_new.npy").write_bytes(python2_ground_truth([(0, [0]), (1, [1])]))
    with pytest.raises(DatasetFormatError, match="2 rows for the 4 images"):
        read_vprbench(vprbench_root)


# ---------------------------------------------------------------- gsv-cities lists


def gsv_set(lists: Path, images: Path, name: str = "Toy", num_database: int = 10, num_queries: int = 5) -> list:
    """Lists ``<name>_{db,q}Images.npy`` in ``lists``, images under ``images``; returns the positives written."""
    lists.mkdir(parents=True, exist_ok=True)
    database = [f"ref/{i:07d}.jpg" for i in range(num_database)]
    queries = [f"query/{i:07d}.jpg" for i in range(num_queries)]
    for index, relative in enumerate(database + queries):
        write_jpeg(images / relative, index)
    np.save(lists / f"{name}_dbImages.npy", np.array(database))
    np.save(lists / f"{name}_qImages.npy", np.array(queries))
    positives = [np.array(sorted({q, (q + 3) % num_database}), dtype=np.int64) for q in range(num_queries)]
    positives[-1] = np.zeros(0, dtype=np.int64)
    return positives


def test_gsv_lists_positives_and_paths(tmp_path: Path) -> None:
    lists, images = tmp_path / "gsv-cities" / "datasets" / "Toy", tmp_path / "VPR-Bench" / "Toy"
    positives = gsv_set(lists, images)
    table = np.empty(len(positives), dtype=object)
    for index, found in enumerate(positives):
        table[index] = found
    np.save(lists / "Toy_gt.npy", table, allow_pickle=True)
    dataset = read_gsv_lists(lists, image_root=images)
    assert dataset.name == "Toy" and not dataset.has_positions
    assert dataset.database_paths[3] == images / "ref/0000003.jpg"
    assert dataset.query_paths[4] == images / "query/0000004.jpg"
    assert [f.tolist() for f in dataset.positives(25.0)] == [p.tolist() for p in positives]
    # One of the files names the set and its folder as well.
    again = read_gsv_lists(lists / "Toy_qImages.npy", image_root=images)
    assert [f.tolist() for f in again.positives(0.0)] == [p.tolist() for p in positives]


def test_gsv_lists_integer_ground_truth_and_msls_query_selection(tmp_path: Path) -> None:
    lists, images = tmp_path / "lists", tmp_path / "images"
    gsv_set(lists, images, name="SPED")
    np.save(lists / "SPED_gt.npy", np.arange(5, dtype=np.int64).reshape(5, 1))  # SPED and ESSEX: one per query
    assert [f.tolist() for f in read_gsv_lists(lists, images).positives(25.0)] == [[0], [1], [2], [3], [4]]

    gsv_set(lists, images, name="msls_val")
    np.save(lists / "msls_val_qIdx.npy", np.array([0, 2, 3], dtype=np.int64))
    chosen = np.empty(3, dtype=object)
    for index, found in enumerate([[1, 2], [9], [0]]):
        chosen[index] = np.array(found, dtype=np.int64)
    np.save(lists / "msls_val_pIdx.npy", chosen, allow_pickle=True)
    with pytest.raises(DatasetFormatError, match="several sets"):
        read_gsv_lists(lists, images)
    dataset = read_gsv_lists(lists, images, name="msls_val")
    assert [p.name for p in dataset.query_paths] == ["0000000.jpg", "0000002.jpg", "0000003.jpg"]
    assert [f.tolist() for f in dataset.positives(25.0)] == [[1, 2], [9], [0]]


def test_gsv_lists_gt_file_with_a_suffix(tmp_path: Path) -> None:
    lists, images = tmp_path / "lists", tmp_path / "images"
    gsv_set(lists, images, name="msls_val", num_queries=3)
    gt = np.empty(3, dtype=object)
    for index, found in enumerate([[4], [5, 6], [7]]):
        gt[index] = np.array(found)
    np.save(lists / "msls_val_gt_25m.npy", gt, allow_pickle=True)
    assert [f.tolist() for f in read_gsv_lists(lists, images).positives(25.0)] == [[4], [5, 6], [7]]
    assert find_gsv_lists(lists / "msls_val_gt_25m.npy") == (lists, "msls_val")
    assert find_gsv_lists(lists / "msls_val_dbImages.npy") == (lists, "msls_val")
    assert is_gsv_lists_dir(lists) and is_gsv_lists_file(lists / "msls_val_qImages.npy")
    assert not is_gsv_lists_dir(images) and not is_gsv_lists_file(images / "ref" / "0000000.jpg")


def test_skipped_database_images_renumber_the_positives(tmp_path: Path) -> None:
    lists, images = tmp_path / "lists", tmp_path / "images"
    positives = gsv_set(lists, images)
    table = np.empty(len(positives), dtype=object)
    for index, found in enumerate(positives):
        table[index] = found
    np.save(lists / "Toy_gt.npy", table, allow_pickle=True)
    (images / "ref/0000001.jpg").write_bytes(b"not a jpeg")
    (images / "ref/0000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="0000004.jpg"):
        read_gsv_lists(lists, images)
    dataset = read_gsv_lists(lists, images, skip_bad_images=True)
    assert dataset.num_database == 8
    # Compared by path: each query keeps exactly its readable positives.
    bad = {"0000001.jpg", "0000004.jpg"}
    for query, found in enumerate(dataset.positives(25.0)):
        got = {dataset.database_paths[i].name for i in found}
        assert got == {f"{i:07d}.jpg" for i in positives[query]} - bad


# ---------------------------------------------------------------- PlaceDataset with explicit positives


def explicit_dataset(positives: list[list[int]], num_database: int) -> PlaceDataset:
    return PlaceDataset(
        name="lists",
        root=Path("/nowhere"),
        split="test",
        database_paths=[Path(f"db_{i}.jpg") for i in range(num_database)],
        query_paths=[Path(f"q_{i}.jpg") for i in range(len(positives))],
        database_utm=np.zeros((num_database, 2)),
        query_utm=np.zeros((len(positives), 2)),
        query_positives=[np.array(p, dtype=np.int64) for p in positives],
        has_positions=False,
    )


def test_subset_follows_database_images_to_their_new_indices() -> None:
    dataset = explicit_dataset([[0, 3], [2], [4, 1]], num_database=5)
    part = dataset.subset(query_indices=[2, 0], database_indices=[4, 3, 1, 4])
    # Query 2's positives 4 and 1 sit at new indices 0 and 3 (4 is kept twice) and 2.
    assert [p.tolist() for p in part.positives(1.0)] == [[0, 2, 3], [1]]
    assert not part.has_positions


def test_explicit_positives_are_checked() -> None:
    with pytest.raises(DatasetFormatError, match=r"query_positives\[1\] holds database index 5"):
        explicit_dataset([[0], [5]], num_database=5)
    with pytest.raises(DatasetFormatError, match="query_positives has 1 entries, expected 2"):
        PlaceDataset(
            name="x", root=Path("/"), split="test", database_paths=[Path("a.jpg")], query_paths=[Path("q.jpg")] * 2,
            database_utm=np.zeros((1, 2)), query_utm=np.zeros((2, 2)), query_positives=[np.array([0])],
        )  # fmt: skip
    with pytest.raises(DatasetFormatError, match="must be given as query_positives"):
        PlaceDataset(
            name="x", root=Path("/"), split="test", database_paths=[Path("a.jpg")], query_paths=[Path("q.jpg")],
            database_utm=np.zeros((1, 2)), query_utm=np.zeros((1, 2)), has_positions=False,
        )  # fmt: skip


def brute_force_recall(database: np.ndarray, queries: np.ndarray, positives, ns, exclude: bool) -> dict[str, float]:
    """Recall@N from a full sort of the inner products: the independent reference."""
    order = np.argsort(-(queries @ database.T), axis=1, kind="stable")
    counted = [q for q in range(len(queries)) if len(positives[q]) or not exclude]
    return {
        str(n): 100.0 * sum(bool(set(order[q, :n].tolist()) & set(positives[q])) for q in counted) / len(counted)
        for n in ns
    }


@pytest.mark.parametrize("convention", ["count-as-miss", "exclude"])
def test_evaluation_with_explicit_positives_matches_brute_force(convention: str) -> None:
    rng = np.random.default_rng(3)
    num_database, num_queries, dim = 40, 25, 8
    database = rng.normal(size=(num_database, dim)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    # Queries are noisy copies of a database image; the lists name some other image half the time.
    sources = rng.integers(0, num_database, num_queries)
    queries = database[sources] + 0.6 * rng.normal(size=(num_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    positives = []
    for q, source in enumerate(sources):
        listed = {int(source)} if q % 2 else {int(rng.integers(0, num_database)), int(rng.integers(0, num_database))}
        positives.append(sorted(listed) if q % 7 else [])  # some queries have no positive
    dataset = explicit_dataset(positives, num_database)
    ns = (1, 3, 5, 10)
    expected = brute_force_recall(database, queries, positives, ns, exclude=convention == "exclude")
    assert 0 < expected["1"] < expected["10"] < 100  # neither trivial nor degenerate
    for threshold in (0.0, 25.0, 1e9):  # all positions are 0: a radius would make every image a positive
        result = evaluate_descriptors(
            database, queries, dataset, threshold_m=threshold, recall_ns=ns, queries_without_positive=convention
        )
        assert result.recall == pytest.approx(expected)
        assert result.num_queries_without_positive == sum(len(p) == 0 for p in positives)
        assert result.to_json()["ground_truth"] == "explicit positives; threshold_m not used"

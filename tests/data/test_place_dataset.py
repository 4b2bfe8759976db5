from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset


def make_dataset(database_utm: np.ndarray, query_utm: np.ndarray, **extra) -> PlaceDataset:
    return PlaceDataset(
        name="toy",
        root=Path("/nowhere"),
        split="test",
        database_paths=[Path(f"db_{i}.jpg") for i in range(len(database_utm))],
        query_paths=[Path(f"q_{i}.jpg") for i in range(len(query_utm))],
        database_utm=database_utm,
        query_utm=query_utm,
        **extra,
    )


def brute_force(points: np.ndarray, centres: np.ndarray, radius: float) -> list[np.ndarray]:
    distances = np.linalg.norm(centres[:, None, :] - points[None, :, :], axis=2)
    result = []
    for d in distances:
        inside = np.flatnonzero(d <= radius)
        result.append(inside[np.argsort(d[inside], kind="stable")])
    return result


@pytest.fixture
def random_dataset() -> PlaceDataset:
    rng = np.random.default_rng(0)
    database = rng.uniform(0, 200, size=(300, 2))
    queries = rng.uniform(0, 200, size=(60, 2))
    queries[:5] += 10_000  # far from every database image: no positives
    return make_dataset(database, queries)


@pytest.mark.parametrize("radius", [10.0, 25.0])
def test_positives_match_brute_force(random_dataset: PlaceDataset, radius: float) -> None:
    found = random_dataset.positives(radius)
    expected = brute_force(random_dataset.database_utm, random_dataset.query_utm, radius)
    assert len(found) == random_dataset.num_queries
    for query, (got, want) in enumerate(zip(found, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"query {query}")
        distances = random_dataset.distances_to_database(query)[got]
        assert np.all(np.diff(distances) >= 0)
    assert all(len(found[q]) == 0 for q in range(5))
    assert sum(len(f) > 0 for f in found[5:]) > 40  # the random case is not trivially empty


def test_positive_radius_is_inclusive() -> None:
    dataset = make_dataset(np.array([[3.0, 4.0], [0.0, 6.0], [30.0, 0.0]]), np.array([[0.0, 0.0]]))
    np.testing.assert_array_equal(dataset.positives(5.0)[0], [0])
    np.testing.assert_array_equal(dataset.positives(6.0)[0], [0, 1])


def test_positives_are_cached_and_read_only(random_dataset: PlaceDataset) -> None:
    first = random_dataset.positives(25.0)
    second = random_dataset.positives(25.0)
    assert first[7] is second[7]
    with pytest.raises(ValueError):
        first[7][...] = 0
    with pytest.raises(ValueError, match="radius"):
        random_dataset.positives(-1.0)


def test_subset_keeps_lists_parallel() -> None:
    database = np.arange(10, dtype=float)[:, None] * np.array([[1.0, 0.0]])
    queries = np.arange(4, dtype=float)[:, None] * np.array([[0.0, 1.0]])
    dataset = make_dataset(database, queries, query_notes=["night", "", "day", "snow"])
    part = dataset.subset(query_indices=[3, 0], database_indices=np.array([True, False] * 5))
    assert part.num_queries == 2 and part.num_database == 5
    assert part.query_paths == [Path("q_3.jpg"), Path("q_0.jpg")]
    np.testing.assert_array_equal(part.query_utm, queries[[3, 0]])
    assert part.database_paths == [Path(f"db_{i}.jpg") for i in (0, 2, 4, 6, 8)]
    np.testing.assert_array_equal(part.database_utm[:, 0], [0, 2, 4, 6, 8])
    assert part.query_conditions() == ["snow", "night"]
    assert dataset.query_conditions() == ["night", "unknown", "day", "snow"]
    with pytest.raises(IndexError):
        dataset.subset(query_indices=[4])


def test_validation_names_the_field() -> None:
    database = np.zeros((3, 2))
    with pytest.raises(DatasetFormatError, match="query_utm"):
        make_dataset(database, np.zeros((2, 3)))
    with pytest.raises(DatasetFormatError, match="no queries"):
        make_dataset(database, np.zeros((0, 2)))
    with pytest.raises(DatasetFormatError, match="database_utm.*not finite"):
        make_dataset(np.array([[0.0, 0.0], [np.nan, 1.0]]), np.zeros((1, 2)))
    with pytest.raises(DatasetFormatError, match="query_notes"):
        make_dataset(database, np.zeros((2, 2)), query_notes=["a"])
    with pytest.raises(DatasetFormatError, match="only one"):
        make_dataset(database, np.zeros((2, 2)), database_seg_paths=[Path("a.png")] * 3)


def test_segmentation_and_sizes() -> None:
    dataset = make_dataset(
        np.zeros((2, 2)),
        np.zeros((1, 2)),
        database_seg_paths=["a.png", "b.png"],
        query_seg_paths=["c.png"],
    )
    assert dataset.has_segmentation
    assert dataset.database_seg_paths == [Path("a.png"), Path("b.png")]
    assert (dataset.num_database, dataset.num_queries) == (2, 1)
    assert "database=2" in repr(dataset)

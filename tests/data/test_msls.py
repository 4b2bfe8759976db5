"""MSLS in its released layout: CSV columns, protocols, day/night, and cities kept apart.

The fixture writes ``ROOT/train_val/<city>/{database,query}/`` with the headers
of the released files (checked against readers of the real data):
``raw.csv`` ``,key,lon,lat,ca,captured_at,pano``; ``postprocessed.csv``
``,key,easting,northing,unique_cluster,control_panel,night,view_direction``;
``seq_info.csv`` ``,key,sequence_key,frame_number``; ``subtask_index.csv`` one
True/False column per subtask.

Both cities use the same UTM numbers (as two cities in different zones can):
only the city labels tell their images apart.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprdistill.data.msls import is_msls_root, parse_msls_split, read_msls, read_msls_split
from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.eval.evaluate import evaluate_descriptors

RAW_HEADER = ["", "key", "lon", "lat", "ca", "captured_at", "pano"]
POST_HEADER = ["", "key", "easting", "northing", "unique_cluster", "control_panel", "night", "view_direction"]
SEQ_HEADER = ["", "key", "sequence_key", "frame_number"]
SUBTASK_HEADER = ["", "all", "s2w", "w2s", "o2n", "n2o", "d2n", "n2d"]
EAST0, NORTH0 = 500000.0, 6170000.0

# Per city and folder: (key, east offset m, north offset m, night, pano, in the 'all' subtask).
CITIES = {
    "cph": {
        "database": [(f"cdb{i}", 100.0 * i, 0.0, False, i == 5, True) for i in range(6)],
        "query": [
            ("cq0", 4.0, 3.0, False, False, True),  # 5 m from cdb0
            ("cq1", 103.0, 0.0, True, False, True),  # 3 m from cdb1, at night
            ("cq2", 200.0, 10.0, False, False, False),  # not in the 'all' subtask
            ("cq3", 300.0, 0.0, False, True, True),  # a panorama
            ("cq4", 5000.0, 5000.0, True, False, True),  # no database image within 25 m
        ],
    },
    "sf": {
        # The same UTM numbers as cph's first images: a query of one city sits "on" the other's images.
        "database": [(f"sdb{i}", 100.0 * i, 0.0, False, False, True) for i in range(4)],
        "query": [
            ("sq0", 2.0, 0.0, False, False, True),
            ("sq1", 301.0, 1.0, True, False, True),
        ],
    },
}


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[index, *row] for index, row in enumerate(rows)])


def write_city_folder(folder: Path, rows: list[tuple], seed: int) -> None:
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for key, *_ in rows:
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / "images" / f"{key}.jpg")
    write_csv(folder / "raw.csv", RAW_HEADER,
              [[key, 12.5 + e * 1e-5, 55.6 + n * 1e-5, 90.0, "2017-06-01 12:00:00", str(pano)]
               for key, e, n, _, pano, _ in rows])  # fmt: skip
    write_csv(folder / "postprocessed.csv", POST_HEADER,
              [[key, EAST0 + e, NORTH0 + n, index // 3, "False", str(night), "Forward"]
               for index, (key, e, n, night, _, _) in enumerate(rows)])  # fmt: skip
    write_csv(folder / "seq_info.csv", SEQ_HEADER, [[key, f"seq{i // 3}", i % 3] for i, (key, *_) in enumerate(rows)])
    write_csv(folder / "subtask_index.csv", SUBTASK_HEADER,
              [[str(in_all), "False", "False", "False", "False", "False", "False"] for *_, in_all in rows])  # fmt: skip


@pytest.fixture
def msls_root(tmp_path: Path) -> Path:
    root = tmp_path / "MSLS"
    for seed, (city, folders) in enumerate(CITIES.items()):
        for name, rows in folders.items():
            write_city_folder(root / "train_val" / city / name, rows, seed * 10 + len(name))
    return root


def keys(paths) -> list[str]:
    return [p.stem for p in paths]


def test_val740_keeps_subtask_non_panorama_queries_with_a_positive(msls_root: Path) -> None:
    dataset = read_msls(msls_root)
    assert dataset.name == "msls" and dataset.split == "val"
    assert keys(dataset.query_paths) == ["cq0", "cq1", "sq0", "sq1"]
    # The panorama cdb5 is no database image either.
    assert keys(dataset.database_paths) == [f"cdb{i}" for i in range(5)] + [f"sdb{i}" for i in range(4)]
    assert dataset.query_paths[0] == msls_root / "train_val/cph/query/images/cq0.jpg"
    assert dataset.query_groups == ["cph", "cph", "sf", "sf"]
    assert dataset.database_groups == ["cph"] * 5 + ["sf"] * 4


def test_full_keeps_every_non_panorama_image(msls_root: Path) -> None:
    dataset = read_msls(msls_root, protocol="full")
    assert keys(dataset.query_paths) == ["cq0", "cq1", "cq2", "cq4", "sq0", "sq1"]
    assert dataset.num_database == 9
    assert len(dataset.positives(25.0)[3]) == 0  # cq4 stays, without a positive
    only_sf = read_msls(msls_root, protocol="full", cities="sf")
    assert keys(only_sf.query_paths) == ["sq0", "sq1"] and only_sf.num_database == 4


def test_positions_and_day_night_notes(msls_root: Path) -> None:
    dataset = read_msls(msls_root)
    np.testing.assert_allclose(dataset.query_utm[0], [EAST0 + 4.0, NORTH0 + 3.0])
    np.testing.assert_allclose(dataset.database_utm[6], [EAST0 + 100.0, NORTH0])  # sdb1
    assert dataset.query_notes == ["day", "night", "day", "night"]
    assert dataset.query_conditions() == ["day", "night", "day", "night"]
    np.testing.assert_allclose(dataset.distances_to_database(0)[0], 5.0)


def test_positives_stay_within_the_city(msls_root: Path) -> None:
    separated = read_msls(msls_root)
    # cq0 lies 5 m from cdb0 and, in UTM numbers alone, 5 m from sf's sdb0 (index 5): only cdb0 counts.
    assert [p.tolist() for p in separated.positives(25.0)] == [[0], [1], [5], [8]]
    together = read_msls(msls_root, separate_cities=False)
    assert together.query_groups is None
    assert sorted(together.positives(25.0)[0].tolist()) == [0, 5]


def city_descriptors(dataset, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random unit descriptors; cph's first query looks most like sf's sdb0, then like cph's cdb0."""
    database = rng.normal(size=(dataset.num_database, 16)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    queries = rng.normal(size=(dataset.num_queries, 16)).astype(np.float32)
    queries[0] = 0.8 * database[5] + 0.6 * database[0]  # sdb0 first overall, cdb0 first within cph
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return database, queries


def test_a_query_is_searched_only_within_its_city(msls_root: Path) -> None:
    rng = np.random.default_rng(0)
    separated = read_msls(msls_root)
    database, queries = city_descriptors(separated, rng)
    overall_best = int(np.argmax(queries[0] @ database.T))
    assert separated.database_groups[overall_best] == "sf"  # the case where separation matters

    result = evaluate_descriptors(database, queries, separated, recall_ns=(1, 5, 10))
    assert result.search_groups == {"cph": {"num_database": 5, "num_queries": 2},
                                    "sf": {"num_database": 4, "num_queries": 2}}  # fmt: skip
    groups = np.asarray(separated.database_groups)
    for query, group in enumerate(separated.query_groups):
        row = result.predictions[query]
        in_city = np.flatnonzero(groups == group)
        found = row[row >= 0]
        assert len(found) == len(in_city) and set(found.tolist()) == set(in_city.tolist())
        # Ranked as a brute-force search of the city's images alone.
        expected = in_city[np.argsort(-(queries[query] @ database[in_city].T), kind="stable")]
        np.testing.assert_array_equal(found, expected)
        assert (row[len(found) :] == -1).all()  # K = 9 > this city's database: padded
    assert result.predictions[0, 0] == 0

    # Searched all together, the same query's first match is sf's image.
    together = read_msls(msls_root, separate_cities=False)
    joint = evaluate_descriptors(database, queries, together, recall_ns=(1, 5, 10))
    assert joint.predictions[0, 0] == overall_best and joint.search_groups is None


def test_grouped_recall_matches_a_brute_force_per_city(msls_root: Path) -> None:
    rng = np.random.default_rng(1)
    dataset = read_msls(msls_root, protocol="full")
    database, queries = city_descriptors(dataset, rng)
    ns = (1, 2, 3)
    result = evaluate_descriptors(database, queries, dataset, threshold_m=25.0, recall_ns=ns)
    groups = np.asarray(dataset.database_groups)
    # Independently: metres to the city's images, nearest descriptors of the city, any positive in the top n.
    hits = {n: 0 for n in ns}
    for query, group in enumerate(dataset.query_groups):
        in_city = np.flatnonzero(groups == group)
        metres = np.linalg.norm(dataset.database_utm[in_city] - dataset.query_utm[query], axis=1)
        right = set(in_city[metres <= 25.0].tolist())
        ranked = in_city[np.argsort(-(queries[query] @ database[in_city].T), kind="stable")]
        for n in ns:
            hits[n] += bool(right & set(ranked[:n].tolist()))
    expected = {str(n): 100.0 * hits[n] / dataset.num_queries for n in ns}
    assert result.recall == pytest.approx(expected)
    assert set(result.recall_per_condition) == {"day", "night"}
    assert result.recall_per_condition["night"]["num_queries"] == 3  # cq1, cq4, sq1


def test_csv_errors_name_the_file(msls_root: Path) -> None:
    post = msls_root / "train_val/sf/query/postprocessed.csv"
    text = post.read_text()
    post.write_text(text.replace("northing", "north"))
    with pytest.raises(DatasetFormatError, match=r"sf/query/postprocessed\.csv: no column northing"):
        read_msls(msls_root)
    post.write_text(text)
    raw = msls_root / "train_val/sf/query/raw.csv"
    raw.write_text(raw.read_text().replace("sq1", "sqX"))
    with pytest.raises(DatasetFormatError, match=r"raw\.csv row 1: key 'sqX'"):
        read_msls(msls_root)


def test_missing_images_and_test_cities(msls_root: Path) -> None:
    (msls_root / "train_val/cph/database/images/cdb2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="cdb2.jpg"):
        read_msls(msls_root)
    dataset = read_msls(msls_root, skip_bad_images=True)
    assert "cdb2" not in keys(dataset.database_paths) and dataset.num_database == 8
    with pytest.raises(DatasetFormatError, match="test cities"):
        read_msls(msls_root, cities=["cph", "miami"])
    with pytest.raises(DatasetFormatError, match="no folder .*train_val"):
        read_msls(msls_root / "train_val" / "cph")


def test_split_names_choose_the_protocol(msls_root: Path) -> None:
    assert parse_msls_split("val") == ("val", "val740") and parse_msls_split(None) == ("val", "val740")
    assert parse_msls_split("val-full") == ("val", "full") and parse_msls_split("train") == ("train", "full")
    with pytest.raises(ValueError, match="protocol one of val740, full"):
        parse_msls_split("val-all")
    assert read_msls_split(msls_root, "val-full").num_queries == 6
    assert is_msls_root(msls_root) and is_msls_root(msls_root / "train_val")
    assert not is_msls_root(msls_root / "train_val" / "cph")


def test_re_ranking_a_grouped_search_sees_only_the_city_images(msls_root: Path) -> None:
    dataset = read_msls(msls_root)
    database, queries = city_descriptors(dataset, np.random.default_rng(2))
    seen = []

    def reverse(query: int, candidates: np.ndarray) -> np.ndarray:
        seen.append((query, candidates.copy()))
        return candidates[::-1]

    result = evaluate_descriptors(database, queries, dataset, recall_ns=(1, 5), reranker=reverse, rerank_topk=9)
    groups = np.asarray(dataset.database_groups)
    for query, candidates in seen:
        assert (candidates >= 0).all() and set(groups[candidates]) == {dataset.query_groups[query]}
    # The first prediction is now the city's worst match.
    for query, candidates in seen:
        assert result.predictions[query, 0] == candidates[-1]

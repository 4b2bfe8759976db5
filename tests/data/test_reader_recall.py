"""Recall@1/5/10 of every dataset reader against a brute-force count over the fixture's own ground truth.

For each layout a small fixture is written with the writers of that reader's
test module, seeded random descriptors are evaluated with
``evaluate_descriptors``, and Recall@N is compared with a count written here
in NumPy alone: positives are the database images within 25 m of a query by
the positions the fixture wrote (or the fixture's own lists of positives),
each query ranks its candidates by a full argsort of the inner products (the
database images of its own city for MSLS), and Recall@N is the share of
queries with a positive among their top N. Queries without a positive count as
misses, the project's default, or are left out (``exclude``).

Descriptors are made in the fixture's order and handed to the evaluation in the
reader's order, so a reader that paired an image with another image's position
or list would fail the comparison, not only a wrong count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data import test_ground_truth_lists as lists_helpers
from tests.data import test_msls as msls_helpers
from tests.data.netvlad_files import netvlad_fields, tiny_jpeg, write_db_struct, write_db_struct_v73
from tests.data.test_readers import folder_name
from tests.data.test_two_folders import latlon_csv
from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.readers import open_dataset_with_source
from vprdistill.data.two_folders import read_two_folders
from vprdistill.eval.evaluate import EvaluationResult, evaluate_descriptors

RADIUS_M = 25.0
NS = (1, 5, 10)
EVERY_N = tuple(range(1, 12))  # the whole curve too: two wrong pairings rarely give the same one
DIM = 64
RANKS = (0, 4, 9, 10, 1, 5)  # where each query's positive is ranked, cycling
# No query lies within this many metres of the radius from any database image: lat/lon written on a
# sphere and read back through UTM (scale 0.9996-1.001) moves 25 m by centimetres, never across it.
MARGIN_M = 3.0
EAST0, NORTH0 = 585000.0, 4477000.0  # zone 17T, Pittsburgh
LAT0, LON0 = 40.4406, -79.9959


# ---------------------------------------------------------------- fixture geometry and descriptors


def grid_places(count: int) -> np.ndarray:
    """(count, 2) metres: places 60 m apart, four to a row."""
    return np.array([[60.0 * (i % 4), 60.0 * (i // 4)] for i in range(count)])


def street_layout(num_places: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """Database and query positions in metres from an origin.

    One database image per place, a second 8.5 m away at every fourth place and
    a third 14.4 m away at every third; a query 6.4 m from each place but the
    last two (its positives 6.4, 8.9 and 20.6 m away), and two queries a
    kilometre away (none).
    """
    places = grid_places(num_places)
    database = np.concatenate([places, places[::4] + [8.0, 3.0], places[1::3] + [-12.0, 8.0]])
    queries = np.concatenate([places[: num_places - 2] + [4.0, -5.0], [[1000.0, 1000.0], [-900.0, 400.0]]])
    return database, queries


def positives_within(
    database_xy: np.ndarray,
    query_xy: np.ndarray,
    database_groups: list[str] | None = None,
    query_groups: list[str] | None = None,
) -> list[set[int]]:
    """Per query, the database indices within RADIUS_M metres (of its own group when groups are given)."""
    found = []
    for j, point in enumerate(query_xy):
        metres = np.sqrt(((database_xy - point) ** 2).sum(axis=1))
        assert not (np.abs(metres - RADIUS_M) < MARGIN_M).any(), "fixture: a distance too close to the radius"
        same = (
            np.ones(len(database_xy), bool) if query_groups is None else np.asarray(database_groups) == query_groups[j]
        )
        found.append(set(np.flatnonzero((metres <= RADIUS_M) & same).tolist()))
    return found


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def make_descriptors(
    rng: np.random.Generator,
    num_database: int,
    positives: list[set[int]],
    groups: tuple[list[str], list[str]] | None = None,
    outside_decoys: dict[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, DIM) database and (M, DIM) query unit descriptors in the fixture's order.

    The database rows are random orthonormal vectors, so a query built as a
    weighted sum of them has those weights as inner products (plus noise far
    below their gaps). Query j ranks its last positive ``RANKS[j % 6]``-th
    (0-based), after as many random non-positive candidates of its own group
    (fewer when the group has fewer), its other positives among the rest: the
    first right match comes at N = 1, 2, 5, 6, 10 or after 10, on both sides of
    each N of Recall@1/5/10. ``outside_decoys[j]``, a database
    image outside the query's group, is weighted above all (seen only by a
    search that ignores the groups). A query without a positive weights random
    candidates only.
    """
    assert num_database <= DIM
    basis, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    database = basis[:num_database].astype(np.float32)
    queries = np.empty((len(positives), DIM), np.float32)
    for j, found in enumerate(positives):
        candidates = range(num_database) if groups is None else np.flatnonzero(np.asarray(groups[0]) == groups[1][j])
        pool = [i for i in candidates if i not in found]
        rank = min(RANKS[j % len(RANKS)], len(pool))
        weights = np.zeros(num_database)
        weights[rng.choice(pool, size=rank, replace=False)] = 1.0 - 0.04 * np.arange(rank)
        if found:
            weights[max(found)] = 1.0 - 0.04 * rank
        if outside_decoys and j in outside_decoys:
            weights[outside_decoys[j]] = 1.2
        queries[j] = weights @ database + 0.002 * rng.normal(size=DIM)
    return database, unit(queries)


def brute_force_recall(
    database: np.ndarray,
    queries: np.ndarray,
    positives: list[set[int]],
    exclude: bool = False,
    database_groups: list[str] | None = None,
    query_groups: list[str] | None = None,
    ns: tuple[int, ...] = NS,
) -> dict[str, float]:
    """Recall@N in percent: rank every candidate of a query by inner product, look for a positive in the top N."""
    hits = dict.fromkeys(ns, 0)
    counted = 0
    for j, query in enumerate(queries):
        if exclude and not positives[j]:
            continue
        counted += 1
        if query_groups is None:
            candidates = np.arange(len(database))
        else:
            candidates = np.flatnonzero(np.asarray(database_groups) == query_groups[j])
        ranked = candidates[np.argsort(-(database[candidates] @ query), kind="stable")]
        for n in ns:
            hits[n] += bool(positives[j] & set(ranked[:n].tolist()))
    return {str(n): 100.0 * hits[n] / counted for n in ns}


def order_of(paths: list[Path], keys: list[str], key) -> np.ndarray:
    """For each image the reader gives, its index in the fixture (matched by ``key(path)``)."""
    index = {k: i for i, k in enumerate(keys)}
    order = np.array([index[key(p)] for p in paths], dtype=np.int64)
    assert sorted(order.tolist()) == list(range(len(keys))), "the reader did not give each fixture image once"
    return order


def check_recall(
    dataset: PlaceDataset,
    database: np.ndarray,
    queries: np.ndarray,
    positives: list[set[int]],
    database_order: np.ndarray,
    query_order: np.ndarray,
    groups: tuple[list[str], list[str]] | None = None,
    conditions: list[str] | None = None,
) -> tuple[dict[str, float], EvaluationResult]:
    """Evaluate in the reader's order and compare with the brute force in the fixture's.

    ``groups`` (database, query labels in the fixture's order) restricts each
    query's search to its group; ``conditions`` (per fixture query) checks the
    per-condition table too. Returns the brute force's Recall@1/5/10 and the evaluation.
    """
    grouping = {} if groups is None else {"database_groups": groups[0], "query_groups": groups[1]}
    expected = brute_force_recall(database, queries, positives, **grouping)
    assert 0 < expected["1"] < expected["10"] < 100, expected  # the check can fail in both directions
    db_in_reader_order, q_in_reader_order = database[database_order], queries[query_order]
    result = evaluate_descriptors(db_in_reader_order, q_in_reader_order, dataset, threshold_m=RADIUS_M, recall_ns=NS)
    assert result.queries_without_positive == "count-as-miss"  # the default the brute force assumes
    assert result.recall == pytest.approx(expected)
    curve = evaluate_descriptors(db_in_reader_order, q_in_reader_order, dataset, RADIUS_M, EVERY_N).recall
    assert curve == pytest.approx(brute_force_recall(database, queries, positives, ns=EVERY_N, **grouping))
    without = sum(not found for found in positives)
    assert result.num_queries_without_positive == without
    if without:
        excluded = evaluate_descriptors(
            db_in_reader_order, q_in_reader_order, dataset, threshold_m=RADIUS_M, recall_ns=NS,
            queries_without_positive="exclude",
        )  # fmt: skip
        assert excluded.recall == pytest.approx(brute_force_recall(database, queries, positives, True, **grouping))
        assert excluded.recall != result.recall
    if conditions is not None:
        assert result.recall_per_condition is not None
        reader_conditions = [conditions[j] for j in query_order]
        assert set(result.recall_per_condition) == set(conditions)
        for condition in set(conditions):
            members = [j for j, c in enumerate(conditions) if c == condition]
            subgroups = {}
            if groups is not None:
                subgroups = {"database_groups": groups[0], "query_groups": [groups[1][j] for j in members]}
            want = brute_force_recall(database, queries[members], [positives[j] for j in members], **subgroups)
            table = result.recall_per_condition[condition]
            assert table["num_queries"] == reader_conditions.count(condition) == len(members)
            assert table["recall"] == pytest.approx(want), condition
    return expected, result


# ---------------------------------------------------------------- readers with positions


def latlon(point: np.ndarray) -> tuple[float, float]:
    """Degrees of a point ``(east, north)`` metres from (LAT0, LON0), on a sphere of the Earth's mean radius."""
    radius = 6371008.8
    lat = LAT0 + math.degrees(point[1] / radius)
    lon = LON0 + math.degrees(point[0] / (radius * math.cos(math.radians(LAT0))))
    return round(lat, 8), round(lon, 8)


def test_two_folders_with_a_latlon_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    database_xy, query_xy = street_layout()
    root = tmp_path / "city"
    # Numbered in a shuffled order (some in a subfolder): the reader's sorted order is not the fixture's.
    database_names = [
        f"{'sub/' if i % 5 == 0 else ''}{n:04d}.jpg" for i, n in enumerate(rng.permutation(len(database_xy)))
    ]
    query_names = [f"IMG_{n}.jpg" for n in rng.permutation(len(query_xy))]
    for name in database_names:
        tiny_jpeg(root / "db" / name)
    for name in query_names:
        tiny_jpeg(root / "q" / name)
    # Both path forms of the positions file: relative to the folder, and to the common parent.
    rows = [
        (name if i % 2 else f"db/{name}", *latlon(xy)) for i, (name, xy) in enumerate(zip(database_names, database_xy))
    ]
    rows += [(f"q/{name}", *latlon(xy)) for name, xy in zip(query_names, query_xy)]
    dataset = read_two_folders(root / "db", root / "q", latlon_csv(root, rows))
    assert dataset.utm_zone == "17T"

    positives = positives_within(database_xy, query_xy)
    database, queries = make_descriptors(rng, len(database_xy), positives)
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, database_names, lambda p: p.relative_to(root / "db").as_posix()),
        order_of(dataset.query_paths, query_names, lambda p: p.relative_to(root / "q").as_posix()),
    )  # fmt: skip


def test_folder_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    database_xy, query_xy = street_layout()
    root = tmp_path / "mycity"
    conditions = ["night" if j % 3 == 0 else "day" for j in range(len(query_xy))]
    database_names = [folder_name(EAST0 + x, NORTH0 + y) for x, y in database_xy]
    query_names = [folder_name(EAST0 + x, NORTH0 + y, note) for (x, y), note in zip(query_xy, conditions)]
    for name in database_names:
        tiny_jpeg(root / "images" / "test" / "database" / name)
    for name in query_names:
        tiny_jpeg(root / "images" / "test" / "queries" / name)
    dataset, source = open_dataset_with_source(root, split="test")
    assert source.format == "folder"

    positives = positives_within(database_xy, query_xy)
    database, queries = make_descriptors(rng, len(database_xy), positives)
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, database_names, lambda p: p.name),
        order_of(dataset.query_paths, query_names, lambda p: p.name),
        conditions=conditions,
    )  # fmt: skip


def shuffled_mat_fields(
    rng: np.random.Generator,
    database_names: list[str],
    query_names: list[str],
    database_xy: np.ndarray,
    query_xy: np.ndarray,
) -> dict:
    """dbStruct fields listing the images in a shuffled order, so a transposed or shifted utmDb/utmQ
    would pair names with others' metres."""
    database_listed, query_listed = rng.permutation(len(database_xy)), rng.permutation(len(query_xy))
    return {
        **netvlad_fields([database_names[i] for i in database_listed], [query_names[j] for j in query_listed]),
        "utmDb": (database_xy[database_listed] + [EAST0, NORTH0]).T.copy(),
        "utmQ": (query_xy[query_listed] + [EAST0, NORTH0]).T.copy(),
    }


@pytest.mark.parametrize("v73", [True, False], ids=["v7.3", "v5"])
def test_netvlad_mat(tmp_path: Path, v73: bool) -> None:
    rng = np.random.default_rng(12)
    database_xy, query_xy = street_layout()
    root = tmp_path / "Pittsburgh"
    database_names = [f"{i // 10:03d}/{i:06d}_pitch1_yaw{i % 3}.jpg" for i in range(len(database_xy))]
    query_names = [f"{j // 10:03d}/{j:06d}_yaw1.jpg" for j in range(len(query_xy))]
    for name in database_names:
        tiny_jpeg(root / name)
    for name in query_names:
        tiny_jpeg(root / "queries_real" / name)
    fields = shuffled_mat_fields(rng, database_names, query_names, database_xy, query_xy)
    (write_db_struct_v73 if v73 else write_db_struct)(root / "datasets" / "pitts30k_test.mat", fields)
    dataset, source = open_dataset_with_source(root, split="test", name="pitts30k")
    assert source.format == "mat" and source.path.name == "pitts30k_test.mat"

    positives = positives_within(database_xy, query_xy)
    database, queries = make_descriptors(rng, len(database_xy), positives)
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, database_names, lambda p: p.relative_to(root).as_posix()),
        order_of(dataset.query_paths, query_names, lambda p: p.relative_to(root / "queries_real").as_posix()),
    )  # fmt: skip


@pytest.mark.parametrize("v73", [True, False], ids=["v7.3", "v5"])
def test_tokyo247_layout(tmp_path: Path, v73: bool) -> None:
    """As ``netvlad_files.write_tokyo`` lays it out, with more images: ``tokyo247.mat`` (no split in the name)
    lists ``.jpg`` database images stored as ``.png``, and queries ``247query_v3/...`` relative to the root."""
    rng = np.random.default_rng(13)
    database_xy, query_xy = street_layout()
    root = tmp_path / "tokyo247"
    database_names = [f"{3814 + i // 6:05d}/{381400 + i:06d}_{i % 12:03d}.jpg" for i in range(len(database_xy))]
    query_names = [f"247query_v3/{j + 1:05d}.jpg" for j in range(len(query_xy))]
    for name in database_names:
        png = (root / name).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), (30, 140, 60)).save(png)
    for name in query_names:
        tiny_jpeg(root / name)
    fields = shuffled_mat_fields(rng, database_names, query_names, database_xy, query_xy)
    mat = root / "tokyo247.mat"
    (write_db_struct_v73 if v73 else write_db_struct)(mat, fields)
    dataset, source = open_dataset_with_source(mat)
    assert source.format == "mat" and (dataset.name, dataset.split) == ("tokyo247", "test")
    assert all(p.suffix == ".png" for p in dataset.database_paths)

    positives = positives_within(database_xy, query_xy)
    database, queries = make_descriptors(rng, len(database_xy), positives)
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, database_names, lambda p: p.relative_to(root).with_suffix(".jpg").as_posix()),
        order_of(dataset.query_paths, query_names, lambda p: p.relative_to(root).as_posix()),
    )  # fmt: skip


# ---------------------------------------------------------------- MSLS


def msls_city(prefix: str, num_places: int, pano_places=(), outside_places=(), pano_queries=(), outside_queries=()):
    """Rows ``(key, east, north, night, pano, in 'all')`` of one city's database and query folders.

    Database: :func:`street_layout`'s images of ``num_places`` places; the
    images of ``pano_places`` are panoramas, those of ``outside_places`` outside
    the ``all`` subtask. Queries: 6.4 m from each place but the last, then one a
    kilometre away; query j is a panorama when in ``pano_queries``, outside
    ``all`` when in ``outside_queries``.
    """
    places = grid_places(num_places)
    spots = [
        (p, places[p] + offset)
        for offset, every in (((0.0, 0.0), 1), ((8.0, 3.0), 4))
        for p in range(0, num_places, every)
    ]
    spots += [(p, places[p] + [-12.0, 8.0]) for p in range(1, num_places, 3)]
    database = [(f"{prefix}db{i}", float(x), float(y), False, p in pano_places, p not in outside_places)
                for i, (p, (x, y)) in enumerate(spots)]  # fmt: skip
    points = [places[p] + [4.0, -5.0] for p in range(num_places - 1)] + [np.array([1000.0, 1000.0])]
    queries = [(f"{prefix}q{j}", float(x), float(y), j % 3 == 1, j in pano_queries, j not in outside_queries)
               for j, (x, y) in enumerate(points)]  # fmt: skip
    return {"database": database, "query": queries}


@pytest.mark.parametrize("split", ["val", "val-full"])
def test_msls_searched_city_by_city(tmp_path: Path, split: str) -> None:
    rng = np.random.default_rng(14)
    # cph: place 13's images are panoramas, place 12's outside 'all' (so is query 5, and query 3 is a
    # panorama): under val740 query 12 loses its only positives, and the far query 13 has none.
    # sf: 9 database images, fewer than N = 10. Both cities use the same metres.
    cities = {
        "cph": msls_city("c", 14, pano_places={13}, outside_places={12}, pano_queries={3}, outside_queries={5}),
        "sf": msls_city("s", 5),
    }
    root = tmp_path / "MSLS"
    for seed, (city, folders) in enumerate(cities.items()):
        for folder, rows in folders.items():
            msls_helpers.write_city_folder(root / "train_val" / city / folder, rows, seed)
    dataset, source = open_dataset_with_source(root, split=split)
    assert source.format == "msls"

    # What the protocol keeps, from the fixture's own rows: no panoramas; val740 also only 'all', and only
    # queries with a database image of their own city within the radius. Sorted by key, the fixture's
    # order is not the reader's (city by city, in file order).
    val740 = split == "val"

    def kept(folder: str) -> list[tuple[str, tuple]]:
        rows = [(city, row) for city, f in cities.items() for row in f[folder] if not row[4] and (row[5] or not val740)]
        return sorted(rows, key=lambda item: item[1][0])

    database_rows, query_rows = kept("database"), kept("query")
    database_xy = np.array([row[1:3] for _, row in database_rows])
    database_groups = [city for city, _ in database_rows]
    query_groups = [city for city, _ in query_rows]
    query_xy = np.array([row[1:3] for _, row in query_rows])
    positives = positives_within(database_xy, query_xy, database_groups, query_groups)
    if val740:
        keep = [j for j, found in enumerate(positives) if found]
        query_rows, positives = [query_rows[j] for j in keep], [positives[j] for j in keep]
        query_groups = [query_groups[j] for j in keep]
    database_keys, query_keys = [row[0] for _, row in database_rows], [row[0] for _, row in query_rows]
    assert ("cq12" in query_keys, "cq13" in query_keys, "cq5" in query_keys) == (not val740,) * 3
    assert "cq3" not in query_keys and "cdb13" not in database_keys
    assert database_groups.count("sf") == 9

    # The other city's image at the very metres of a query's positive: a search of all cities at once would
    # rank it first; a search within the query's city does not see it.
    outside_decoys = {}
    for j, city in enumerate(query_groups):
        for i, other in enumerate(database_groups):
            if other != city and positives[j] and np.array_equal(database_xy[i], database_xy[max(positives[j])]):
                outside_decoys[j] = i
    assert len(outside_decoys) >= 6
    groups = (database_groups, query_groups)
    database, queries = make_descriptors(rng, len(database_rows), positives, groups, outside_decoys)
    database_order = order_of(dataset.database_paths, database_keys, lambda p: p.stem)
    query_order = order_of(dataset.query_paths, query_keys, lambda p: p.stem)
    expected, result = check_recall(
        dataset, database, queries, positives, database_order, query_order, groups=groups,
        conditions=["night" if row[3] else "day" for _, row in query_rows],
    )  # fmt: skip
    # Searched all at once, the same descriptors score lower: the check above could tell the two apart.
    joint = brute_force_recall(database, queries, positives)
    assert joint["1"] < expected["1"] and joint["5"] < expected["5"], (joint, expected)
    sizes = {c: {"num_database": database_groups.count(c), "num_queries": query_groups.count(c)} for c in cities}
    assert result.search_groups == sizes


# ---------------------------------------------------------------- readers with lists of positives


def test_vprbench_lists(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    num_database, num_queries = 20, 12
    root = tmp_path / "Toy"
    for index in range(num_database):
        lists_helpers.write_jpeg(root / "ref" / f"{index}.jpg", index)
    for index in range(num_queries):
        lists_helpers.write_jpeg(root / "query" / f"{index}.jpg", 100 + index)
    positives = [set(rng.choice(num_database, size=1 + j % 3, replace=False).tolist()) for j in range(num_queries)]
    positives[4] = positives[9] = set()
    rows = [(j, sorted(positives[j])) for j in rng.permutation(num_queries)]  # rows in any order
    (root / "ground_truth_new.npy").write_bytes(lists_helpers.python2_ground_truth(rows))
    dataset, source = open_dataset_with_source(root)
    assert source.format == "vprbench"

    database, queries = make_descriptors(rng, num_database, positives)
    # Unpadded numbers: the reader's numeric order (2 before 10) is the ground truth's numbering.
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, [str(i) for i in range(num_database)], lambda p: p.stem),
        order_of(dataset.query_paths, [str(j) for j in range(num_queries)], lambda p: p.stem),
    )  # fmt: skip


@pytest.mark.parametrize("ground_truth", ["gt-lists", "gt-integers", "qIdx-pIdx"])
def test_gsv_cities_lists(tmp_path: Path, ground_truth: str) -> None:
    rng = np.random.default_rng(16)
    num_database, num_queries = 20, 12
    lists, images = tmp_path / "gsv-cities" / "datasets" / "Toy", tmp_path / "VPR-Bench" / "Toy"
    written = [set(p.tolist()) for p in lists_helpers.gsv_set(lists, images, "Toy", num_database, num_queries)]
    query_indices = list(range(num_queries))
    if ground_truth == "gt-lists":  # an object array of integer arrays; the helper leaves the last query empty
        positives = written
        table = np.empty(num_queries, dtype=object)
        for j, found in enumerate(positives):
            table[j] = np.array(sorted(found), dtype=np.int64)
        np.save(lists / "Toy_gt.npy", table, allow_pickle=True)
    elif ground_truth == "gt-integers":  # (Q, k) integers, as SPED and ESSEX
        table = np.stack([np.arange(num_queries), (np.arange(num_queries) * 7 + 5) % num_database], axis=1)
        positives = [set(row.tolist()) for row in table]
        np.save(lists / "Toy_gt.npy", table)
    else:  # gsv-cities' MSLS-val: the queries evaluated and their positives
        query_indices = [0, 2, 3, 5, 6, 7, 9, 10, 11]
        positives = [set(rng.choice(num_database, size=1 + j % 2, replace=False).tolist()) for j in query_indices]
        positives[3] = set()
        table = np.empty(len(query_indices), dtype=object)
        for j, found in enumerate(positives):
            table[j] = np.array(sorted(found), dtype=np.int64)
        np.save(lists / "Toy_qIdx.npy", np.array(query_indices, dtype=np.int64))
        np.save(lists / "Toy_pIdx.npy", table, allow_pickle=True)
    dataset, source = open_dataset_with_source(lists, image_root=images)
    assert source.format == "gsv-lists"

    database, queries = make_descriptors(rng, num_database, positives)
    check_recall(
        dataset, database, queries, positives,
        order_of(dataset.database_paths, [f"ref/{i:07d}.jpg" for i in range(num_database)],
                 lambda p: p.relative_to(images).as_posix()),
        order_of(dataset.query_paths, [f"query/{j:07d}.jpg" for j in query_indices],
                 lambda p: p.relative_to(images).as_posix()),
    )  # fmt: skip

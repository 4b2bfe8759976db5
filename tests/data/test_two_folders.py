"""Any two folders of images as a PlaceDataset (vprdistill.data.two_folders)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.data.netvlad_files import DB_UTM, Q_UTM, tiny_jpeg
from tests.data.test_positions import kruger_utm
from tests.data.test_readers import make_folder_dataset
from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.data.readers import read_folder_dataset
from vprdistill.data.two_folders import read_image_folder, read_two_folders, read_two_folders_with_source

# Pittsburgh, a few hundred metres apart (zone 17T); the last query is 5 km away.
DB_LATLON = [(40.4406, -79.9959), (40.4410, -79.9950), (40.4430, -79.9900)]
Q_LATLON = [(40.44062, -79.99588), (40.4850, -79.9500)]


def plain_folders(root: Path) -> tuple[Path, Path]:
    """``root/db`` (with a subfolder) and ``root/q`` of plainly named photos, no positions in the names."""
    for name in ("0001.jpg", "0002.jpg", "sub/0003.jpg"):
        tiny_jpeg(root / "db" / name)
    for name in ("IMG_1.jpg", "IMG_2.png"):
        tiny_jpeg(root / "q" / name)
    return root / "db", root / "q"


def latlon_csv(root: Path, rows: list[tuple[str, float, float]], header: str = "path,lat,lon") -> Path:
    path = root / "positions.csv"
    path.write_text(header + "\n" + "".join(f"{p},{a},{b}\n" for p, a, b in rows))
    return path


def test_named_files_read_as_the_folder_format_does(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "mycity")
    reference = read_folder_dataset(root)
    dataset, source = read_two_folders_with_source(
        root / "images" / "test" / "database", root / "images" / "test" / "queries"
    )
    assert dataset.database_paths == reference.database_paths and dataset.query_paths == reference.query_paths
    np.testing.assert_array_equal(dataset.database_utm, DB_UTM)
    np.testing.assert_array_equal(dataset.query_utm, Q_UTM)
    assert dataset.query_conditions() == reference.query_conditions() == ["night", "day"]
    assert dataset.utm_zone == reference.utm_zone == "17T" and dataset.name == "test" and dataset.split == "test"
    assert source.format == "folders" and source.positions is None
    assert "positions from the file names" in str(source)


def test_latlon_file_with_both_path_forms(tmp_path: Path) -> None:
    database, queries = plain_folders(tmp_path / "city")
    csv_file = latlon_csv(
        tmp_path / "city",
        [
            ("db/0001.jpg", *DB_LATLON[0]),  # relative to the common parent
            ("0002.jpg", *DB_LATLON[1]),  # relative to its folder
            ("sub/0003.jpg", *DB_LATLON[2]),
            ("q/IMG_1.jpg", *Q_LATLON[0]),
            ("IMG_2.png", *Q_LATLON[1]),
        ],
    )
    dataset = read_two_folders(database, queries, csv_file, name="city-test")
    assert [p.name for p in dataset.database_paths] == ["0001.jpg", "0002.jpg", "0003.jpg"]
    expected_db = [kruger_utm(a, b, 17, True) for a, b in DB_LATLON]
    expected_q = [kruger_utm(a, b, 17, True) for a, b in Q_LATLON]
    np.testing.assert_allclose(dataset.database_utm, expected_db, atol=0.01)
    np.testing.assert_allclose(dataset.query_utm, expected_q, atol=0.01)
    assert dataset.utm_zone == "17T" and dataset.name == "city-test"
    # Ground truth works in metres: query 0 is 2 m from database image 0, query 1 far from all.
    positives = dataset.positives(25.0)
    assert positives[0].tolist() == [0] and positives[1].tolist() == []


def test_east_north_file_and_notes(tmp_path: Path) -> None:
    database, queries = plain_folders(tmp_path / "city")
    csv_file = tmp_path / "city" / "utm.csv"
    csv_file.write_text(
        "path,east,north,zone,note\n"
        "db/0001.jpg,585000,4477000,17T,\ndb/0002.jpg,585010,4477000,17T,\ndb/sub/0003.jpg,585400,4477300,,\n"
        "q/IMG_1.jpg,585004,4477001,17T,night\nq/IMG_2.png,590000,4480000,17S,day\n"
    )
    dataset = read_two_folders(database, queries, csv_file)
    np.testing.assert_array_equal(dataset.query_utm, [[585004, 4477001], [590000, 4480000]])
    assert dataset.query_conditions() == ["night", "day"] and dataset.database_notes is None
    assert dataset.utm_zone == "17T"  # 17S and 17T are one projection; the commonest letter


def test_zone_mixing_names_files_of_each_zone(tmp_path: Path) -> None:
    database, queries = plain_folders(tmp_path / "city")
    # 0002.jpg and IMG_2.png lie east of 78°W, in zone 18.
    rows = [("db/0001.jpg", 40.0, -78.01), ("db/0002.jpg", 40.0, -77.99), ("db/sub/0003.jpg", 40.0, -78.02),
            ("q/IMG_1.jpg", 40.0, -78.011), ("q/IMG_2.png", 40.0, -77.98)]  # fmt: skip
    csv_file = latlon_csv(tmp_path / "city", rows)
    with pytest.raises(DatasetFormatError) as error:
        read_two_folders(database, queries, csv_file)
    message = str(error.value)
    assert "2 UTM zones" in message
    assert "zone 17T: 3 images" in message and "0001.jpg" in message and "0003.jpg" in message
    assert "zone 18T: 2 images" in message and "0002.jpg" in message and "IMG_2.png" in message
    # One zone asked for: every position is converted into it, and the set opens.
    dataset = read_two_folders(database, queries, csv_file, zone="17T")
    assert dataset.utm_zone == "17T"
    np.testing.assert_allclose(dataset.database_utm[1], kruger_utm(40.0, -77.99, 17, True), atol=0.01)


def test_zone_from_names_disagreeing_with_the_zone_asked_for(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "mycity")  # names say 17T
    with pytest.raises(DatasetFormatError, match=r"zone 17T: 5 images.*zone 18T: 1 images \(the zone asked for\)"):
        read_two_folders(root / "images" / "test" / "database", root / "images" / "test" / "queries", zone="18T")


def test_query_without_position(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database, queries = plain_folders(tmp_path / "city")
    rows = [
        ("db/0001.jpg", *DB_LATLON[0]),
        ("db/0002.jpg", *DB_LATLON[1]),
        ("db/sub/0003.jpg", *DB_LATLON[2]),
        ("q/IMG_1.jpg", *Q_LATLON[0]),
        ("q/IMG_9.jpg", *Q_LATLON[1]),
    ]  # fmt: skip  (IMG_9: a typo)
    csv_file = latlon_csv(tmp_path / "city", rows)
    with pytest.raises(DatasetFormatError) as error:
        read_two_folders(database, queries, csv_file)
    message = str(error.value)
    assert "1 of 2 query images" in message and "IMG_2.png" in message
    assert "1 rows of" in message and "positions.csv:6 (q/IMG_9.jpg)" in message  # the row that matched nothing
    with caplog.at_level(logging.WARNING):
        dataset = read_two_folders(database, queries, csv_file, require_query_positions=False)
    assert "IMG_2.png" in caplog.text and "cannot be scored" in caplog.text
    assert np.isnan(dataset.query_utm[1]).all() and np.isfinite(dataset.query_utm[0]).all()
    assert dataset.unknown_query_positions.tolist() == [1]
    with pytest.raises(DatasetFormatError, match=r"1 of 2 queries have no known position.*IMG_2.png"):
        dataset.positives(25.0)
    # Leaving the unknown query out gives a dataset that can be scored.
    known = dataset.subset(query_indices=[0])
    assert known.positives(25.0)[0].tolist() == [0] and known.utm_zone == "17T"


def test_database_image_without_position_is_always_an_error(tmp_path: Path) -> None:
    database, queries = plain_folders(tmp_path / "city")
    rows = [("db/0001.jpg", *DB_LATLON[0]), ("q/IMG_1.jpg", *Q_LATLON[0]), ("q/IMG_2.png", *Q_LATLON[1])]
    with pytest.raises(DatasetFormatError, match=r"2 of 3 database images .* no position .*0002.jpg, sub/0003.jpg"):
        read_two_folders(database, queries, latlon_csv(tmp_path / "city", rows), require_query_positions=False)
    # Without a positions file, plain names have no position.
    with pytest.raises(DatasetFormatError, match=r"3 of 3 database images .*@east@north@ file names"):
        read_two_folders(database, queries)


def test_folder_errors(tmp_path: Path) -> None:
    database, queries = plain_folders(tmp_path / "city")
    with pytest.raises(FileNotFoundError, match="queries folder .*nope does not exist"):
        read_two_folders(database, tmp_path / "nope")
    with pytest.raises(DatasetFormatError, match="overlap"):
        read_two_folders(tmp_path / "city", queries)
    with pytest.raises(DatasetFormatError, match="overlap"):
        read_two_folders(database, database)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no images .* in the queries folder .*empty"):
        read_two_folders(database, tmp_path / "empty")


def test_skip_bad_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder_dataset(tmp_path / "mycity")
    database = root / "images" / "test" / "database"
    broken = sorted(database.iterdir())[1]
    broken.write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        dataset = read_two_folders(database, root / "images" / "test" / "queries", skip_bad_images=True)
    assert dataset.num_database == 2 and broken not in dataset.database_paths
    np.testing.assert_array_equal(dataset.database_utm, DB_UTM[[0, 2]])
    assert broken.name in caplog.text


def test_read_image_folder_for_a_map(tmp_path: Path) -> None:
    database, _ = plain_folders(tmp_path / "city")
    csv_file = latlon_csv(tmp_path / "city", [("db/0001.jpg", *DB_LATLON[0]), ("0002.jpg", *DB_LATLON[1])])
    with pytest.raises(DatasetFormatError, match=r"1 of 3 images .* no position .*sub/0003.jpg"):
        read_image_folder(database, csv_file)
    images = read_image_folder(database, csv_file, require_positions=False)
    assert [p.name for p in images.paths] == ["0001.jpg", "0002.jpg", "0003.jpg"]
    assert np.isfinite(images.utm[:2]).all() and np.isnan(images.utm[2]).all() and images.utm_zone == "17T"

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from vprdistill.data.readers import (
    MAT_FIELDS,
    DatasetFormatError,
    find_mat_file,
    open_dataset,
    parse_place_filename,
)

DB_UTM = np.array([[100.0, 5000.0], [110.0, 5000.0], [300.0, 5200.0]])
Q_UTM = np.array([[104.0, 5001.0], [900.0, 9000.0]])


def tiny_jpeg(path: Path, shade: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (shade, 40, 200)).save(path)
    return path


def folder_name(east: float, north: float, note: str = "") -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@40.44@-79.99@pano@@90@@@@2020@{note}@.jpg"


def make_folder_dataset(root: Path, split: str = "test", segmentation: bool = False) -> Path:
    # written in reverse so that the reader's sorting is what puts them in order
    for label, utm, notes in (("database", DB_UTM, ["", "", ""]), ("queries", Q_UTM, ["night", "day"])):
        for (east, north), note in reversed(list(zip(utm, notes))):
            image = tiny_jpeg(root / "images" / split / label / folder_name(east, north, note))
            if segmentation:
                seg = root / "segmentation" / split / label / image.with_suffix(".png").name
                seg.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.zeros((12, 16), dtype=np.uint8)).save(seg)
    return root


def write_db_struct(path: Path, fields: dict) -> None:
    """A MATLAB struct ``dbStruct`` whose fields keep the given order."""
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[0, 0][name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"dbStruct": struct})


def netvlad_fields(db_names: list[str], q_names: list[str], which_set: str = "test") -> dict:
    return {
        "whichSet": which_set,
        "dbImageFns": np.array([[n] for n in db_names], dtype=object),
        "utmDb": DB_UTM[: len(db_names)].T.copy(),
        "qImageFns": np.array([[n] for n in q_names], dtype=object),
        "utmQ": Q_UTM[: len(q_names)].T.copy(),
        "numImages": len(db_names),
        "numQueries": len(q_names),
        "posDistThr": 25,
        "posDistSqThr": 625,
        "nonTrivPosDistSqThr": 100,
    }


DB_NAMES = ["000/000000_pitch1_yaw1.jpg", "000/000001_pitch1_yaw1.jpg", "001/001000_pitch2_yaw3.jpg"]
Q_NAMES = ["000/000000_yaw1.jpg", "000/000001_yaw1.jpg"]


def make_pitts(root: Path, name: str = "pitts30k_test.mat") -> Path:
    for n in DB_NAMES:
        tiny_jpeg(root / n)
    for n in Q_NAMES:
        tiny_jpeg(root / "queries_real" / n)
    fields = netvlad_fields(DB_NAMES, Q_NAMES)
    assert tuple(fields) == MAT_FIELDS
    write_db_struct(root / "datasets" / name, fields)
    return root


def test_parse_place_filename() -> None:
    parsed = parse_place_filename("/data/@587193.81@4477332.29@17@T@40.44@-79.99@abc@3@120.5@@@@2013@night@.jpg")
    assert (parsed.east, parsed.north) == (587193.81, 4477332.29)
    assert parsed.zone == "17T" and parsed.heading == 120.5 and parsed.pitch is None
    assert (parsed.pano_id, parsed.note, parsed.timestamp) == ("abc", "night", "2013")
    minimal = parse_place_filename("@1.5@-2@.png")
    assert (minimal.east, minimal.north, minimal.note, minimal.zone_number) == (1.5, -2.0, "", None)


@pytest.mark.parametrize(
    "name, field",
    [
        ("photo_001.jpg", "folder-format"),
        ("@abc@4477332@.jpg", "east"),
        ("@1@nan@.jpg", "north"),
        ("@1@2@17@T@x@@.jpg", "latitude"),
        ("@1@2@17.5@@.jpg", "zone_number"),
        ("@" + "@".join(["1"] * 15) + "@.jpg", "fields"),
    ],
)
def test_malformed_file_names_name_file_and_field(name: str, field: str) -> None:
    with pytest.raises(DatasetFormatError) as info:
        parse_place_filename(Path("/data") / name)
    assert name in str(info.value) and field in str(info.value)


def test_folder_reader(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "mycity", segmentation=True)
    dataset = open_dataset(root, split="test")
    assert (dataset.name, dataset.split, dataset.num_database, dataset.num_queries) == ("mycity", "test", 3, 2)
    np.testing.assert_allclose(dataset.database_utm, DB_UTM)  # sorted names = increasing east here
    assert dataset.database_paths == sorted(dataset.database_paths)
    # queries sort by name: "@104.00..." < "@900.00..."
    np.testing.assert_allclose(dataset.query_utm, Q_UTM)
    assert dataset.query_notes == ["night", "day"] and dataset.database_notes is None
    assert dataset.query_conditions() == ["night", "day"]
    assert dataset.has_segmentation
    for image, seg in zip(dataset.query_paths, dataset.query_seg_paths):
        assert seg == root / "segmentation" / "test" / "queries" / (image.stem + ".png") and seg.is_file()
    np.testing.assert_array_equal(dataset.positives(25.0)[0], [0, 1])
    assert len(dataset.positives(25.0)[1]) == 0


def test_folder_reader_errors_name_the_folder(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "city")
    with pytest.raises(DatasetFormatError, match=r"images/val.*splits present: test"):
        open_dataset(root, split="val", reader="folder")
    (root / "images" / "train" / "database").mkdir(parents=True)
    (root / "images" / "train" / "queries").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match=r"no images .* in .*images/train/database"):
        open_dataset(root, split="train")
    with pytest.raises(DatasetFormatError, match=r"images/nope.*\*_nope\.mat"):
        open_dataset(root, split="nope")
    with pytest.raises(FileNotFoundError, match="absent"):
        open_dataset(tmp_path / "absent")


def test_segmentation_is_all_or_none(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "city", segmentation=True)
    victim = sorted((root / "segmentation" / "test" / "database").iterdir())[1]
    victim.unlink()
    with pytest.raises(DatasetFormatError, match=victim.name.replace(".", r"\.")):
        open_dataset(root)


def test_skip_bad_images_excludes_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder_dataset(tmp_path / "city", segmentation=True)
    corrupt = sorted((root / "images" / "test" / "database").iterdir())[1]
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(root, skip_bad_images=True)
    assert dataset.num_database == 2 and corrupt not in dataset.database_paths
    np.testing.assert_allclose(dataset.database_utm, DB_UTM[[0, 2]])
    assert [p.stem for p in dataset.database_seg_paths] == [p.stem for p in dataset.database_paths]
    assert corrupt.name in caplog.text and "skipped 1 of 3" in caplog.text

    assert open_dataset(root).num_database == 3  # without the option nothing is opened or dropped


def test_mat_reader(tmp_path: Path) -> None:
    root = make_pitts(tmp_path / "Pittsburgh")
    for path in (root, root / "datasets" / "pitts30k_test.mat"):
        dataset = open_dataset(path)
        assert (dataset.name, dataset.split, dataset.root) == ("pitts30k", "test", root)
        assert dataset.database_paths == [root / n for n in DB_NAMES]
        assert dataset.query_paths == [root / "queries_real" / n for n in Q_NAMES]
        assert dataset.database_utm.shape == (3, 2) and dataset.database_utm.dtype == np.float64
        np.testing.assert_array_equal(dataset.database_utm, DB_UTM)  # 2×N in the file → (N, 2)
        np.testing.assert_array_equal(dataset.query_utm, Q_UTM)
        assert not dataset.has_segmentation and dataset.query_notes is None
    assert find_mat_file(root, "test") == root / "datasets" / "pitts30k_test.mat"


def test_mat_reader_missing_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_pitts(tmp_path / "Pittsburgh")
    missing = root / "queries_real" / Q_NAMES[1]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        open_dataset(root)
    with caplog.at_level(logging.WARNING):
        dataset = open_dataset(root, skip_bad_images=True)
    assert dataset.query_paths == [root / "queries_real" / Q_NAMES[0]]
    np.testing.assert_array_equal(dataset.query_utm, Q_UTM[:1])
    assert str(missing) in caplog.text


def test_ambiguous_mat_files(tmp_path: Path) -> None:
    root = make_pitts(tmp_path / "Pittsburgh")
    write_db_struct(root / "datasets" / "pitts250k_test.mat", netvlad_fields(DB_NAMES, Q_NAMES))
    with pytest.raises(DatasetFormatError, match="pitts250k_test.mat"):
        open_dataset(root)
    assert open_dataset(root / "datasets" / "pitts250k_test.mat").name == "pitts250k"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("utmQ"), "utmQ"),
        (lambda f: f.update(utmDb=np.zeros((3, 3))), "utmDb"),
        (lambda f: f.update(numQueries=5), "numQueries"),
        (lambda f: f.update(dbImageFns=np.zeros((3, 1))), "dbImageFns"),
    ],
)
def test_malformed_mat_names_file_and_field(tmp_path: Path, change, message: str) -> None:
    root = make_pitts(tmp_path / "P")
    fields = netvlad_fields(DB_NAMES, Q_NAMES)
    change(fields)
    mat = root / "datasets" / "pitts30k_test.mat"
    write_db_struct(mat, fields)
    with pytest.raises(DatasetFormatError) as info:
        open_dataset(mat)
    assert str(mat) in str(info.value) and message in str(info.value)


def test_not_a_mat_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake_test.mat"
    fake.write_text("just some text, not MATLAB")
    with pytest.raises(DatasetFormatError, match="fake_test.mat"):
        open_dataset(fake)
    other = tmp_path / "other_test.mat"
    savemat(other, {"somethingElse": np.zeros(3)})
    with pytest.raises(DatasetFormatError, match="other_test.mat.*dbStruct"):
        open_dataset(other)

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from tests.data.netvlad_files import (
    DB_NAMES,
    DB_UTM,
    Q_NAMES,
    Q_UTM,
    make_two_sets,
    netvlad_fields,
    tiny_jpeg,
    write_db_struct,
    write_images,
    write_split,
)
from vprdistill.data.readers import (
    MAT_FIELDS,
    DatasetFormatError,
    DatasetSource,
    find_mat_file,
    mat_file_for_split,
    open_dataset,
    open_dataset_with_source,
    parse_place_filename,
    read_mat_dataset,
)


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


def make_pitts(root: Path, name: str = "pitts30k_test.mat") -> Path:
    write_images(root)
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
    with pytest.raises(
        DatasetFormatError, match=r"pitts250k_test.mat.*choose one by dataset name \(pitts250k, pitts30k\)"
    ):
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


def test_a_train_file_opens_its_val_sibling(tmp_path: Path) -> None:
    root = tmp_path / "Pittsburgh"
    write_images(root)
    train_file = write_split(root, "pitts30k_train.mat", "train", num_queries=2)
    val_file = write_split(root, "pitts30k_val.mat", "val", num_queries=1)

    assert mat_file_for_split(train_file, "val") == val_file
    assert mat_file_for_split(train_file, "train") == train_file
    assert mat_file_for_split(train_file, None) == train_file
    val, source = open_dataset_with_source(train_file, split="val")
    assert source == DatasetSource("mat", val_file, "val")
    assert (val.name, val.split, val.num_queries, val.root) == ("pitts30k", "val", 1, root)
    assert str(source) == f"{val_file} (whichSet 'val')"
    train, source = open_dataset_with_source(train_file, split="train")
    assert (train.split, train.num_queries, source.path) == ("train", 2, train_file)
    # No split asked: the file as it is; the reverse direction works too.
    assert open_dataset(train_file, split=None).split == "train"
    assert open_dataset(val_file, split="train").num_queries == 2

    with pytest.raises(DatasetFormatError) as info:
        open_dataset(train_file, split="test")
    assert str(root / "datasets" / "pitts30k_test.mat") in str(info.value) and "does not exist" in str(info.value)


def test_dataset_name_chooses_among_sets_in_one_folder(tmp_path: Path) -> None:
    root = make_two_sets(tmp_path / "Pittsburgh")
    with pytest.raises(DatasetFormatError, match=r"choose one by dataset name \(pitts250k, pitts30k\)"):
        open_dataset(root, split="val")
    for name, num_database, num_queries in (("pitts30k", 3, 1), ("pitts250k", 2, 2)):
        dataset, source = open_dataset_with_source(root, split="val", name=name)
        assert source.path == root / "datasets" / f"{name}_val.mat" and source.which_set == "val"
        assert (dataset.name, dataset.split) == (name, "val")
        assert (dataset.num_database, dataset.num_queries) == (num_database, num_queries)
        assert find_mat_file(root, "train", name) == root / "datasets" / f"{name}_train.mat"
    # The name also agrees with a file, and a wrong one is refused naming both.
    assert open_dataset(root / "datasets" / "pitts30k_train.mat", split="val", name="pitts30k").num_queries == 1
    with pytest.raises(
        DatasetFormatError, match=r"pitts250k_train.mat is a file of dataset 'pitts250k', not of 'pitts30k'"
    ):
        open_dataset(root / "datasets" / "pitts250k_train.mat", split="val", name="pitts30k")
    with pytest.raises(DatasetFormatError, match=r"tokyo247_val.mat.*sets with split 'val' there: pitts250k, pitts30k"):
        open_dataset(root, split="val", name="tokyo247", reader="mat")
    with pytest.raises(DatasetFormatError, match=r"tokyo247_val.mat"):
        open_dataset(root, split="val", name="tokyo247")


def test_which_set_differing_from_the_split_asked_for_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "Pittsburgh"
    write_images(root)
    train_file = write_split(root, "pitts30k_train.mat", "train")
    # A validation file that really holds training data (a copied file, say).
    val_file = write_split(root, "pitts30k_val.mat", "train")
    for call in (
        lambda: open_dataset(val_file, split="val"),
        lambda: open_dataset(train_file, split="val"),  # through the sibling
        lambda: open_dataset(root, split="val"),  # through the root
        lambda: read_mat_dataset(val_file, split="val"),
    ):
        with pytest.raises(DatasetFormatError) as info:
            call()
        message = str(info.value)
        assert str(val_file) in message and "'train'" in message and "'val'" in message
    assert read_mat_dataset(val_file).split == "train"  # without a split asked, the file says what it is

    # A file whose name gives no sibling: only its own split opens.
    tokyo = write_split(root, "tokyo247.mat", "test")
    assert open_dataset(tokyo, split="test").split == "test"
    with pytest.raises(DatasetFormatError, match=r"tokyo247.mat: holds split 'test' .*not the 'val' asked for"):
        open_dataset(tokyo, split="val")


def test_empty_which_set_takes_the_split_from_the_file_name(tmp_path: Path) -> None:
    root = tmp_path / "P"
    write_images(root)
    train_file = write_split(root, "mine_train.mat", "")
    val_file = write_split(root, "mine_val.mat", "", num_queries=1)
    dataset, source = open_dataset_with_source(train_file, split="val")
    assert (dataset.split, dataset.name, dataset.num_queries, source.path) == ("val", "mine", 1, val_file)
    assert source.which_set == ""


def test_folder_format_source_and_name(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "mycity")
    dataset, source = open_dataset_with_source(root, split="test", name="mycity")
    assert source == DatasetSource("folder", root / "images" / "test") and dataset.name == "mycity"
    assert str(source) == f"{root / 'images' / 'test'} (folder format)"
    with pytest.raises(DatasetFormatError, match=r"named after its folder, 'mycity', but dataset name 'pitts30k'"):
        open_dataset(root, split="test", name="pitts30k")

"""The dataset segmenter, end to end with a tiny randomly initialised SegFormer saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.netvlad_files import DB_NAMES, Q_NAMES, make_two_sets, write_images, write_split
from vprdistill.cli.main import main
from vprdistill.data.images import ImageLoadError, load_segmentation
from vprdistill.data.segmentation_labels import (
    CITYSCAPES_TRAIN_ID_NAMES,
    VOID_ID,
    label_mapping,
    label_to_cityscapes_train_id,
)
from vprdistill.data.segmenter import (
    SegmentationModelError,
    Segmenter,
    segment_dataset,
    segmentation_path,
    shorter_side_size,
)

CITYSCAPES_IDS = set(range(19)) | {VOID_ID}


def save_tiny_segformer(folder: Path, id2label: dict[int, str], seed: int = 0) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=16,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )
    torch.manual_seed(seed)
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_segformer(tmp_path_factory.mktemp("segformer"), dict(enumerate(CITYSCAPES_TRAIN_ID_NAMES)))


def place_name(east: float, north: float) -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@@@@@@@@@@@.jpg"


def make_dataset(root: Path) -> list[Path]:
    """A tiny folder-format dataset: test (3 database, 2 queries) and train (1 + 1), small JPEGs of varied size."""
    rng = np.random.default_rng(0)
    layout = {"test/database": 3, "test/queries": 2, "train/database": 1, "train/queries": 1}
    sizes = [(48, 32), (40, 56), (32, 32), (64, 40)]
    images = []
    for folder, count in layout.items():
        for i in range(count):
            width, height = sizes[len(images) % len(sizes)]
            path = root / "images" / folder / place_name(500_000 + 10 * i, 4_400_000 + 3 * len(images))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
            images.append(path)
    return images


def test_segment_dataset_writes_one_valid_map_per_image(tmp_path: Path, cityscapes_model: Path) -> None:
    images = make_dataset(tmp_path)
    report = segment_dataset(tmp_path, cityscapes_model, batch_size=2, progress=False)
    assert (report.written, report.skipped, report.failed) == (len(images), 0, 0)
    for image_path in images:
        relative = image_path.relative_to(tmp_path / "images")
        map_path = tmp_path / "segmentation" / relative.with_suffix(".png")
        assert map_path == segmentation_path(tmp_path, relative)
        with Image.open(map_path) as png:
            assert (png.format, png.mode) == ("PNG", "L")
            with Image.open(image_path) as image:
                assert png.size == image.size
        assert set(np.unique(load_segmentation(map_path)).tolist()) <= CITYSCAPES_IDS
    classes = json.loads((tmp_path / "segmentation" / "classes.json").read_text())
    assert classes["model"] == str(cityscapes_model)
    assert [c["name"] for c in classes["classes"]] == list(CITYSCAPES_TRAIN_ID_NAMES)
    assert not list((tmp_path / "segmentation").rglob("*.tmp")), "no temporary files may be left behind"


def test_written_maps_feed_the_dataset_reader_and_structural_classes(tmp_path: Path, cityscapes_model: Path) -> None:
    from vprdistill.data.readers import open_dataset
    from vprdistill.data.structural import StructuralClassMap

    make_dataset(tmp_path)
    segment_dataset(tmp_path, cityscapes_model, splits=["test"], progress=False)
    dataset = open_dataset(tmp_path, split="test")
    assert dataset.database_seg_paths is not None and dataset.query_seg_paths is not None
    structural = StructuralClassMap.from_yaml(source="cityscapes")
    for seg_path in dataset.database_seg_paths + dataset.query_seg_paths:
        # Every Cityscapes trainId is a structural class, so no pixel is left out.
        assert (structural.map_ids(load_segmentation(seg_path)) < structural.num_classes).all()


def test_maps_are_the_upsampled_argmax_of_the_model(tmp_path: Path, cityscapes_model: Path) -> None:
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    image_path = make_dataset(tmp_path)[1]
    segment_dataset(tmp_path, cityscapes_model, splits=["test"], progress=False)
    written = load_segmentation(segmentation_path(tmp_path, image_path.relative_to(tmp_path / "images")))

    image = Image.open(image_path).convert("RGB")
    assert image.size == (40, 56)  # W, H
    processor = AutoImageProcessor.from_pretrained(cityscapes_model)
    model = AutoModelForSemanticSegmentation.from_pretrained(cityscapes_model).eval()
    # The processor's size is 64: the shorter side 40 becomes 64, the longer 56 * 64 / 40 = 89.6 -> 90.
    inputs = processor(images=[image], size={"height": 90, "width": 64}, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[-2:]) == (90, 64)
    with torch.no_grad():
        logits = model(**inputs).logits
    size = (image.height, image.width)
    upsampled = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(written, upsampled.argmax(dim=1)[0].numpy())


def test_a_second_run_keeps_existing_maps(tmp_path: Path, cityscapes_model: Path) -> None:
    images = make_dataset(tmp_path)
    segment_dataset(tmp_path, cityscapes_model, progress=False)
    maps = sorted((tmp_path / "segmentation").rglob("*.png"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in maps}

    again = segment_dataset(tmp_path, cityscapes_model, progress=False)
    assert (again.written, again.skipped) == (0, len(images))
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in maps} == before

    redone = segment_dataset(tmp_path, cityscapes_model, overwrite=True, progress=False)
    assert (redone.written, redone.skipped) == (len(images), 0)
    assert all(p.stat().st_mtime_ns >= before[p][0] for p in maps)


def test_an_unreadable_image_is_reported_by_name(tmp_path: Path, cityscapes_model: Path) -> None:
    images = make_dataset(tmp_path)
    bad = images[2]
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    with pytest.raises(ImageLoadError, match=bad.name):
        segment_dataset(tmp_path, cityscapes_model, batch_size=1, progress=False, num_workers=1)

    report = segment_dataset(tmp_path, cityscapes_model, skip_bad_images=True, progress=False)
    assert report.failed == 1 and report.failed_paths == [bad]
    assert not segmentation_path(tmp_path, bad.relative_to(tmp_path / "images")).exists()
    # The images before the bad one were written by the first run and are kept now.
    assert report.written + report.skipped == len(images) - 1 and report.skipped >= 2


def test_a_model_with_other_labels_is_mapped_to_cityscapes_ids(tmp_path: Path) -> None:
    labels = {0: "sky", 1: "floor", 2: "tree", 3: "car, auto, automobile", 4: "object--vehicle--bicycle"}
    model = save_tiny_segformer(tmp_path / "model", labels, seed=1)
    images = make_dataset(tmp_path / "data")
    segment_dataset(tmp_path / "data", model, splits=["test"], progress=False)
    allowed = {10, VOID_ID, 8, 13, 18}
    values = set()
    for image_path in images[:5]:
        relative = image_path.relative_to(tmp_path / "data" / "images")
        values |= set(np.unique(load_segmentation(segmentation_path(tmp_path / "data", relative))).tolist())
    assert values <= allowed and len(values) >= 2


def test_label_names_map_to_cityscapes_train_ids() -> None:
    assert [label_to_cityscapes_train_id(n) for n in CITYSCAPES_TRAIN_ID_NAMES] == list(range(19))
    assert label_to_cityscapes_train_id("person, individual, someone") == 11
    assert label_to_cityscapes_train_id("Traffic_Light") == 6
    assert label_to_cityscapes_train_id("construction--flat--sidewalk") == 1
    assert label_to_cityscapes_train_id("object--traffic-sign--front") == 7
    assert label_to_cityscapes_train_id("ceiling") == VOID_ID
    np.testing.assert_array_equal(label_mapping({0: "floor", 2: "road", 1: "minibike"}), [VOID_ID, 17, 0])
    with pytest.raises(ValueError, match="Cityscapes class"):
        label_mapping({i: f"LABEL_{i}" for i in range(19)})


def test_a_model_without_class_names_is_refused(tmp_path: Path) -> None:
    model = save_tiny_segformer(tmp_path / "generic", {i: f"LABEL_{i}" for i in range(4)})
    with pytest.raises(SegmentationModelError, match="generic"):
        Segmenter(model)


def test_unavailable_models_give_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SegmentationModelError, match="--model PATH"):
        Segmenter("vprdistill-tests/no-such-segmenter")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Segmenter(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        Segmenter(tmp_path / "empty")


def test_cli_segments_the_requested_splits(
    tmp_path: Path, cityscapes_model: Path, capsys: pytest.CaptureFixture
) -> None:
    make_dataset(tmp_path)
    argv = ["segment", str(tmp_path), "--model", str(cityscapes_model), "--splits", "test", "--device", "cpu",
            "--batch-size", "3", "--image-size", "32", "48", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 5
    assert len(list((tmp_path / "segmentation" / "test").rglob("*.png"))) == 5
    assert not (tmp_path / "segmentation" / "train").exists()
    assert json.loads((tmp_path / "segmentation" / "classes.json").read_text())["image_size"] == [32, 48]


def test_cli_reports_a_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["segment", str(tmp_path / "nowhere"), "--device", "cpu"]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_shorter_side_size_keeps_the_aspect_ratio() -> None:
    assert shorter_side_size(480, 640, 1024) == (1024, 1365)  # 640 * 1024 / 480 = 1365.33
    assert shorter_side_size(640, 480, 512) == (683, 512)  # 640 * 512 / 480 = 682.67
    assert shorter_side_size(32, 32, 64) == (64, 64)
    with pytest.raises(ValueError, match="positive"):
        shorter_side_size(0, 10, 5)


def test_the_network_input_keeps_each_images_aspect_ratio(cityscapes_model: Path) -> None:
    default = Segmenter(cityscapes_model)  # processor size 64x64: the shorter side becomes 64
    assert (default.image_size, default.shorter_side) == (None, 64)
    assert default.input_size(height=56, width=40) == (90, 64)
    assert default.input_size(height=32, width=48) == (64, 96)
    assert Segmenter(cityscapes_model, image_size=[32]).input_size(height=56, width=40) == (45, 32)
    exact = Segmenter(cityscapes_model, image_size=(32, 48))
    assert exact.input_size(height=56, width=40) == (32, 48)
    # Images of different shapes in one call each get their own input size and come back at their size.
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((56, 40), (32, 48), (56, 40))
    ]
    maps = default.segment(images)
    assert [m.shape for m in maps] == [(56, 40), (32, 48), (56, 40)]
    np.testing.assert_array_equal(maps[0], default.segment([images[0]])[0])
    with pytest.raises(ValueError, match="shorter side"):
        Segmenter(cityscapes_model, image_size=[1, 2, 3])


def _pitts_map(root: Path, split: str, subset: str, name: str) -> Path:
    return (root / "segmentation" / split / subset / name).with_suffix(".png")


def make_pitts(root: Path) -> Path:
    """Pittsburgh layout with one set: pitts30k_test.mat in datasets/, 3 database images, 2 queries."""
    write_images(root)
    write_split(root, "pitts30k_test.mat", "test")
    return root


def test_mat_datasets_get_maps_where_the_reader_finds_them(tmp_path: Path, cityscapes_model: Path) -> None:
    from vprdistill.data.readers import open_dataset

    root = make_pitts(tmp_path / "Pittsburgh")
    report = segment_dataset(root, cityscapes_model, progress=False, num_workers=0)
    assert (report.written, report.skipped) == (len(DB_NAMES) + len(Q_NAMES), 0)
    expected_db = [_pitts_map(root, "test", "database", n) for n in DB_NAMES]
    expected_q = [_pitts_map(root, "test", "queries", n) for n in Q_NAMES]
    dataset = open_dataset(root)
    assert dataset.database_seg_paths == expected_db and dataset.query_seg_paths == expected_q
    for map_path, image_path in zip(expected_db + expected_q, dataset.database_paths + dataset.query_paths):
        with Image.open(map_path) as png, Image.open(image_path) as image:
            assert (png.mode, png.size) == ("L", image.size)
        assert set(np.unique(load_segmentation(map_path)).tolist()) <= CITYSCAPES_IDS
    assert json.loads((root / "segmentation" / "classes.json").read_text())["shorter_side"] == 64

    # The .mat file itself works too, and existing maps are kept.
    again = segment_dataset(root / "datasets" / "pitts30k_test.mat", cityscapes_model, progress=False)
    assert (again.written, again.skipped) == (0, len(DB_NAMES) + len(Q_NAMES))


def test_mat_sets_and_splits_can_be_chosen(
    tmp_path: Path, cityscapes_model: Path, capsys: pytest.CaptureFixture
) -> None:
    # pitts30k lists 3 database images, pitts250k the first 2; val has 1 (pitts30k) or 2 (pitts250k) queries.
    root = make_two_sets(tmp_path / "Pittsburgh")
    report = segment_dataset(root, cityscapes_model, name="pitts250k", splits=["val"], progress=False)
    assert report.written == 2 + 2
    assert sorted(p.relative_to(root / "segmentation") for p in (root / "segmentation").rglob("*.png")) == sorted(
        [Path("val/database") / Path(n).with_suffix(".png") for n in DB_NAMES[:2]]
        + [Path("val/queries") / Path(n).with_suffix(".png") for n in Q_NAMES[:2]]
    )
    # Both sets' test files share segmentation/test: each image gets one map.
    argv = ["segment", str(root), "--splits", "test", "--model", str(cityscapes_model),
            "--device", "cpu", "--workers", "0", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["written"] == len(DB_NAMES) + len(Q_NAMES)
    assert not (root / "segmentation" / "train").exists()
    with pytest.raises(FileNotFoundError, match=r"pitts10k_\*\.mat"):
        segment_dataset(root, cityscapes_model, name="pitts10k", progress=False)


def test_a_folder_with_neither_images_nor_mat_files_is_named(tmp_path: Path, cityscapes_model: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither images/"):
        segment_dataset(tmp_path / "empty", cityscapes_model, progress=False)


def test_a_place_set_gets_maps_where_place_training_reads_them(tmp_path: Path, cityscapes_model: Path) -> None:
    from vprdistill.data.place_images import open_place_images
    from vprdistill.data.synth import generate

    root = generate(tmp_path / "synth", preset="tiny", seed=2, image_size=32, workers=1, progress=False,
                    train_places=4, views_per_place=2) / "places"  # fmt: skip
    ground_truth = open_place_images(root)
    assert ground_truth.seg_paths is not None  # SynthCity writes its ground-truth maps
    report = segment_dataset(root, model_id_or_path=cityscapes_model, maps_dir="Segmentation-predicted", progress=False)
    assert report.written == ground_truth.num_images and report.failed == 0
    predicted = open_place_images(root, maps_dir="Segmentation-predicted")
    assert [p.name for p in predicted.seg_paths] == [p.name for p in ground_truth.seg_paths]
    assert all(p.parent.parent.name == "Segmentation-predicted" and p.is_file() for p in predicted.seg_paths)
    # The ground truth is left as it was, and the image folders cannot be chosen as maps folders.
    assert all(p.is_file() for p in ground_truth.seg_paths)
    with pytest.raises(ValueError, match="one folder name of the place set"):
        segment_dataset(root, model_id_or_path=cityscapes_model, maps_dir="Images", progress=False)
    with pytest.raises(FileNotFoundError, match="no such maps folder"):
        open_place_images(root, maps_dir="Segmentation-other")

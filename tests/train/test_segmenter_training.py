"""The small SegFormer trainer: it learns, saves a folder ``vprdistill segment`` loads, and predicted maps stay apart."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprdistill.cli.main import main
from vprdistill.data.images import load_image, load_segmentation
from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.data.readers import open_dataset
from vprdistill.data.segmentation_labels import CITYSCAPES_TRAIN_ID_NAMES
from vprdistill.data.segmenter import Segmenter, load_segmentation_model
from vprdistill.eval.segmentation import ConfusionMatrix, evaluate_segmenter
from vprdistill.train.segmenter import (
    MARKER,
    SegmenterTrainingConfig,
    build_processor,
    load_pairs,
    normalise,
    train_segmenter,
    training_pairs,
)

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def dataset_copy(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the shared tiny SynthCity: these tests write predicted maps into it."""
    root = tmp_path_factory.mktemp("seg_synth") / "synth"
    shutil.copytree(synth_tiny, root)
    return root


@pytest.fixture(scope="module")
def trained(dataset_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segmenter trained through the CLI on the day images of the train split."""
    out = tmp_path_factory.mktemp("seg_model") / "segmenter"
    code = main([
        "train-segmenter", "--dataset", str(dataset_copy), "--out", str(out), "--epochs", "10", "--max-images", "48",
        "--image-size", str(IMAGE_SIZE), "--batch-size", "8", "--lr", "3e-3", "--hidden-sizes", "8", "16", "32", "32",
        "--decoder-hidden-size", "32", "--eval-split", "val", "--eval-max-images", "2", "--no-progress",
        "--threads", "1", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    return out


def test_training_lowers_the_loss_and_beats_a_constant_predictor(trained: Path, dataset_copy: Path) -> None:
    record = json.loads((trained / MARKER).read_text())
    losses = record["epoch_losses"]
    assert len(losses) == 10
    assert losses[-1] < 0.7 * losses[0]
    train_set = open_dataset(dataset_copy, split="train")
    learned = evaluate_segmenter(Segmenter(trained), train_set, progress=False, max_images=24)
    # The trivial predictor: every pixel the most frequent class of the same images' truth.
    truth = np.concatenate([load_segmentation(p).ravel() for p in train_set.database_seg_paths[:24]])
    counts = np.bincount(truth[truth != 255], minlength=19)
    constant = ConfusionMatrix()
    constant.update(np.full_like(truth, int(counts.argmax())), truth)
    assert learned.groups["database"]["miou"] > constant.miou() + 0.05
    assert learned.groups["database"]["pixel_accuracy"] > constant.pixel_accuracy()
    # The evaluation after training is in the record, one group per query condition of val.
    groups = record["evaluation"]["groups"]
    assert record["evaluation"]["split"] == "val"
    assert {"database", "queries"} <= set(groups)
    assert len([g for g in groups if g.startswith("queries/")]) == 8


def test_the_saved_folder_loads_through_the_segment_loader(trained: Path) -> None:
    assert (trained / "model.safetensors").is_file()
    assert not (trained / "pytorch_model.bin").exists()
    processor, model = load_segmentation_model(trained)
    assert model.config.num_labels == 19
    assert [model.config.id2label[i] for i in range(19)] == list(CITYSCAPES_TRAIN_ID_NAMES)
    assert processor.size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    segmenter = Segmenter(trained)
    maps = segmenter.segment([Image.new("RGB", (40, 24), (90, 90, 90))])
    assert maps[0].shape == (24, 40) and maps[0].max() < 19


def test_training_normalisation_is_the_image_processors(dataset_copy: Path) -> None:
    processor = build_processor(IMAGE_SIZE)
    image = load_image(open_dataset(dataset_copy, split="train").database_paths[0]).resize((IMAGE_SIZE, IMAGE_SIZE))
    expected = processor(images=[image], return_tensors="pt")["pixel_values"]
    uint8 = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)
    torch.testing.assert_close(normalise(uint8, processor), expected, atol=1e-5, rtol=1e-5)


def test_training_images_are_the_chosen_conditions(dataset_copy: Path) -> None:
    train_set = open_dataset(dataset_copy, split="train")
    day_queries = sum(note == "day-clear-summer" for note in train_set.query_notes)
    pairs = training_pairs(train_set, ["day-clear-summer"])
    assert len(pairs) == train_set.num_database + day_queries
    assert all("@day-clear-summer@" in image.name for image, _ in pairs)
    assert all(seg.parent.parent.parent.name == "segmentation" for _, seg in pairs)
    subset = training_pairs(train_set, None, max_images=5, seed=1)
    assert len(subset) == 5 and subset == training_pairs(train_set, None, max_images=5, seed=1)
    with pytest.raises(ValueError, match="conditions present: .*night-clear-summer"):
        training_pairs(train_set, ["moonlight"])


def test_a_map_with_a_bad_id_is_named(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(image)
    bad = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8), 40, dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"a\.png holds id 40"):
        load_pairs([(image, bad)], 8, progress=False)
    small = tmp_path / "b.png"
    Image.fromarray(np.zeros((4, 8), dtype=np.uint8)).save(small)
    with pytest.raises(ValueError, match=r"b\.png is 8x4 but its image"):
        load_pairs([(image, small)], 8, progress=False)


def test_bad_settings_and_a_foreign_output_folder_fail_before_training(tmp_path: Path, dataset_copy: Path) -> None:
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train_segmenter(dataset_copy, tmp_path / "x", SegmenterTrainingConfig(epochs=0))
    with pytest.raises(ValueError, match="not divisible"):
        SegmenterTrainingConfig(hidden_sizes=[6, 8, 8, 8], num_attention_heads=[4, 1, 1, 1]).validate()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="foreign"):
        train_segmenter(dataset_copy, foreign, SegmenterTrainingConfig(epochs=1))
    assert (foreign / "notes.txt").read_text() == "keep me"


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_segment_maps_dir_keeps_ground_truth_and_the_reader_opens_it(trained: Path, dataset_copy: Path) -> None:
    truth_before = _digest(dataset_copy / "segmentation")
    code = main([
        "segment", str(dataset_copy), "--model", str(trained), "--maps-dir", "segmentation-predicted",
        "--splits", "test", "--workers", "0", "--no-progress", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    assert _digest(dataset_copy / "segmentation") == truth_before
    assert json.loads((dataset_copy / "segmentation-predicted" / "classes.json").read_text())["model"] == str(trained)

    predicted = open_dataset(dataset_copy, split="test", segmentation_dir="segmentation-predicted")
    truth = open_dataset(dataset_copy, split="test")
    assert predicted.database_paths == truth.database_paths
    assert all(p.is_relative_to(dataset_copy / "segmentation-predicted" / "test") for p in predicted.query_seg_paths)
    assert all(p.is_relative_to(dataset_copy / "segmentation" / "test") for p in truth.query_seg_paths)
    segmenter = Segmenter(trained)
    for image, seg in list(zip(predicted.query_paths, predicted.query_seg_paths))[:3]:
        np.testing.assert_array_equal(load_segmentation(seg), segmenter.segment([load_image(image)])[0])
    # The predicted maps differ from the truth somewhere: they are the model's, not copies.
    assert any(
        not np.array_equal(load_segmentation(a), load_segmentation(b))
        for a, b in zip(predicted.query_seg_paths, truth.query_seg_paths)
    )


def test_the_reader_names_a_missing_or_bad_maps_folder(dataset_copy: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"segmentation-other.*val"):
        open_dataset(dataset_copy, split="val", segmentation_dir="segmentation-other")
    for bad in ("../elsewhere", "images", "", ".hidden"):
        with pytest.raises(ValueError, match="segmentation_dir"):
            open_dataset(dataset_copy, split="val", segmentation_dir=bad)
    with pytest.raises(ValueError, match="segmentation_dir"):
        main(["segment", str(dataset_copy), "--maps-dir", "a/b", "--no-progress", "--debug"])

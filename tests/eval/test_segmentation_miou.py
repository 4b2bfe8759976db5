"""Confusion-matrix mIoU, checked against scikit-learn's Jaccard score, and per-condition evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import jaccard_score

from vprdistill.cli.main import main
from vprdistill.data.images import load_segmentation
from vprdistill.data.readers import open_dataset
from vprdistill.data.segmentation_labels import CITYSCAPES_TRAIN_ID_NAMES
from vprdistill.eval.segmentation import ConfusionMatrix, evaluate_segmenter, miou


def _sklearn_iou(prediction: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    """Per-class IoU of the classes in truth or prediction, on non-void truth pixels (the independent formula)."""
    valid = truth.ravel() != 255
    t, p = truth.ravel()[valid], prediction.ravel()[valid]
    present = sorted(set(t.tolist()) | set(p.tolist()))
    scores = jaccard_score(t, p, labels=present, average=None, zero_division=0)
    return dict(zip(present, scores.tolist()))


def test_iou_matches_sklearn_on_random_maps_with_void() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 12, size=(4, 37, 29)).astype(np.uint8)
    truth[rng.random(truth.shape) < 0.2] = 255
    prediction = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 14, size=truth.shape)).astype(np.uint8)
    prediction[truth == 255] = rng.integers(0, 19, size=int((truth == 255).sum()))  # ignored pixels
    matrix = ConfusionMatrix()
    for p, t in zip(prediction, truth):
        matrix.update(p, t)
    expected = _sklearn_iou(prediction, truth)
    iou = matrix.iou()
    for class_id in range(19):
        if class_id in expected:
            assert iou[class_id] == pytest.approx(expected[class_id], abs=1e-12)
        else:
            assert np.isnan(iou[class_id])
    assert matrix.miou() == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert matrix.pixels == int((truth != 255).sum())
    assert matrix.pixel_accuracy() == pytest.approx(float((prediction == truth)[truth != 255].mean()))
    assert miou(prediction, truth) == pytest.approx(matrix.miou())


def test_absent_classes_are_left_out_of_the_mean() -> None:
    truth = np.array([[0, 0, 1, 1]])
    prediction = np.array([[0, 1, 1, 1]])
    # road: TP 1, FN 1 -> 1/2; sidewalk: TP 2, FP 1 -> 2/3; the other 17 classes occur nowhere.
    assert miou(prediction, truth) == pytest.approx((1 / 2 + 2 / 3) / 2)
    summary = ConfusionMatrix()
    summary.update(prediction, truth)
    record = summary.summary(images=1)
    assert record["iou"]["road"] == pytest.approx(0.5)
    assert record["iou"]["bicycle"] is None
    # A class only predicted (a false positive everywhere) counts with IoU 0.
    assert miou(np.array([[0, 0, 1, 5]]), np.array([[0, 0, 1, 1]])) == pytest.approx((1 + 0.5 + 0) / 3)
    assert np.isnan(miou(np.array([[3]]), np.array([[255]])))


def test_a_void_prediction_is_an_error_of_the_truth_class() -> None:
    truth = np.array([0, 0, 2, 2])
    prediction = np.array([0, 255, 2, 2])
    matrix = ConfusionMatrix()
    matrix.update(prediction, truth)
    assert matrix.iou()[0] == pytest.approx(0.5)  # TP 1, FN 1 (the void prediction)
    assert matrix.iou()[2] == pytest.approx(1.0)  # no class gains a false positive
    assert matrix.pixels == 4


def test_merging_counts_equals_counting_together() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 19, (2, 2, 50))
    together, left, right = ConfusionMatrix(), ConfusionMatrix(), ConfusionMatrix()
    together.update(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))
    left.update(a[0], a[1])
    right.update(b[0], b[1])
    left.merge(right)
    np.testing.assert_array_equal(left.matrix, together.matrix)


def test_bad_maps_are_named() -> None:
    matrix = ConfusionMatrix()
    with pytest.raises(ValueError, match=r"truth\.png: truth holds id 40"):
        matrix.update(np.zeros((2, 2), np.uint8), np.full((2, 2), 40, np.uint8), where="truth.png")
    with pytest.raises(ValueError, match=r"x\.png: prediction has shape \(2, 3\) but the truth \(2, 2\)"):
        matrix.update(np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.uint8), where="x.png")
    with pytest.raises(ValueError, match="integer class ids"):
        matrix.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))


class _ConstantSegmenter:
    """Predicts one class everywhere, at each image's size."""

    name = "constant"

    def __init__(self, class_id: int) -> None:
        self.class_id = class_id

    def segment(self, images: list[Image.Image]) -> list[np.ndarray]:
        return [np.full((image.height, image.width), self.class_id, np.uint8) for image in images]


def test_evaluation_groups_database_queries_and_each_condition(synth_tiny: Path) -> None:
    dataset = open_dataset(synth_tiny, split="test")
    evaluation = evaluate_segmenter(_ConstantSegmenter(2), dataset, batch_size=2, progress=False, max_images=3)
    conditions = sorted(set(dataset.query_notes))
    assert len(conditions) == 8
    assert list(evaluation.groups) == ["database", "queries", *[f"queries/{c}" for c in conditions]]
    for condition in conditions:
        seg_paths = [s for s, n in zip(dataset.query_seg_paths, dataset.query_notes) if n == condition][:3]
        truth = np.stack([load_segmentation(p) for p in seg_paths])
        expected = _sklearn_iou(np.full_like(truth, 2), truth)
        group = evaluation.groups[f"queries/{condition}"]
        assert group["images"] == 3
        assert group["miou"] == pytest.approx(np.mean(list(expected.values())))
        assert group["iou"]["building"] == pytest.approx(expected[2])
    assert evaluation.groups["queries"]["images"] == 24
    assert evaluation.groups["database"]["images"] == 3
    table = evaluation.markdown()
    assert table.count("\n") == 2 + len(evaluation.groups) - 1 and "| queries/night-clear-summer | 3 |" in table


def test_evaluation_needs_ground_truth_maps(synth_tiny: Path) -> None:
    dataset = open_dataset(synth_tiny, split="test")
    dataset.database_seg_paths = dataset.query_seg_paths = None
    with pytest.raises(ValueError, match="has no segmentation maps"):
        evaluate_segmenter(_ConstantSegmenter(0), dataset, progress=False)


def test_eval_segmenter_command_writes_json(synth_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    names = dict(enumerate(CITYSCAPES_TRAIN_ID_NAMES))
    config = SegformerConfig(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=8,
        num_labels=19, id2label=names, label2id={n: i for i, n in names.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "model")
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "model")
    out = tmp_path / "miou.json"
    code = main([
        "eval-segmenter", "--model", str(tmp_path / "model"), "--dataset", str(synth_tiny), "--split", "test",
        "--max-images", "1", "--json", str(out), "--no-progress", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["model"] == str(tmp_path / "model")
    assert len(result["groups"]) == 10
    assert all(g["miou"] is None or 0 <= g["miou"] <= 1 for g in result["groups"].values())
    assert "| database | 1 |" in capsys.readouterr().out

"""Out-of-map rejection: threshold sweep, the calibrate command, and unknown answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.deploy.helpers import pattern_image
from vprdistill.cli.main import main
from vprdistill.data.readers import open_dataset
from vprdistill.deploy.calibration import calibrate_from_scores, confidence_of, spatial_holdout, sweep_thresholds
from vprdistill.deploy.localizer import Localizer


def test_sweep_counts_precision_recall_and_false_accepts() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, False])
    in_map = np.array([True, True, True, False])
    rows = {row["threshold"]: row for row in sweep_thresholds(scores, correct, in_map)}
    assert rows[0.7]["precision"] == pytest.approx(2 / 3) and rows[0.7]["recall"] == pytest.approx(2 / 3)
    assert rows[0.6]["false_accept_rate"] == 1.0 and rows[0.7]["false_accept_rate"] == 0.0
    assert rows[0.9]["precision"] == 1.0 and rows[0.9]["recall"] == pytest.approx(1 / 3)


def test_threshold_is_the_lowest_reaching_the_target_with_a_margin() -> None:
    # Out-of-map scores 0.50..0.59, right answers 0.80..0.89: any threshold in (0.59, 0.80] is perfect.
    scores = np.concatenate([np.linspace(0.5, 0.59, 10), np.linspace(0.8, 0.89, 10)])
    in_map = np.arange(20) >= 10
    record = calibrate_from_scores(scores, in_map, in_map, target_precision=0.95)
    assert record["target_reached"] and record["precision"] == 1.0 and record["recall"] == 1.0
    assert record["threshold"] == pytest.approx((0.59 + 0.80) / 2)
    # Confidence is the calibrated probability of a right answer: 0 for out-of-map scores, 1 for right ones.
    np.testing.assert_allclose(confidence_of(np.array([0.4, 0.55, 0.85, 0.95]), record), [0, 0, 1, 1])
    assert np.all(np.diff(confidence_of(np.linspace(0.4, 1.0, 50), record)) >= 0)


def test_calibration_refuses_a_one_sided_validation_set() -> None:
    with pytest.raises(ValueError, match="out-of-map"):
        calibrate_from_scores(np.ones(5), np.ones(5, bool), np.ones(5, bool))


def test_spatial_holdout_splits_along_the_route() -> None:
    # A diagonal street: the map is one end of it, whatever its orientation.
    positions = np.stack([np.arange(10.0) * 30, np.arange(10.0) * 40], axis=1)
    mask = spatial_holdout(positions)
    assert mask.sum() == 5 and (mask[:5].all() or mask[5:].all())


def test_calibrate_command_stores_a_threshold_and_rejects_unseen_places(
    tiny_index: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    assert main(["index", "calibrate", str(index_dir), "--dataset", str(tiny_dataset), "--split", "val",
                 "--threshold-m", "25", "--no-progress"]) == 0  # fmt: skip
    output = capsys.readouterr().out
    assert "precision" in output and "<- chosen" in output

    calibration = json.loads((index_dir / "index.json").read_text())["calibration"]
    # val: 16 database images, 50 m apart, each copied by a query; the map is half of the street.
    assert calibration["num_in_map"] == 8 and calibration["num_out_of_map"] == 8
    assert calibration["precision"] >= 0.95 and calibration["target_reached"]
    assert calibration["split"] == "val" and calibration["threshold_m"] == 25.0
    assert len(calibration["table"]) >= 2

    localizer = Localizer.from_index_folder(index_dir)
    dataset = open_dataset(tiny_dataset, "test")
    known = localizer.localize([str(p) for p in dataset.query_paths])
    assert not any(r.unknown for r in known)
    assert all(r.threshold == calibration["threshold"] and r.confidence > 0.5 for r in known)
    rng = np.random.default_rng(99)
    unseen = localizer.localize([pattern_image(rng) for _ in range(6)])
    assert all(r.unknown and r.position is None for r in unseen)
    assert all(r.to_dict()["unknown"] is True for r in unseen)

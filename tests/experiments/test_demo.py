"""`vprdistill demo --quick` end to end: every stage runs and the report holds a row per model and its baselines."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from vprdistill.cli.main import main
from vprdistill.experiments.demo import (
    DEMO_MODELS,
    FULL,
    PREDICTED_MAPS_DIR,
    PREDICTED_PLACE_MAPS_DIR,
    QUICK,
    DemoBudget,
)


def test_quick_demo_writes_a_report_with_a_row_per_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0

    results = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in results["rows"]]
    assert names == [model.name for model in DEMO_MODELS]
    for row in results["rows"]:
        # Recall@N can only grow with N; each figure is the share of hits over the same queries.
        assert row["recall"]["1"] <= row["recall"]["5"] <= row["recall"]["10"]
        for n in ("1", "5", "10"):
            assert 100 * sum(row["hits"][n]) / len(row["hits"][n]) == pytest.approx(row["recall"][n])
        assert row["parameters"] > 0
        assert row["recall_per_condition"], "per-condition recall is reported"
        low, high = row["recall_ci"]["1"]
        assert low <= row["recall"]["1"] <= high
        assert 100 * sum(row["hits"]["1"]) / len(row["hits"]["1"]) == row["recall"]["1"]

    # Baselines: the parameter-free thumbnail and every network untrained, evaluated on the same queries.
    baselines = results["baselines"]
    assert [row["name"] for row in baselines] == ["thumbnail-16 (no training)"] + [
        f"{model.name}, untrained" for model in DEMO_MODELS
    ]
    assert baselines[0]["kind"] == "baseline" and baselines[0]["parameters"] == 0
    for row, model in zip(baselines[1:], DEMO_MODELS):
        assert row["kind"] == "untrained" and row["baseline_for"] == model.name
        trained = next(r for r in results["rows"] if r["name"] == model.name)
        assert row["parameters"] == trained["parameters"]
        assert len(row["hits"]["1"]) == len(trained["hits"]["1"])

    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for model in DEMO_MODELS:
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {model.name} |"))
        recalls = [float(cell) for cell in line.strip("|").split("|")[2:5]]
        row = next(r for r in results["rows"] if r["name"] == model.name)
        assert recalls == pytest.approx([row["recall"][n] for n in ("1", "5", "10")], abs=0.051)
        assert model.name in html
        assert any(line.startswith(f"| {model.name}, untrained |") for line in markdown.splitlines())
    assert "## Baselines" in markdown and "## Trained against baselines" in markdown
    assert any(line.startswith("| thumbnail-16 (no training) |") for line in markdown.splitlines())
    # Self-contained: plots are inlined, nothing is fetched from elsewhere.
    assert html.count("data:image/png;base64,") >= 3
    assert not re.search(r"""(src|href)=["']https?://""", html)
    # Every model is an ordinary run folder, usable by the other commands.
    for model in DEMO_MODELS:
        assert (out / "runs" / model.key / "best.safetensors").is_file()
    # StructVPR reads the demo segmenter's predicted maps, never SynthCity's ground truth.
    data = out / "data" / "synthcity-tiny"
    place_images = sorted((data / "places" / "Images").rglob("*.jpg"))
    predicted_places = data / "places" / PREDICTED_PLACE_MAPS_DIR
    assert place_images and all(
        (predicted_places / image.parent.name / (image.stem + ".png")).is_file() for image in place_images
    )
    test_photos = sorted((data / "images" / "test").rglob("*.jpg"))
    assert test_photos and all(
        (data / PREDICTED_MAPS_DIR / "test" / image.relative_to(data / "images" / "test")).with_suffix(".png").is_file()
        for image in test_photos
    )
    for model in DEMO_MODELS:
        config = yaml.safe_load((out / "runs" / model.key / "config.yaml").read_text())
        # Every model trains on the budget's batch shape: P places x K of their views.
        assert (config["data"]["places_per_batch"], config["data"]["views_per_place"]) == (
            QUICK.places_per_batch,
            QUICK.views_per_batch,
        )
        if model.reads_maps:
            assert config["data"]["places_segmentation_dir"] == PREDICTED_PLACE_MAPS_DIR
            assert config["data"]["segmentation_dir"] == PREDICTED_MAPS_DIR
    assert sum(model.reads_maps for model in DEMO_MODELS) == 3  # the seg-branch and its two students
    record = results["segmenter"]
    conditions = {name for name in record["evaluation"]["groups"] if name.startswith("queries/")}
    assert len(conditions) >= 2, "mIoU is reported per query condition"
    assert "Segmenter (SegFormer" in markdown and "per query condition" in markdown

    printed = capsys.readouterr().out
    assert "R@1" in printed and "report:" in printed and "thumbnail-16" in printed


def test_the_full_budget_puts_every_view_of_a_place_in_its_batch_and_a_budget_is_checked():
    # Every condition of a place meets in each batch (RESULTS.md, views-per-batch).
    assert FULL.views_per_batch == FULL.views_per_place == 8
    with pytest.raises(ValueError, match=r"views_per_batch must be between 2 and views_per_place \(3\), got 4"):
        DemoBudget("tiny", 48, 1, 12, 3, 4, 4, 40, segmenter_epochs=1)

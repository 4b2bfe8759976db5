"""`vprdistill demo --quick` end to end: every stage runs and the report holds a row per model and its baselines."""

from __future__ import annotations

import json
import re

import pytest

from vprdistill.cli.main import main
from vprdistill.experiments.demo import DEMO_MODELS


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
        assert all(0.0 <= value <= 100.0 for value in recalls)
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
    printed = capsys.readouterr().out
    assert "R@1" in printed and "report:" in printed and "thumbnail-16" in printed

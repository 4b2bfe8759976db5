"""``vprdistill info``: per-part parameters and FLOPs of a preset or a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vprdistill.cli.main import main
from vprdistill.models import build_model, save_model, summarize


def test_info_prints_parts_and_flops_of_a_tiny_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "tscm-student-tiny", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    model = build_model("tscm-student-tiny")
    for name, part in model.parts().items():
        count = sum(p.numel() for p in part.parameters())
        assert any(line.split()[:2] == [name, f"{count:,}"] for line in out.splitlines()), (name, out)
    assert f"{sum(p.numel() for p in model.parameters()):,}" in out
    assert "GFLOPs" in out and "512-d" in out and "64x64" in out


def test_info_json_of_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_model(build_model("structvpr-seg-tiny"), tmp_path / "best")
    assert main(["info", str(tmp_path), "--image-size", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "structvpr-seg-tiny" and summary["input_channels"] == 10
    assert summary["descriptor_dim"] == 256 and summary["image_size"] == [64, 64]
    assert sum(part["parameters"] for part in summary["parts"]) == summary["total_parameters"]


def test_flops_grow_with_the_pixel_count() -> None:
    with torch.device("meta"):
        model = build_model("structvpr-rgb-tiny")
    small, large = summarize(model, 64), summarize(model, 128)
    # Convolutions only, on sizes divisible by the stride: exactly 4x the FLOPs for 4x the pixels.
    assert small["flops"] > 0 and large["flops"] == 4 * small["flops"]
    assert sum(part["flops"] for part in small["parts"]) == small["flops"]


def test_info_rejects_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "no-such-model"]) == 1
    assert "tscm-teacher" in capsys.readouterr().err


@pytest.mark.parametrize(("preset", "official"), [("tscm-teacher", 125_003_266), ("tscm-student", 12_699_777)])
def test_info_counts_of_the_official_presets(preset: str, official: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The official code's counts (whole teacher; the student's used part), see test_presets.py."""
    assert main(["info", preset, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert abs(summary["total_parameters"] / official - 1) < 0.005
    assert summary["descriptor_dim"] == 2048
    assert main(["info", preset]) == 0
    millions = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("(millions)"))
    assert millions == f"{official / 1e6:.2f}"


def test_info_list_describes_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "official code" in lines["tscm-teacher"] and "our choice" in lines["tscm-teacher-fulltoken"]

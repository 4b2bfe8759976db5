"""ONNX export: ONNX Runtime must reproduce PyTorch's descriptors; the file is written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.deploy.helpers import save_tiny_model
from vprdistill.cli.main import main
from vprdistill.deploy.export import OnnxMismatchError, export_onnx, sidecar_path
from vprdistill.models.checkpoint import load_model, model_fingerprint
from vprdistill.models.registry import build_model


def test_export_command_matches_pytorch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stem = save_tiny_model(tmp_path)
    out = tmp_path / "student.onnx"
    assert (
        main(["export", "--model", str(stem), "--format", "onnx", "--out", str(out), "--image-size", "64", "48"]) == 0
    )
    assert "max |ONNX Runtime - PyTorch|" in capsys.readouterr().out
    sidecar = json.loads(sidecar_path(out).read_text())
    model = load_model(stem)
    assert sidecar["fingerprint"] == model_fingerprint(model) and sidecar["image_size"] == [64, 48]
    assert sidecar["exporter"] == "legacy" and sidecar["opset"] == 17
    assert max(sidecar["max_abs_diff"].values()) <= 1e-4 and set(sidecar["max_abs_diff"]) == {"1", "3"}

    # The file works on its own: a batch of 5 (a size never exported) gives PyTorch's descriptors.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    (found,) = session.run(["descriptors"], {"images": images.numpy()})
    with torch.inference_mode():
        expected = model(images).numpy()
    np.testing.assert_allclose(found, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("preset", ["tscm-student-tiny", "tscm-teacher-tiny"])
def test_tiny_tscm_presets_export(preset: str, tmp_path: Path) -> None:
    # The student has a NetVLAD-Loupe head; the teacher adds cross-attention (MultiheadAttention)
    # and a ViT whose position embedding is resampled, which only the dynamo exporter handles.
    torch.manual_seed(0)
    model = build_model(preset).eval()
    record = export_onnx(model, tmp_path / f"{preset}.onnx", image_size=64)
    assert max(record["max_abs_diff"].values()) <= 1e-4
    assert record["exporter"] == ("dynamo" if preset == "tscm-teacher-tiny" else "legacy")
    assert (tmp_path / f"{preset}.onnx").stat().st_size > 1_000_000


def test_mismatch_beyond_tolerance_writes_nothing(tmp_path: Path) -> None:
    model = build_model("resnet18-gem").eval()
    out = tmp_path / "model.onnx"
    with pytest.raises(OnnxMismatchError, match="not written"):
        export_onnx(model, out, image_size=32, atol=1e-12)  # float kernels of two runtimes never agree this closely
    assert list(tmp_path.iterdir()) == []

"""ONNX export of a place model, checked against PyTorch before the file is kept.

The exported graph takes ``images`` `(B, 3, H, W)` (ImageNet-normalised, B
dynamic, H and W fixed at export) and returns ``descriptors`` `(B, D)`,
L2-normalised. The ``dynamo`` exporter (``torch.export``) handles every preset
of the package, the TSCM teacher's resampled ViT position embedding included,
but writes opset 18 or later (its conversion down to 17 fails on these
graphs). The ``legacy`` TorchScript exporter honours opset 17 and is several
times faster, but cannot export that resampling
(``aten::_upsample_bicubic2d_aa``). ``auto`` tries legacy first when the
requested opset is below 18 (ResNet presets, the TSCM student) and falls back
to dynamo (the TSCM teacher); from opset 18 it tries dynamo first.

The ``.onnx`` file is written atomically and only after ONNX Runtime reproduced
PyTorch's descriptors on batches of 1 and 3 within ``atol``; a sidecar
``<file>.onnx.json`` records the model config, fingerprint, input size and the
measured difference.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_size_hw
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.logging import get_logger

EXPORTERS = ("auto", "dynamo", "legacy")
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
CHECK_BATCH_SIZES = (1, 3)
DYNAMO_MIN_OPSET = 18
log = get_logger("deploy.export")


class OnnxMismatchError(RuntimeError):
    """ONNX Runtime's descriptors differ from PyTorch's beyond the tolerance."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json`` (never ``model.json``, which may be a checkpoint's config)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def _export_dynamo(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model, (example,), None, dynamo=True, dynamic_shapes=({0: batch},),
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        opset_version=max(opset, DYNAMO_MIN_OPSET), verbose=False,
    )  # fmt: skip
    program.save(str(path))


def _export_legacy(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    # The tracer warns about every Python-level shape check (nn.MultiheadAttention has many);
    # whether the traced graph is right is decided by the comparison with PyTorch that follows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _legacy_export_call(model, example, path, opset)


def _legacy_export_call(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=opset,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )  # fmt: skip


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> str:
    """Write the graph to ``path`` with the requested exporter; return the one that worked."""
    if exporter == "auto":
        order = ("legacy", "dynamo") if opset < DYNAMO_MIN_OPSET else ("dynamo", "legacy")
    else:
        order = (exporter,)
    failures = []
    for name in order:
        try:
            (_export_dynamo if name == "dynamo" else _export_legacy)(model, example, path, opset)
            return name
        except Exception as error:  # each exporter fails in its own way on unsupported operators
            failures.append(f"{name}: {type(error).__name__}: {str(error)[:500]}")
            log.warning("the %s ONNX exporter failed: %s", name, failures[-1])
    raise RuntimeError("ONNX export failed:\n" + "\n".join(failures))


def onnx_session(path: str | Path, device: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session on CUDA when asked for and available, else the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def compare_with_pytorch(
    model: torch.nn.Module, onnx_path: Path, image_size: tuple[int, int], batch_sizes: Sequence[int], seed: int = 0
) -> dict[int, float]:
    """Max absolute difference of the `(B, D)` descriptors of ONNX Runtime and PyTorch, per batch size."""
    session = onnx_session(onnx_path)
    generator = torch.Generator().manual_seed(seed)
    differences = {}
    for batch in batch_sizes:
        images = torch.randn(batch, 3, *image_size, generator=generator)
        with torch.inference_mode():
            expected = model(images).float().numpy()
        (found,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        if found.shape != expected.shape:
            raise OnnxMismatchError(f"ONNX output has shape {found.shape}, PyTorch {expected.shape} (batch {batch})")
        differences[int(batch)] = float(np.abs(found - expected).max())
    return differences


def export_onnx(
    model: torch.nn.Module,
    out_path: str | Path,
    image_size: tuple[int, int] | int,
    opset: int = 17,
    exporter: str = "auto",
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
) -> dict[str, Any]:
    """Export ``model`` (on the CPU, eval mode) to ``out_path`` and check it; return the sidecar record.

    Raises:
        OnnxMismatchError: ONNX Runtime and PyTorch differ by more than ``atol``
            (nothing is written then).
        RuntimeError: no exporter could export the model (each one's error is listed).
    """
    from vprdistill.models.checkpoint import model_fingerprint

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    import onnx

    size = image_size_hw(image_size)
    model = model.to("cpu").eval()
    channels = int(getattr(model, "input_channels", 3))
    if channels != 3:
        raise ValueError(f"export takes RGB models; this one takes {channels}-channel input")
    out_path = Path(out_path)
    # Batch 2: torch.export specialises a dimension of size 1 to a constant.
    example = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with atomic_path(out_path) as tmp:
        used = _export(model, example, tmp, opset, exporter)
        differences = compare_with_pytorch(model, tmp, size, batch_sizes)
        worst = max(differences.values())
        if not worst <= atol:  # also catches NaN
            raise OnnxMismatchError(
                f"ONNX Runtime and PyTorch descriptors differ by up to {worst:.3g} (> atol {atol:g}) "
                f"per batch size {differences}; {out_path} was not written"
            )
        opsets = {entry.domain or "ai.onnx": entry.version for entry in onnx.load(str(tmp), load_external_data=False).opset_import}
    import onnxruntime

    record = {
        "format": "vprdistill-onnx",
        "onnx_file": out_path.name,
        "model_config": dict(getattr(model, "config", {})),
        "fingerprint": model_fingerprint(model),
        "descriptor_dim": int(getattr(model, "descriptor_dim", 0)),
        "image_size": list(size),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, *size], "dtype": "float32",
                  "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},  # fmt: skip
        "output": {"name": OUTPUT_NAME, "shape": ["batch", int(getattr(model, "descriptor_dim", 0))], "l2_normalised": True},
        "exporter": used,
        "opset_requested": int(opset),
        "opset": int(opsets.get("ai.onnx", opset)),
        "atol": float(atol),
        "max_abs_diff": {str(batch): diff for batch, diff in differences.items()},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
    }
    atomic_write_json(sidecar_path(out_path), record)
    return record

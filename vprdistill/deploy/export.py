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

``embed_preprocessing=True`` exports a frame-in graph instead
(``vprdistill.deploy.frame_graph``): input ``frames`` `(N, H_in, W_in, 3)` uint8
in ``channel_order``, any size, resized and normalised inside the graph. Its
antialiased resize needs the dynamo exporter (opset 18 or later); it is checked
on uint8 frames of two sizes against the PyTorch path (PIL image,
``build_transform``, model) within ``FRAME_ATOL`` by default.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_size_hw
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.extras import require
from vprdistill.utils.logging import get_logger

EXPORTERS = ("auto", "dynamo", "legacy")
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
CHECK_BATCH_SIZES = (1, 3)
DEFAULT_ATOL = 1e-4
DYNAMO_MIN_OPSET = 18
log = get_logger("deploy.export")


class OnnxMismatchError(RuntimeError):
    """ONNX Runtime's descriptors differ from PyTorch's beyond the tolerance."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json`` (never ``model.json``, which may be a checkpoint's config)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


# Dynamic input axes of each graph: the float-in graph's batch; the frame graph's batch, height and width.
IMAGE_AXES = {0: "batch"}
FRAME_AXES = {0: "batch", 1: "height", 2: "width"}
# Largest dynamic size declared to torch.export (ONNX keeps the axes symbolic; nothing enforces it at run time).
_DIM_MAX = {"batch": 4096, "height": 16384, "width": 16384}


def _export(
    model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str,
    input_name: str = INPUT_NAME, axes: dict[int, str] = IMAGE_AXES, order: Sequence[str] | None = None,
) -> str:  # fmt: skip
    """Write the graph to ``path`` with the requested exporter (or ``order`` for ``auto``); return the one that worked."""
    if exporter != "auto":
        order = (exporter,)
    elif order is None:
        order = ("legacy", "dynamo") if opset < DYNAMO_MIN_OPSET else ("dynamo", "legacy")
    failures = []
    for name in order:
        try:
            if name == "dynamo":
                dims = {axis: torch.export.Dim(dim, min=1, max=_DIM_MAX[dim]) for axis, dim in axes.items()}
                torch.onnx.export(
                    model, (example,), None, dynamo=True, dynamic_shapes=(dims,),
                    input_names=[input_name], output_names=[OUTPUT_NAME],
                    opset_version=max(opset, DYNAMO_MIN_OPSET), verbose=False,
                ).save(str(path))  # fmt: skip
                return name
            # The tracer warns about every Python-level shape check (nn.MultiheadAttention has many);
            # whether the traced graph is right is decided by the comparison with PyTorch that follows.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(
                    model, (example,), str(path), dynamo=False, opset_version=opset,
                    input_names=[input_name], output_names=[OUTPUT_NAME],
                    dynamic_axes={input_name: dict(axes), OUTPUT_NAME: {0: "batch"}},
                )  # fmt: skip
            return name
        except Exception as error:  # each exporter fails in its own way on unsupported operators
            failures.append(f"{name}: {type(error).__name__}: {str(error)[:500]}")
            log.warning("the %s ONNX exporter failed: %s", name, failures[-1])
    raise RuntimeError("ONNX export failed:\n" + "\n".join(failures))


def onnx_session(path: str | Path, device: str = "cpu", threads: int | None = None, provider: str | None = None):
    """An ONNX Runtime session on ``provider``, else on CUDA when ``device`` asks for it and it is available, else the CPU.

    The CPU provider stays the fallback for the nodes another provider does not
    support. ``threads``: intra-op threads (None: ONNX Runtime's default). Only
    errors are logged: its warnings (constant folding of fp16 nodes, nodes placed
    on the CPU) describe the graph, not a failure.
    """
    ort = require("onnxruntime", "export", "ONNX Runtime")

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if provider is None and device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        provider = "CUDAExecutionProvider"
    providers = (
        ["CPUExecutionProvider"] if provider in (None, "CPUExecutionProvider") else [provider, "CPUExecutionProvider"]
    )
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def export_onnx(
    model: torch.nn.Module,
    out_path: str | Path,
    image_size: tuple[int, int] | int,
    opset: int = 17,
    exporter: str = "auto",
    atol: float | None = None,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    embed_preprocessing: bool = False,
    channel_order: str = "RGB",
) -> dict[str, Any]:
    """Export ``model`` (on the CPU, eval mode) to ``out_path`` and check it; return the sidecar record.

    Args:
        image_size: ``(H, W)`` (or one side) of the model's input, fixed in the graph.
        atol: largest allowed difference of the L2-normalised descriptors; default
            ``1e-4``, or ``FRAME_ATOL`` with ``embed_preprocessing``.
        batch_sizes: the batches of random images of the float-in check.
        embed_preprocessing: export the frame-in graph, input ``frames``
            `(N, H_in, W_in, 3)` uint8 of any size (see ``vprdistill.deploy.frame_graph``),
            instead of ``images`` `(B, 3, H, W)` float32, normalised.
        channel_order: ``RGB`` or ``BGR``, the frames' channel order (frame graphs only).

    Raises:
        OnnxMismatchError: ONNX Runtime and PyTorch differ by more than ``atol``
            (nothing is written then).
        RuntimeError: no exporter could export the model (each one's error is listed).
        ValueError: an unknown exporter or channel order, a model that does not take
            RGB images, or a frame graph asked of the legacy exporter.
    """
    from vprdistill.deploy import frame_graph
    from vprdistill.models.checkpoint import model_fingerprint

    # onnx writes and reads the graph, onnxscript is the dynamo exporter's, onnxruntime runs the check.
    onnx, _, onnxruntime = (
        require(module, "export", "ONNX export") for module in ("onnx", "onnxscript", "onnxruntime")
    )
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    channel_order = frame_graph.check_channel_order(channel_order)
    if not embed_preprocessing and channel_order != "RGB":
        raise ValueError(f"channel_order={channel_order} applies to frame graphs (embed_preprocessing=True) only")
    if embed_preprocessing and exporter == "legacy":
        raise ValueError(
            "the legacy ONNX exporter cannot export the frame graph's antialiased resize "
            "(aten::_upsample_bilinear2d_aa, at any opset); use the dynamo or auto exporter"
        )
    size = image_size_hw(image_size)
    model = model.to("cpu").eval()
    channels = int(getattr(model, "input_channels", 3))
    if channels != 3:
        raise ValueError(f"export takes RGB models; this one takes {channels}-channel input")
    out_path = Path(out_path)
    dim = int(getattr(model, "descriptor_dim", 0))
    if embed_preprocessing:
        atol = frame_graph.FRAME_ATOL if atol is None else float(atol)
        graph = frame_graph.FrameGraph(model, size, channel_order).eval()
        # A frame size other than the model's and the check's, so that no size is specialised to a constant.
        frames = frame_graph.synthetic_frames((2, (3 * size[0]) // 2 + 1, (4 * size[1]) // 3 + 3, 3), seed=99)
        example = torch.from_numpy(frame_graph.as_channel_order(frames, channel_order))
        graph_args = (frame_graph.FRAME_INPUT_NAME, FRAME_AXES, ("dynamo",))
        input_record = frame_graph.frame_input_record(size, channel_order)
    else:
        atol = DEFAULT_ATOL if atol is None else float(atol)
        # Batch 2: torch.export specialises a dimension of size 1 to a constant.
        graph, example = model, torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
        graph_args = (INPUT_NAME, IMAGE_AXES, None)
        input_record = {
            "name": INPUT_NAME,
            "shape": ["batch", 3, *size],
            "dtype": "float32",
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        }
    with atomic_path(out_path) as tmp:
        used = _export(graph, example, tmp, opset, exporter, *graph_args)
        if embed_preprocessing:
            checks = frame_graph.check_frame_graph(graph, onnx_session(tmp), atol, out_path)
        else:
            checks = _check_image_graph(model, tmp, size, batch_sizes, atol, out_path)
        opsets = {
            entry.domain or "ai.onnx": entry.version
            for entry in onnx.load(str(tmp), load_external_data=False).opset_import
        }
    record = {
        "format": "vprdistill-onnx",
        "onnx_file": out_path.name,
        "model_config": dict(getattr(model, "config", {})),
        "fingerprint": model_fingerprint(model),
        "descriptor_dim": dim,
        "image_size": list(size),
        **({"embedded_preprocessing": True} if embed_preprocessing else {}),
        "input": input_record,
        "output": {"name": OUTPUT_NAME, "shape": ["batch", dim], "l2_normalised": True},
        "exporter": used,
        "opset_requested": int(opset),
        "opset": int(opsets.get("ai.onnx", opset)),
        "atol": float(atol),
        **checks,
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }
    atomic_write_json(sidecar_path(out_path), record)
    return record


def _check_image_graph(
    model: torch.nn.Module, path: Path, size: tuple[int, int], batch_sizes: Sequence[int], atol: float, out_path: Path
) -> dict[str, Any]:
    """The float-in graph against PyTorch: max absolute difference of the `(B, D)` descriptors of random batches."""
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(0)
    differences = {}
    for batch in batch_sizes:
        images = torch.randn(batch, 3, *size, generator=generator)
        with torch.inference_mode():
            expected = model(images).float().numpy()
        (found,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        if found.shape != expected.shape:
            raise OnnxMismatchError(f"ONNX output has shape {found.shape}, PyTorch {expected.shape} (batch {batch})")
        differences[int(batch)] = float(np.abs(found - expected).max())
    worst = max(differences.values())
    if not worst <= atol:  # also catches NaN
        raise OnnxMismatchError(
            f"ONNX Runtime and PyTorch descriptors differ by up to {worst:.3g} (> atol {atol:g}) "
            f"per batch size {differences}; {out_path} was not written"
        )
    return {"max_abs_diff": {str(batch): diff for batch, diff in differences.items()}}

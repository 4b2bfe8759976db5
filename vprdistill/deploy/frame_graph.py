"""A frame-in graph: camera frames of any size in, descriptors out, the preprocessing inside the graph.

``FrameGraph`` wraps a place model so that the exported ONNX graph takes what a
camera driver hands over, ``frames`` `(N, H_in, W_in, 3)` uint8 in RGB or BGR
order (N, H_in and W_in dynamic), and does, in the graph, what
``vprdistill.data.transforms.build_transform`` does in Python:

1. BGR → RGB (BGR graphs only) and NHWC → NCHW;
2. cast to float32; resize to the model's ``(H, W)`` (aspect ratio not kept, as
   ``v2.Resize((H, W))`` does) with bilinear interpolation, antialiased when
   shrinking (half-pixel centres, ``align_corners=False``);
3. scale to [0, 1] and normalise with the ImageNet mean and std;
4. the model, ``input_standardization`` included (it is part of ``PlaceModel``).

The Python path resizes the 8-bit PIL image with PIL's fixed-point filter and
rounds the result to integers; the graph resizes in float32 without rounding.
Both use the same triangle filter, so pixels differ by at most one grey level
(about 0.28 on average) and descriptors by a few 1e-4 (measured in
``docs/DEPLOYMENT.md``), which is why frame graphs are checked against a looser
default tolerance (``FRAME_ATOL``) than the float-in graph. The export's own
error is held to the float-in graph's ``EAGER_ATOL`` (1e-4) by comparing ONNX
Runtime with ``FrameGraph`` run by PyTorch on the same frames.

Antialiased resize is ``aten::_upsample_bilinear2d_aa``, which only the dynamo
exporter (ONNX ``Resize`` with ``antialias=1``, opset 18) can export.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, image_size_hw

CHANNEL_ORDERS = ("RGB", "BGR")
FRAME_INPUT_NAME = "frames"
# Default largest |ONNX Runtime - PyTorch path| of L2-normalised descriptors for frame graphs. The two resizes
# differ by up to one grey level, which moved the descriptors of the package's presets (random weights) by
# 1e-5 to 8.4e-4; 5e-3 leaves room for more sensitive (trained) models. The export itself is held to
# EAGER_ATOL against the same preprocessing run by PyTorch, where the resizes agree (differences ~1e-7).
FRAME_ATOL = 5e-3
EAGER_ATOL = 1e-4
# Batch sizes of the check's two frame shapes (see check_frame_graph).
CHECK_FRAME_BATCHES = (1, 3)


class FrameGraph(torch.nn.Module):
    """``(N, H_in, W_in, 3)`` uint8 frames → ``(N, D)`` L2-normalised descriptors of ``model``.

    Args:
        model: a place model taking ImageNet-normalised ``(N, 3, H, W)`` RGB float32 images.
        image_size: ``(H, W)`` (or one side) the frames are resized to inside the graph.
        channel_order: ``RGB``, or ``BGR`` (OpenCV's order), of the frames' last axis.
    """

    def __init__(self, model: torch.nn.Module, image_size: tuple[int, int] | int, channel_order: str = "RGB") -> None:
        super().__init__()
        self.model = model
        self.image_size = image_size_hw(image_size)
        self.channel_order = check_channel_order(channel_order)
        for name, values in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, H_in, W_in, 3)`` uint8 → ``(N, 3, H, W)`` float32, RGB, ImageNet-normalised."""
        x = frames.permute(0, 3, 1, 2)
        if self.channel_order == "BGR":
            x = x.flip(1)
        x = x.to(torch.float32)
        x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        # Same order of operations as v2.ToDtype(scale=True) then v2.Normalize.
        x = x / 255.0
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, H_in, W_in, 3)`` uint8 → ``(N, D)`` L2-normalised descriptors."""
        return self.model(self.preprocess(frames))


def check_channel_order(channel_order: str) -> str:
    """``"rgb"`` → ``"RGB"``; anything but RGB or BGR is refused."""
    order = str(channel_order).upper()
    if order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    return order


def synthetic_frames(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """``(N, H_in, W_in, 3)`` uint8 RGB frames with structure at several scales: smooth colour regions, edges, noise."""
    batch, height, width, _ = shape
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(batch):
        layout = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        blocks = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).resize((width, height), Image.NEAREST)
        picture = 0.6 * np.asarray(layout, np.float32) + 0.4 * np.asarray(blocks, np.float32)
        frames.append(np.clip(picture + rng.normal(0, 6, picture.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def reference_descriptors(model: torch.nn.Module, frames_rgb: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """The PyTorch path: each RGB frame as a PIL image through ``build_transform(image_size)``, then ``model``.

    Args:
        frames_rgb: ``(N, H_in, W_in, 3)`` uint8, RGB.

    Returns:
        ``(N, D)`` float32 L2-normalised descriptors.
    """
    transform = build_transform(image_size)
    images = torch.stack([transform(Image.fromarray(np.ascontiguousarray(frame))) for frame in frames_rgb])
    with torch.inference_mode():
        return model(images).float().numpy()


def as_channel_order(frames_rgb: np.ndarray, channel_order: str) -> np.ndarray:
    """RGB frames in the order a graph of ``channel_order`` takes (a contiguous copy for BGR)."""
    return np.ascontiguousarray(frames_rgb[..., ::-1]) if check_channel_order(channel_order) == "BGR" else frames_rgb


def check_frame_graph(graph: FrameGraph, session: Any, atol: float, out_path: Any, seed: int = 0) -> dict[str, Any]:
    """ONNX Runtime's descriptors of uint8 frames against the PyTorch path and against ``graph`` run eagerly.

    The frames are of two shapes, one larger and one smaller than ``(H, W)``, of odd,
    non-multiple sizes so that the resize factors are not integers and the aspect
    ratio changes, as with a real camera.

    Returns:
        The sidecar's record of the check: per frame shape ``"NxH_inxW_in"``,
        ``max_abs_diff`` and ``min_cosine`` against the PyTorch path (PIL resize +
        ``build_transform``), and ``max_abs_diff_eager`` against the same
        preprocessing run by PyTorch (the export's own error).

    Raises:
        OnnxMismatchError: above ``atol`` against the PyTorch path or above
            ``EAGER_ATOL`` against the eager graph (``out_path`` is then not written).
    """
    from vprdistill.deploy.export import OUTPUT_NAME, OnnxMismatchError

    height, width = image_size = graph.image_size
    larger = (2 * height + 7, (3 * width) // 2 + 5)
    smaller = (max(2, (2 * height) // 3 + 1), max(2, (3 * width) // 4 + 3))
    checks = {}
    for index, shape in enumerate([(CHECK_FRAME_BATCHES[0], *larger, 3), (CHECK_FRAME_BATCHES[1], *smaller, 3)]):
        frames = synthetic_frames(shape, seed=seed + index)
        expected = reference_descriptors(graph.model, frames, image_size)
        fed = as_channel_order(frames, graph.channel_order)
        (found,) = session.run([OUTPUT_NAME], {FRAME_INPUT_NAME: fed})
        if found.shape != expected.shape:
            raise OnnxMismatchError(f"ONNX output has shape {found.shape}, PyTorch {expected.shape} (frames {shape})")
        with torch.inference_mode():
            eager = graph(torch.from_numpy(fed)).float().numpy()
        cosine = np.sum(found * expected, axis=1) / (np.linalg.norm(found, axis=1) * np.linalg.norm(expected, axis=1))
        checks["x".join(str(s) for s in shape[:3])] = {
            "max_abs_diff": float(np.abs(found - expected).max()),
            "min_cosine": float(cosine.min()),
            "max_abs_diff_eager": float(np.abs(found - eager).max()),
        }
    worst = max(check["max_abs_diff"] for check in checks.values())
    worst_eager = max(check["max_abs_diff_eager"] for check in checks.values())
    if not (worst <= atol and worst_eager <= EAGER_ATOL):  # also catches NaN
        raise OnnxMismatchError(
            f"ONNX Runtime's descriptors of uint8 frames differ from the PyTorch path (PIL resize, "
            f"build_transform, model) by up to {worst:.3g} (atol {atol:g}) and from the graph run by "
            f"PyTorch by up to {worst_eager:.3g} (atol {EAGER_ATOL:g}), per frame shape {checks}; "
            f"{out_path} was not written"
        )
    return {
        "atol_eager": EAGER_ATOL,
        "check": {
            "reference": "build_transform(image_size) on the RGB frame as a PIL image, then the PyTorch model",
            "frames": "synthetic uint8 frames (smooth colour regions, edges, noise), "
            "one larger and one smaller than image_size",
        },
        **{
            key: {shape: check[key] for shape, check in checks.items()}
            for key in ("max_abs_diff", "min_cosine", "max_abs_diff_eager")
        },
    }


def frame_input_record(image_size: tuple[int, int], channel_order: str) -> dict[str, Any]:
    """The sidecar's description of the ``frames`` input: what a caller must feed and what the graph does with it."""
    height, width = image_size
    return {
        "name": FRAME_INPUT_NAME,
        "shape": ["batch", "height", "width", 3],
        "dtype": "uint8",
        "layout": "NHWC",
        "channel_order": check_channel_order(channel_order),
        "any_size": True,
        "preprocessing_in_graph": True,
        "resized_to": [height, width],
        "resize": {"mode": "bilinear", "antialias": True, "align_corners": False, "keeps_aspect_ratio": False},
        "scale": "x / 255",
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "description": (
            f"any N x H_in x W_in x 3 uint8 frames, {check_channel_order(channel_order)} order, are resized "
            f"inside the graph to {height}x{width} (stretched, not cropped), scaled to [0, 1] and normalised"
        ),
    }

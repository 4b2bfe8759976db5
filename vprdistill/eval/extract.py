"""Descriptors of a list of images (or segmentation maps) with a place model, and how long they took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vprdistill.data.structural import StructuralClassMap
from vprdistill.data.structural_store import class_map_for_model
from vprdistill.data.torch_datasets import ImagePathDataset, SegmentationPathDataset
from vprdistill.data.transforms import build_segmentation_transform, build_transform, image_size_hw
from vprdistill.models.inference import batch_descriptors, channels_last_during

INPUT_KINDS = ("rgb", "seg")


@dataclass
class DescriptorTiming:
    """How long descriptor extraction took.

    ``model_seconds`` covers the batches after the first (the first pays for
    memory allocation, cuDNN autotuning and thread start-up), each measured from
    the host-to-device copy to the descriptors back on the host, so it is the
    network's cost without image decoding. ``wall_seconds`` is everything,
    image loading included.
    """

    num_images: int
    timed_images: int
    model_seconds: float
    wall_seconds: float
    batch_size: int
    image_size: tuple[int, int]
    device: str
    threads: int
    warmup_excluded: bool

    @property
    def ms_per_image(self) -> float:
        """Network milliseconds per image (first batch excluded when there was more than one)."""
        return 1e3 * self.model_seconds / self.timed_images if self.timed_images else float("nan")

    def to_json(self) -> dict:
        record = asdict(self)
        record["image_size"] = list(self.image_size)
        record["ms_per_image"] = self.ms_per_image
        return record


def extract_descriptors(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    image_size: tuple[int, int] | int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    input_kind: str = "rgb",
    seg_class_map: StructuralClassMap | None = None,
    progress: bool = True,
    desc: str = "descriptors",
    structural_source: str = "cityscapes",
) -> tuple[np.ndarray, DescriptorTiming]:
    """Run ``model`` over image files: their descriptors ``(N, D)`` float32 and the time they took.

    The one way this package turns image files into descriptors (evaluation, indexing, training).

    Args:
        model: a place model, ``(B, C, H, W) -> (B, D)``; moved to ``device`` and run
            in eval mode, its training flag restored afterwards.
        paths: N image files (``input_kind="rgb"``) or segmentation maps (``"seg"``).
        image_size: ``(H, W)`` or a side length the inputs are resized to.
        batch_size, num_workers: of the data loader.
        device: where the network runs.
        input_kind: ``rgb`` photos (ImageNet-normalised) or ``seg`` class-id maps
            turned into one-hot structural classes (StructVPR seg-branch).
        seg_class_map: the source-id → structural-class mapping for ``seg``; by
            default the one stored with the model, else the package's mapping
            for ``structural_source`` (``data/structural_store.py``).
        progress: show a progress bar labelled ``desc``.

    Returns:
        ``(N, D)`` float32, row i for ``paths[i]``, and the :class:`DescriptorTiming`.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    size = image_size_hw(image_size)
    device = torch.device(device)
    channels = getattr(model, "input_channels", None)
    if input_kind == "rgb":
        if channels not in (None, 3):
            raise ValueError(
                f"model {getattr(model, 'name', '')!r} takes {channels}-channel segmentation input; "
                "use input_kind='seg' with segmentation-map paths"
            )
        dataset: Dataset = ImagePathDataset(paths, build_transform(size))
    else:
        if seg_class_map is None:
            # A seg-branch loaded from a checkpoint brings the class map it was trained with.
            seg_class_map = class_map_for_model(model, structural_source)
        if channels is not None and channels != seg_class_map.num_classes:
            raise ValueError(
                f"model {getattr(model, 'name', '')!r} takes {channels} input channels but the structural "
                f"class map '{seg_class_map.source}' has {seg_class_map.num_classes} classes"
            )
        dataset = SegmentationPathDataset(paths, build_segmentation_transform(size, class_map=seg_class_map))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    descriptors: np.ndarray | None = None
    if len(dataset) == 0:
        descriptors = np.zeros((0, int(getattr(model, "descriptor_dim", 0))), dtype=np.float32)
    was_training = model.training
    model.to(device).eval()
    # On the CPU, channels-last weights run several times faster at large batches
    # (vprdistill/models/inference.py); the model's layout is restored afterwards.
    layout = channels_last_during(model) if device.type == "cpu" else contextlib.nullcontext(model)
    batch_seconds: list[tuple[float, int]] = []
    start = time.perf_counter()
    try:
        with (
            layout as runner,
            torch.inference_mode(),
            tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress) as bar,
        ):
            for images, indices in loader:
                if device.type == "cuda":  # the clock starts when the device is idle
                    torch.cuda.synchronize(device)
                batch_start = time.perf_counter()
                output = batch_descriptors(runner, images, device)
                batch_seconds.append((time.perf_counter() - batch_start, len(indices)))
                if descriptors is None:
                    descriptors = np.empty((len(dataset), output.shape[1]), dtype=np.float32)
                descriptors[indices.numpy()] = output
                bar.update(len(indices))
    finally:
        model.train(was_training)
    wall = time.perf_counter() - start
    timed = batch_seconds[1:] if len(batch_seconds) > 1 else batch_seconds
    timing = DescriptorTiming(
        num_images=len(dataset),
        timed_images=sum(count for _, count in timed),
        model_seconds=sum(seconds for seconds, _ in timed),
        wall_seconds=wall,
        batch_size=batch_size,
        image_size=size,
        device=str(device),
        threads=torch.get_num_threads(),
        warmup_excluded=len(batch_seconds) > 1,
    )
    assert descriptors is not None
    return descriptors, timing


def compute_descriptors(
    model: torch.nn.Module, paths: Sequence[str | Path], image_size: tuple[int, int] | int, **options: Any
) -> np.ndarray:
    """The descriptors ``(N, D)`` float32 of :func:`extract_descriptors` (same options), without the timing."""
    return extract_descriptors(model, paths, image_size, **options)[0]

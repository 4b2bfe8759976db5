"""PyTorch datasets over lists of files, for descriptor extraction and training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vprdistill.data.images import load_image, load_segmentation


class _PathDataset(Dataset):
    """Item ``i`` is ``(transform(load(paths[i])), i)``; subclasses choose ``load``."""

    load: Callable[[Path], Any]

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(self.paths[index])), index


class ImagePathDataset(_PathDataset):
    """Item ``i`` is ``(transform(image i), i)``: a ``(3, H, W)`` tensor and its index."""

    load = staticmethod(load_image)


class SegmentationPathDataset(_PathDataset):
    """Item ``i`` is ``(transform(class-id map i), i)``: a one-hot ``(C, H, W)`` tensor and its index."""

    load = staticmethod(load_segmentation)

"""PyTorch datasets over lists of files, for descriptor extraction and training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vprdistill.data.images import load_image, load_segmentation


class ImagePathDataset(Dataset):
    """Item ``i`` is ``(transform(image i), i)``: a ``(3, H, W)`` tensor and its index."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[index])), index


class SegmentationPathDataset(Dataset):
    """Item ``i`` is ``(transform(class-id map i), i)``: a one-hot ``(C, H, W)`` tensor and its index."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_segmentation(self.paths[index])), index

"""The model's own local features (its CNN feature map) for ``patch`` re-ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from vprdistill.data.images import load_image
from vprdistill.data.transforms import build_transform


def local_feature_fn(
    model: torch.nn.Module,
    image_size: tuple[int, int] | int,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> Callable[[Sequence[str | Path]], list[np.ndarray]]:
    """A function image paths → list of ``(C, h, w)`` float32 feature maps from ``model.local_features``."""
    transform = build_transform(image_size)

    @torch.inference_mode()
    def feature_fn(paths: Sequence[str | Path]) -> list[np.ndarray]:
        was_training = model.training
        model.eval()
        maps: list[np.ndarray] = []
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([transform(load_image(p)) for p in paths[start : start + batch_size]]).to(device)
            maps.extend(model.local_features(batch).float().cpu().numpy())
        model.train(was_training)
        return maps

    return feature_fn

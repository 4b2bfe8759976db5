"""Which model and input size a deployment command uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vprdistill.data.transforms import image_size_hw
from vprdistill.eval.evaluate import default_image_size


def pick_image_size(
    requested: Sequence[int] | None, run_settings: dict[str, Any], model: torch.nn.Module
) -> tuple[int, int]:
    """``--image-size`` (one side or H W), else the training run's ``data.image_size``, else the model's default."""
    size = list(requested) if requested is not None else run_settings.get("image_size")
    if size is None:
        return default_image_size(model)
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2):
        raise ValueError(f"--image-size takes one side or H W, got {size}")
    return image_size_hw(size[0] if len(size) == 1 else (size[0], size[1]))

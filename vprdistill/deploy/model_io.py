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
    """``--image-size`` (one side or H W), else the size saved with the model, else 224 x 224.

    The training size travels in the checkpoint's model config (``image_size``). ``run_settings``
    (the ``data`` section of the run's ``config.yaml``) is read only for checkpoints saved
    without it.
    """
    size = list(requested) if requested is not None else (getattr(model, "config", None) or {}).get("image_size")
    if size is None:
        size = run_settings.get("image_size")
    if size is None:
        return default_image_size(model)
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2):
        raise ValueError(f"--image-size takes one side or H W, got {size}")
    return image_size_hw(size[0] if len(size) == 1 else (size[0], size[1]))

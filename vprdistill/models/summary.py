"""Size of a model: parameters per part, descriptor size and FLOPs at an image size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vprdistill.data.transforms import image_size_hw
from vprdistill.models.place_model import PlaceModel


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(model: PlaceModel, image_size: int | Sequence[int] = 224) -> dict[str, Any]:
    """Parameters per part (``model.parts()``), total, descriptor size and FLOPs for one image.

    FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per
    multiply-add, matrix products and convolutions only) on a forward of one
    ``(1, C_in, H, W)`` image in eval mode, on the model's device; a model on
    the ``meta`` device is measured without computing anything.

    Returns:
        a JSON-able dict: ``name``, ``architecture``, ``descriptor_dim``, ``input_channels``,
        ``image_size`` [H, W], ``parts`` (list of {name, parameters, flops}),
        ``total_parameters``, ``trainable_parameters``, ``flops``.
    """
    height, width = image_size_hw(image_size)
    # A parameter-free model (the thumbnail baseline) has buffers at most: take the device from those.
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        parameter = next(iter(model.buffers()), torch.zeros(()))
    qualified = {id(module): name for name, module in model.named_modules()}
    root = type(model).__name__
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(torch.zeros(1, model.input_channels, height, width, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
    flop_counts = counter.get_flop_counts()

    parts = []
    for part_name, module in model.parts().items():
        flops = int(sum(flop_counts.get(f"{root}.{qualified[id(module)]}", {}).values()))
        parts.append({"name": part_name, "parameters": count_parameters(module), "flops": flops})
    total = count_parameters(model)
    covered = sum(part["parameters"] for part in parts)
    if covered != total:
        parts.append({"name": "other", "parameters": total - covered, "flops": 0})
    return {
        "name": model.name,
        "architecture": model.config.get("architecture"),
        "descriptor_dim": model.descriptor_dim,
        "input_channels": model.input_channels,
        "image_size": [height, width],
        "parts": parts,
        "total_parameters": total,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": int(counter.get_total_flops()),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of :func:`summarize`'s result."""
    height, width = summary["image_size"]
    lines = [
        f"model        {summary['name']} (architecture {summary['architecture']})",
        f"descriptor   {summary['descriptor_dim']}-d, L2-normalised",
        f"input        {summary['input_channels']} channels, {height}x{width}",
        "",
        f"{'part':<14}{'parameters':>16}{'share':>8}{'GFLOPs':>10}",
    ]
    total = max(summary["total_parameters"], 1)
    for part in summary["parts"]:
        lines.append(
            f"{part['name']:<14}{part['parameters']:>16,}{100 * part['parameters'] / total:>7.1f}%{part['flops'] / 1e9:>10.3f}"
        )
    lines.append(f"{'total':<14}{summary['total_parameters']:>16,}{'':>8}{summary['flops'] / 1e9:>10.3f}")
    lines.append(f"{'(millions)':<14}{summary['total_parameters'] / 1e6:>16.2f}")
    return "\n".join(lines)

"""Averages that skip invalid negatives (mining can return fewer hard negatives than asked)."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``(B, N)`` values over the True entries of each row: ``(B,)``; 0 for a row with none."""
    if mask is None:
        return values.mean(dim=1) if values.shape[1] else values.sum(dim=1)
    # torch.where, not a product: a masked entry must not leak NaN or gradient.
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def mean_over_valid(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``(B, N)`` values over all True entries of the batch: a scalar; 0 when there are none."""
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() / mask.sum().clamp(min=1)

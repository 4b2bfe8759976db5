"""Aggregators take a CNN map ``(B, C, H, W)`` or a token sequence ``(B, N, C)``; both become tokens."""

from __future__ import annotations

import torch


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H·W, C)``; ``(B, N, C)`` is returned as is."""
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2)
    if x.ndim == 3:
        return x
    raise ValueError(f"aggregator input must be (B, C, H, W) or (B, N, C), got shape {tuple(x.shape)}")

"""Generalised-mean pooling (Radenović et al.), with a learnable exponent."""

from __future__ import annotations

import torch
import torch.nn as nn

from vprdistill.models.aggregators.tokens import as_tokens


class GeM(nn.Module):
    """GeM: ``(mean_n x_n^p)^(1/p)`` per channel; ``(B, C, H, W)`` or ``(B, N, C)`` → ``(B, C)``.

    Values are clamped at ``eps`` first, as GeM is meant for non-negative (post-ReLU) features.

    Args:
        in_channels: C.
        p: initial exponent (3: between average (1) and max (∞) pooling).
        eps: lower clamp that keeps ``x^p`` and its gradient finite.
        learn_p: whether p is trained.
    """

    def __init__(self, in_channels: int, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)), requires_grad=learn_p)
        self.eps = float(eps)
        self.output_dim = int(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = as_tokens(x)
        return tokens.clamp(min=self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, eps={self.eps}, learn_p={self.p.requires_grad}"

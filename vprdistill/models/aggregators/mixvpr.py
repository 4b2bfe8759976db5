"""MixVPR (Ali-bey et al., WACV 2023): feature mixing over the spatial positions of a CNN map.

Unlike GeM and NetVLAD, which pool the positions away, MixVPR keeps where each
feature sits: every channel's ``h·w`` responses go through MLP blocks that mix
the positions, then two linear projections reduce channels and positions, and
the result is flattened. Where places differ by the layout of similar textures
(repeated facades along a street), that layout is what tells them apart.

The map is first average-pooled to a fixed ``grid × grid`` so that the
aggregator takes any input size (MixVPR itself fixes ``h, w`` at construction).
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureMixer(nn.Module):
    """One mixer block on ``(B, C, N)``: ``x + MLP(LayerNorm(x))`` over the N positions."""

    def __init__(self, positions: int, ratio: float = 1.0) -> None:
        super().__init__()
        hidden = max(1, round(positions * ratio))
        self.mix = nn.Sequential(
            nn.LayerNorm(positions), nn.Linear(positions, hidden), nn.ReLU(), nn.Linear(hidden, positions)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """``(B, C, H, W)`` → ``(B, out_channels · out_rows)``.

    Args:
        in_channels: C of the feature map.
        grid: the map is average-pooled to ``grid × grid`` positions first.
        depth: number of mixer blocks.
        mlp_ratio: hidden width of a block's MLP, relative to the number of positions.
        out_channels: channels after the channel projection.
        out_rows: positions after the position projection.
    """

    def __init__(
        self,
        in_channels: int,
        grid: int = 4,
        depth: int = 4,
        mlp_ratio: float = 1.0,
        out_channels: int = 128,
        out_rows: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("grid", grid), ("depth", depth), ("out_channels", out_channels), ("out_rows", out_rows)):
            if int(value) < 1:
                raise ValueError(f"aggregator 'mixvpr': {name} must be >= 1, got {value}")
        self.grid = int(grid)
        positions = self.grid * self.grid
        self.mixers = nn.Sequential(*[FeatureMixer(positions, mlp_ratio) for _ in range(int(depth))])
        self.channel_proj = nn.Linear(in_channels, int(out_channels))
        self.row_proj = nn.Linear(positions, int(out_rows))
        self.output_dim = int(out_channels) * int(out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"aggregator 'mixvpr' takes a feature map (B, C, H, W), got shape {tuple(x.shape)}")
        x = nn.functional.adaptive_avg_pool2d(x, self.grid).flatten(2)  # (B, C, N)
        x = self.mixers(x)
        x = self.channel_proj(x.transpose(1, 2))  # (B, N, C')
        x = self.row_proj(x.transpose(1, 2))  # (B, C', R)
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, output_dim={self.output_dim}"

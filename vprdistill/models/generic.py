"""The generic architecture: backbone → aggregator (→ linear projection)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vprdistill.models.aggregators import build_aggregator
from vprdistill.models.parts import PartsNet, backbone_from_spec
from vprdistill.models.place_model import descriptor_projection


class BackboneAggregatorNet(PartsNet):
    """``(B, C_in, H, W)`` → ``backbone`` → ``aggregator`` ``(B, A)`` → optional projection → ``(B, D)``."""

    PARTS = ("backbone", "aggregator")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.aggregator(self.backbone(x)))


def build_generic_net(
    *,
    pretrained: bool,
    backbone: Mapping[str, Any],
    aggregator: Mapping[str, Any],
    input_channels: int = 3,
    descriptor_dim: int | None = None,
    projection: bool = False,
) -> BackboneAggregatorNet:
    """Config keys of the ``generic`` architecture.

    Args:
        backbone: backbone spec (``{"name": "resnet18", "truncate_after": "layer3", ...}``).
        aggregator: aggregator spec (``{"name": "gem", "p": 3.0}``).
        input_channels: image channels.
        descriptor_dim: D; ``None`` keeps the aggregator's size.
        projection: always add the final linear layer (CosPlace-style), even when sizes agree.
    """
    trunk = backbone_from_spec(backbone, input_channels, pretrained)
    pool = build_aggregator(aggregator, trunk.out_channels)
    linear, dim = descriptor_projection(pool.output_dim, descriptor_dim, projection)
    return BackboneAggregatorNet({"backbone": trunk, "aggregator": pool}, linear, dim)

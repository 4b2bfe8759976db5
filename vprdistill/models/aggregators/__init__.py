"""Aggregators: local features (a map ``(B, C, H, W)`` or tokens ``(B, N, C)``) → one vector ``(B, D)``.

Each is named in :data:`AGGREGATORS` and built from a config dict by
:func:`build_aggregator`; each exposes ``output_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from vprdistill.models.aggregators.gem import GeM
from vprdistill.models.aggregators.mixvpr import MixVPR
from vprdistill.models.aggregators.netvlad import NetVLAD
from vprdistill.models.aggregators.netvlad_loupe import ContextGating, NetVLADLoupe
from vprdistill.models.options import build_named

AGGREGATORS: dict[str, type[nn.Module]] = {
    "gem": GeM,
    "mixvpr": MixVPR,
    "netvlad": NetVLAD,
    "netvlad-loupe": NetVLADLoupe,
}


def build_aggregator(spec: Mapping[str, Any], in_channels: int) -> nn.Module:
    """Build ``AGGREGATORS[spec["name"]]`` for ``in_channels``-wide features with the spec's other keys.

    Example: ``build_aggregator({"name": "netvlad-loupe", "clusters": 16, "output_dim": 256}, 768)``.
    """
    return build_named(AGGREGATORS, spec, "aggregator", in_channels=in_channels)


__all__ = ["AGGREGATORS", "ContextGating", "GeM", "MixVPR", "NetVLAD", "NetVLADLoupe", "build_aggregator"]

"""Backbones from config specs: the one place that turns a spec dict into ``build_backbone`` arguments."""

from __future__ import annotations

from typing import Any, Mapping

from vprdistill.models.backbones import Backbone, build_backbone


def backbone_from_spec(spec: Mapping[str, Any], in_channels: int, pretrained: bool) -> Backbone:
    """Build a backbone from ``{"name", "truncate_after"?, "weights_path"?, "pretrained"?, **timm_kwargs}``.

    Weights are loaded only when the model is built with ``pretrained=True`` and
    the spec does not say ``"pretrained": false``; ``weights_path`` then names a
    local safetensors file to take them from instead of the timm cache.
    """
    options = dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone spec needs a 'name' (a timm model name or 'torchvision:<arch>'), got {dict(spec)}")
    wanted = pretrained and bool(options.pop("pretrained", True))
    return build_backbone(
        name,
        pretrained=wanted,
        truncate_after=options.pop("truncate_after", None),
        in_channels=in_channels,
        weights_path=options.pop("weights_path", None),
        **options,
    )

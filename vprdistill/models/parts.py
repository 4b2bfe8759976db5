"""Backbones from config specs: the one place that turns a spec dict into ``build_backbone`` arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vprdistill.models.backbones import INPUT_MEAN, INPUT_STD, Backbone, build_backbone


def backbone_from_spec(spec: Mapping[str, Any], in_channels: int, pretrained: bool) -> Backbone:
    """Build a backbone from ``{"name", "truncate_after"?, "weights_path"?, "pretrained"?, "mean"?, "std"?, ...}``.

    Weights are loaded only when the model is built with ``pretrained=True`` and
    the spec does not say ``"pretrained": false``; ``weights_path`` then names a
    local safetensors file to take them from instead of the timm cache.

    Input statistics (``mean``/``std``, see :func:`build_backbone`): by default
    those of the named weights. A spec with ``"pretrained": false`` never has
    weights, so it has no statistics of its own and by default takes the
    pipeline's input as it is. Both follow from the spec alone, never from the
    ``pretrained`` argument, so a model rebuilt from its config without weights
    (to load a checkpoint into) computes the same function.

    Other keys go to :func:`build_backbone` (``position_embedding``) or to the timm constructor.
    """
    options = dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone spec needs a 'name' (a timm model name or 'torchvision:<arch>'), got {dict(spec)}")
    spec_pretrained = options.pop("pretrained", True)
    if not isinstance(spec_pretrained, bool):
        raise ValueError(f"backbone {name}: 'pretrained' must be true or false, got {spec_pretrained!r}")  # noqa: TRY004 (config errors are ValueErrors)
    mean, std = options.pop("mean", None), options.pop("std", None)
    if not spec_pretrained and in_channels == 3:
        mean = INPUT_MEAN if mean is None else mean
        std = INPUT_STD if std is None else std
    return build_backbone(
        name,
        pretrained=pretrained and spec_pretrained,
        truncate_after=options.pop("truncate_after", None),
        in_channels=in_channels,
        weights_path=options.pop("weights_path", None),
        mean=mean,
        std=std,
        **options,
    )

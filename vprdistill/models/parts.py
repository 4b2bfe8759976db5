"""Backbones from config specs (the one place that turns a spec dict into ``build_backbone`` arguments) and the
base class of bodies made of named parts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

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


class PartsNet(nn.Module):
    """A descriptor body made of named parts and an optional final projection ``(B, A)`` → ``(B, D)``.

    Subclasses name their parts in forward order in ``PARTS`` (what :meth:`parts`
    lists, for per-part parameter counts) and the backbone whose feature map is
    the model's local features in ``LOCAL``. Parts are registered in the order
    they are given, which fixes the order of ``named_parameters`` (and so of an
    optimizer's saved state).
    """

    PARTS: tuple[str, ...] = ()
    LOCAL = "backbone"

    def __init__(self, parts: Mapping[str, nn.Module], projection: nn.Module | None, descriptor_dim: int) -> None:
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)
        self.projection = projection
        self.descriptor_dim = descriptor_dim

    def project(self, descriptor: torch.Tensor) -> torch.Tensor:
        """The projection of ``descriptor`` ``(B, A)``, or ``descriptor`` itself when there is none."""
        return self.projection(descriptor) if self.projection is not None else descriptor

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``LOCAL`` backbone's feature map: ``(B, C_in, H, W)`` → ``(B, C', h, w)``."""
        return getattr(self, self.LOCAL).feature_map(x)

    def parts(self) -> OrderedDict[str, nn.Module]:
        """``PARTS`` in forward order, then ``projection`` when there is one: every parameter, once."""
        parts = OrderedDict((name, getattr(self, name)) for name in self.PARTS)
        if self.projection is not None:
            parts["projection"] = self.projection
        return parts

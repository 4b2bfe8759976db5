"""``PlaceModel``: what every other package sees of a network — images in, unit-norm descriptors out."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_STANDARDIZATIONS = ("none", "per-image")
# Floor of the per-image channel deviation: a uniform (black, foggy) image is centred, not amplified without bound.
STANDARDIZATION_FLOOR = 1e-2


def standardize_per_image(x: torch.Tensor) -> torch.Tensor:
    """Centre each image's channels and scale them to unit deviation: ``(B, C, H, W)`` → same shape.

    The result does not change under a per-image, per-channel gain and offset
    (``a_c · x + b_c`` with ``a_c > 0``), which is how a global change of light colour
    and brightness (dusk, night, fog) moves a photo, and it is the same whatever fixed
    normalisation (ImageNet mean and std) the pipeline applied before.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    deviation = x.std(dim=(2, 3), keepdim=True).clamp_min(STANDARDIZATION_FLOOR)
    return (x - mean) / deviation


class PlaceModel(nn.Module):
    """A place-recognition network built from a config dict (see ``registry.build_model``).

    ``net`` is the architecture body (generic backbone + aggregator, TSCM teacher
    or student); it provides ``descriptor_dim``, an un-normalised ``forward``,
    ``local_features`` and ``parts``. ``PlaceModel`` adds the L2 normalisation,
    the input check and the config that rebuilds it.

    Attributes:
        descriptor_dim: D.
        config: the JSON-able resolved config (``build_model(config)`` rebuilds this architecture).
        input_channels: 3 for RGB, C for one-hot segmentation maps.
        input_standardization: ``none``, or ``per-image`` (:func:`standardize_per_image` before the
            body; config key ``input_standardization``, saved with the weights like every key).
    """

    def __init__(self, net: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.config = copy.deepcopy(config)
        self.descriptor_dim = int(net.descriptor_dim)
        self.input_channels = int(self.config.get("input_channels", 3))
        self.input_standardization = str(self.config.get("input_standardization", "none"))
        if self.input_standardization not in INPUT_STANDARDIZATIONS:
            raise ValueError(
                f"model {self.name}: input_standardization must be one of {', '.join(INPUT_STANDARDIZATIONS)}, "
                f"got {self.input_standardization!r}"
            )
        if self.input_standardization != "none" and self.input_channels != 3:
            raise ValueError(
                f"model {self.name}: input_standardization applies to RGB input (3 channels), "
                f"not {self.input_channels}-channel maps"
            )

    @property
    def name(self) -> str:
        """The preset or config name, for logs and tables."""
        return str(self.config.get("name") or self.config.get("architecture", "model"))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"model {self.name} takes images (B, {self.input_channels}, H, W), got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` → ``(B, D)`` L2-normalised descriptors."""
        self._check_input(x)
        return F.normalize(self.net(self._standardize(x)), p=2, dim=1)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN feature map ``(B, C', h, w)`` used for re-ranking (not normalised)."""
        self._check_input(x)
        return self.net.local_features(self._standardize(x))

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return standardize_per_image(x) if self.input_standardization == "per-image" else x

    def parts(self) -> OrderedDict[str, nn.Module]:
        """Named sub-modules in forward order, covering every parameter (for per-part counts)."""
        return OrderedDict(self.net.parts())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, descriptor_dim={self.descriptor_dim}, input_channels={self.input_channels}"


def descriptor_projection(natural_dim: int, descriptor_dim: int | None, force: bool) -> tuple[nn.Module | None, int]:
    """The optional final linear layer ``natural_dim → descriptor_dim``.

    A projection is added when ``force`` is set or when ``descriptor_dim`` differs
    from the architecture's natural size; ``descriptor_dim=None`` keeps the natural size.

    Returns:
        (the ``nn.Linear`` or ``None``, the resulting descriptor size).
    """
    if descriptor_dim is None:
        descriptor_dim = natural_dim
    if int(descriptor_dim) <= 0:
        raise ValueError(f"descriptor_dim must be positive, got {descriptor_dim}")
    if force or int(descriptor_dim) != natural_dim:
        return nn.Linear(natural_dim, int(descriptor_dim)), int(descriptor_dim)
    return None, natural_dim

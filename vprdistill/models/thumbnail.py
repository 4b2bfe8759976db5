"""The thumbnail baseline: an image shrunk to S×S, centred, as its own descriptor. No parameters.

It is the floor a trained place model has to clear: on a database and queries
taken along the same streets, a tiny colour picture of each view already
finds a good share of the places by day. ``thumbnail-16`` is the preset
(``architecture: thumbnail``, ``size: 16``).

Per image, ``(C, H, W)`` as the pipeline feeds it (ImageNet-normalised for
photos, one-hot maps for segmentation input):

1. shrink to ``S×S``: ``area`` averages the input pixels that fall into each
   output cell (a box filter, exact for integer factors); ``bilinear`` is
   bilinear resampling with an antialiasing filter;
2. centre: ``channel`` subtracts the image's own mean of each channel (removes
   the overall brightness and colour cast, which change most with time of day
   and weather), ``image`` subtracts one mean over all ``C·S·S`` values,
   ``none`` keeps the values;
3. flatten to ``C·S·S`` and subtract the ``mean`` buffer (zeros unless
   :meth:`ThumbnailNet.fit_mean` set it, e.g. to the database's mean thumbnail);
4. ``PlaceModel`` L2-normalises, so search by inner product is cosine similarity.

Why ``channel`` is the default: it removes the colour of the light, and it
matches the figure this baseline is known by on SynthCity ``small`` (R@1
21.5 for 16×16 mean-centred colour thumbnails). On that test split (480
queries, 840 database images, 25 m, 64 px input, area) centring per channel
gives R@1 22.7 [95 % CI 19.0, 26.5]; one mean per image gives 25.4 (+2.7
[+0.4, +5.0] points over the same queries, McNemar p = 0.03: a slightly
stronger floor, ``centre: image``); no centring 14.2; subtracting the
database's mean thumbnail (:meth:`ThumbnailNet.fit_mean`) 11.9, since that
mean removes what the database images share (daylight) and so stresses what
a night or fog query lacks. ``bilinear`` gives 22.3, no different from
``area`` (RESULTS.md, "Baselines on SynthCity small").
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

INTERPOLATIONS = ("area", "bilinear")
CENTRINGS = ("channel", "image", "none")


class ThumbnailNet(nn.Module):
    """``(B, C, H, W)`` → ``(B, C·S·S)``: the centred S×S thumbnail, flattened (not yet L2-normalised).

    Attributes:
        size: S.
        interpolation: ``area`` or ``bilinear`` (antialiased).
        centre: ``channel``, ``image`` or ``none`` (see the module docstring).
        mean: buffer ``(C·S·S,)`` subtracted from every flattened thumbnail; zeros by default.
        descriptor_dim: ``C·S·S``.
    """

    def __init__(self, size: int = 16, interpolation: str = "area", centre: str = "channel", input_channels: int = 3):
        super().__init__()
        for name, value in (("size", size), ("input_channels", input_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"thumbnail: {name} must be a positive integer, got {value!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"thumbnail: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
            )
        if centre not in CENTRINGS:
            raise ValueError(f"thumbnail: centre must be one of {', '.join(CENTRINGS)}, got {centre!r}")
        self.size = size
        self.interpolation = interpolation
        self.centre = centre
        self.input_channels = input_channels
        self.descriptor_dim = input_channels * size * size
        # A buffer, not a parameter: saved with the model (and in its fingerprint), never trained.
        self.register_buffer("mean", torch.zeros(self.descriptor_dim))

    def thumbnails(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, S, S)``: shrunk and centred per image (the ``mean`` buffer not applied)."""
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise ValueError(f"thumbnail takes images (B, {self.input_channels}, H, W), got shape {tuple(x.shape)}")
        x = x.float()
        if self.interpolation == "area":
            small = F.interpolate(x, size=(self.size, self.size), mode="area")
        else:
            small = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if self.centre == "channel":
            small = small - small.mean(dim=(2, 3), keepdim=True)
        elif self.centre == "image":
            small = small - small.mean(dim=(1, 2, 3), keepdim=True)
        return small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C·S·S)``, channel-major (all of channel 0's S·S values first)."""
        return self.thumbnails(x).flatten(1) - self.mean

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The centred thumbnail ``(B, C, S, S)``: an S×S map of C-dimensional cells."""
        return self.thumbnails(x)

    @torch.no_grad()
    def fit_mean(self, images: torch.Tensor) -> torch.Tensor:
        """Set ``mean`` to the mean flattened thumbnail of ``images`` ``(N, C, H, W)``; returns it ``(C·S·S,)``.

        Typically the database images of the split being searched, so that what
        they all share does not count towards similarity.
        """
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"fit_mean takes a non-empty batch (N, C, H, W), got shape {tuple(images.shape)}")
        mean = self.thumbnails(images.to(self.mean.device)).flatten(1).mean(dim=0)
        self.mean.copy_(mean)
        return self.mean.clone()

    def parts(self) -> OrderedDict[str, nn.Module]:
        """No trainable part: the thumbnail has no parameters."""
        return OrderedDict()

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation!r}, centre={self.centre!r}"


def build_thumbnail_net(
    *,
    pretrained: bool,
    size: int = 16,
    interpolation: str = "area",
    centre: str = "channel",
    input_channels: int = 3,
    descriptor_dim: int | None = None,
) -> ThumbnailNet:
    """Config keys of the ``thumbnail`` architecture.

    Args:
        pretrained: ignored: there are no weights to load.
        size: S, the side of the thumbnail.
        interpolation: ``area`` (box average) or ``bilinear`` (antialiased).
        centre: ``channel`` (each image's per-channel mean), ``image`` (each image's mean) or ``none``.
        input_channels: C: 3 for photos, the class count for one-hot segmentation maps.
        descriptor_dim: must be ``C·S·S`` when given (a saved config records it); there is no projection.
    """
    del pretrained
    net = ThumbnailNet(size=size, interpolation=interpolation, centre=centre, input_channels=input_channels)
    if descriptor_dim is not None and int(descriptor_dim) != net.descriptor_dim:
        raise ValueError(
            f"thumbnail: descriptor_dim is C·S·S = {input_channels}·{size}·{size} = {net.descriptor_dim}, "
            f"got {descriptor_dim} (the thumbnail has no projection)"
        )
    return net

"""NetVLAD in the LOUPE form (Miech et al.), as used by PointNetVLAD and the TSCM/STUN code.

Differences from classic NetVLAD: the soft assignment is a linear map followed
by BatchNorm (or a learned bias), the residuals are taken to a second set of
learned weights (``cluster_weights2``) instead of the assignment's centroids,
and the intra-normalised, L2-normalised VLAD vector is projected to
``output_dim`` (optionally + BatchNorm) and passed through context gating.

The local features the head clusters need not be the tokens it is given: with
``token_split`` or ``subvector_dim`` each image's token values, read token by
token (channels fastest), are re-cut into consecutive vectors of a fixed width
before clustering. ``token_split=2`` turns N tokens of C channels into 2·N
vectors of C/2 (token i gives vectors 2i and 2i+1, its two halves), which is
what the official TSCM heads see after their ``transpose(1, 3).view(...)``;
``subvector_dim=196`` on 196 patch tokens of 768 gives 768 vectors of 196
values that straddle token boundaries, the official TSCM student's head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vprdistill.models.aggregators.tokens import as_tokens


class ContextGating(nn.Module):
    """Context gating ``x · σ(BN(x W))`` (``σ(x W + b)`` without BatchNorm): ``(B, D)`` → ``(B, D)``.

    A learned re-weighting of the descriptor's dimensions by each other.
    """

    def __init__(self, dim: int, add_batch_norm: bool = True) -> None:
        super().__init__()
        self.gating_weights = nn.Parameter(torch.randn(dim, dim) / math.sqrt(dim))
        if add_batch_norm:
            self.gating_biases = None
            self.bn = nn.BatchNorm1d(dim)
        else:
            self.gating_biases = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
            self.bn = None

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The multiplicative gates ``(B, D)`` in (0, 1)."""
        logits = x @ self.gating_weights
        logits = self.bn(logits) if self.bn is not None else logits + self.gating_biases
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)


class NetVLADLoupe(nn.Module):
    """NetVLAD-Loupe: ``(B, N, C)`` tokens or a ``(B, C, H, W)`` map → ``(B, output_dim)``.

    Any number of tokens N works (the original fixes it as ``max_samples``), as
    long as each image's N·C values cut evenly into local features of
    ``feature_dim`` (always true without re-cutting). With BatchNorm on, training
    needs batches of more than one image.

    Args:
        in_channels: C, the token width.
        clusters: K.
        output_dim: size of the projected descriptor.
        gating: apply context gating after the projection.
        add_batch_norm: BatchNorm on the assignment logits and in the gating (else learned biases).
        output_batch_norm: BatchNorm after the projection. The original code builds this
            layer even with ``add_batch_norm=False`` but never applies it; ``False`` here
            leaves it out altogether, so with both flags off the head has no BatchNorm.
        token_split: cut every token into this many consecutive sub-vectors of C / token_split.
        subvector_dim: re-cut each image's N·C token values (token-major) into vectors of
            this width; the general form of ``token_split`` (which is ``subvector_dim = C / s``).

    Attributes:
        feature_dim: the width of the vectors that are clustered (C, or the sub-vector width).
    """

    def __init__(
        self,
        in_channels: int,
        clusters: int = 64,
        output_dim: int = 256,
        gating: bool = True,
        add_batch_norm: bool = True,
        output_batch_norm: bool = True,
        token_split: int = 1,
        subvector_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.clusters = int(clusters)
        self.output_dim = int(output_dim)
        self.feature_dim = _feature_dim(self.in_channels, int(token_split), subvector_dim)
        dim = self.feature_dim
        # Initial scales as in the original: every weight ~ N(0, 1/feature width).
        scale = 1.0 / math.sqrt(dim)
        self.cluster_weights = nn.Parameter(torch.randn(dim, clusters) * scale)
        self.cluster_weights2 = nn.Parameter(torch.randn(1, dim, clusters) * scale)
        self.hidden1_weights = nn.Parameter(torch.randn(clusters * dim, output_dim) * scale)
        if add_batch_norm:
            self.cluster_biases = None
            self.bn1 = nn.BatchNorm1d(clusters)
        else:
            self.cluster_biases = nn.Parameter(torch.randn(clusters) * scale)
            self.bn1 = None
        self.bn2 = nn.BatchNorm1d(output_dim) if output_batch_norm else None
        self.context_gating = ContextGating(output_dim, add_batch_norm) if gating else None

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors that are clustered: ``(B, N, C)`` or ``(B, C, H, W)`` → ``(B, M, feature_dim)``.

        ``M = N·C / feature_dim``; vector m holds values ``m·F … (m+1)·F − 1`` of the
        image's tokens laid end to end (``F = feature_dim``).
        """
        tokens = as_tokens(x)
        if self.feature_dim == tokens.shape[-1]:
            return tokens
        batch, count, width = tokens.shape
        if width != self.in_channels or (count * width) % self.feature_dim:
            raise ValueError(
                f"NetVLAD-Loupe: {count} tokens of {width} channels do not cut into vectors of "
                f"{self.feature_dim} (built for tokens of {self.in_channels}); the image size changes N"
            )
        return tokens.reshape(batch, count * width // self.feature_dim, self.feature_dim)

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised VLAD vector before projection: ``(B, F·K)``, unit L2 norm (F = ``feature_dim``)."""
        features = self.local_features(x)
        batch, count, _ = features.shape
        logits = features @ self.cluster_weights
        if self.bn1 is not None:
            logits = self.bn1(logits.reshape(-1, self.clusters)).reshape(batch, count, self.clusters)
        else:
            logits = logits + self.cluster_biases
        assign = F.softmax(logits, dim=-1)
        anchors = assign.sum(dim=1, keepdim=True) * self.cluster_weights2  # (B, F, K)
        vlad = (assign.transpose(1, 2) @ features).transpose(1, 2) - anchors  # (B, F, K)
        vlad = F.normalize(vlad, dim=1)
        return F.normalize(vlad.reshape(batch, -1), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vlad(x) @ self.hidden1_weights
        if self.bn2 is not None:
            out = self.bn2(out)
        return self.context_gating(out) if self.context_gating is not None else out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, feature_dim={self.feature_dim}, clusters={self.clusters}, "
            f"output_dim={self.output_dim}"
        )


def _feature_dim(in_channels: int, token_split: int, subvector_dim: int | None) -> int:
    """The clustered vectors' width from the re-cutting options; errors name the option."""
    if token_split < 1:
        raise ValueError(f"NetVLAD-Loupe: token_split must be a positive integer, got {token_split}")
    if subvector_dim is not None:
        if token_split != 1:
            raise ValueError("NetVLAD-Loupe: give token_split or subvector_dim, not both")
        if int(subvector_dim) < 1:
            raise ValueError(f"NetVLAD-Loupe: subvector_dim must be a positive integer, got {subvector_dim}")
        return int(subvector_dim)
    if in_channels % token_split:
        raise ValueError(f"NetVLAD-Loupe: token_split {token_split} does not divide the token width {in_channels}")
    return in_channels // token_split

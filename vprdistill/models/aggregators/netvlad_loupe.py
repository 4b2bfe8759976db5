"""NetVLAD in the LOUPE form (Miech et al.), as used by PointNetVLAD and the TSCM/STUN code.

Differences from classic NetVLAD: the soft assignment is a linear map followed
by BatchNorm, the residuals are taken to a second set of learned weights
(``cluster_weights2``) instead of the assignment's centroids, and the
intra-normalised, L2-normalised VLAD vector is projected to ``output_dim``
(+ BatchNorm) and passed through context gating.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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

    Any number of tokens N works (the original fixes it as ``max_samples``).
    BatchNorm makes training need batches of more than one image.

    Args:
        in_channels: C, the token width.
        clusters: K.
        output_dim: size of the projected descriptor.
        gating: apply context gating after the projection.
        add_batch_norm: BatchNorm on the assignment logits and in the gating (else learned biases).
    """

    def __init__(
        self,
        in_channels: int,
        clusters: int = 64,
        output_dim: int = 256,
        gating: bool = True,
        add_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.clusters = int(clusters)
        self.output_dim = int(output_dim)
        scale = 1.0 / math.sqrt(in_channels)
        self.cluster_weights = nn.Parameter(torch.randn(in_channels, clusters) * scale)
        self.cluster_weights2 = nn.Parameter(torch.randn(1, in_channels, clusters) * scale)
        self.hidden1_weights = nn.Parameter(torch.randn(clusters * in_channels, output_dim) * scale)
        if add_batch_norm:
            self.cluster_biases = None
            self.bn1 = nn.BatchNorm1d(clusters)
        else:
            self.cluster_biases = nn.Parameter(torch.randn(clusters) * scale)
            self.bn1 = None
        self.bn2 = nn.BatchNorm1d(output_dim)
        self.context_gating = ContextGating(output_dim, add_batch_norm) if gating else None

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised VLAD vector before projection: ``(B, C·K)``, unit L2 norm."""
        tokens = as_tokens(x)
        batch, count, _ = tokens.shape
        logits = tokens @ self.cluster_weights
        if self.bn1 is not None:
            logits = self.bn1(logits.reshape(-1, self.clusters)).reshape(batch, count, self.clusters)
        else:
            logits = logits + self.cluster_biases
        assign = F.softmax(logits, dim=-1)
        anchors = assign.sum(dim=1, keepdim=True) * self.cluster_weights2  # (B, C, K)
        vlad = (assign.transpose(1, 2) @ tokens).transpose(1, 2) - anchors  # (B, C, K)
        vlad = F.normalize(vlad, dim=1)
        return F.normalize(vlad.reshape(batch, -1), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.vlad(x) @ self.hidden1_weights)
        return self.context_gating(out) if self.context_gating is not None else out

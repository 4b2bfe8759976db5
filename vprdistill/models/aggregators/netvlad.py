"""NetVLAD (Arandjelović et al., CVPR 2016): soft-assigned residuals to K learned centroids."""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vprdistill.models.aggregators.tokens import as_tokens


class NetVLAD(nn.Module):
    """Classic NetVLAD: ``(B, C, H, W)`` or ``(B, N, C)`` → ``(B, K·C)``, intra-normalised then L2-normalised.

    The soft assignment is the paper's 1×1 convolution (no bias), applied to each
    token as a linear map C → K. The centroids start random: to start from
    k-means centroids, as the paper does, call :meth:`init_from_features` yourself
    with local features of training images; training does not call it.

    Args:
        in_channels: C.
        clusters: K.
        normalize_input: L2-normalise each local feature first (the paper's default).
    """

    def __init__(self, in_channels: int, clusters: int = 64, normalize_input: bool = True) -> None:
        super().__init__()
        self.clusters = int(clusters)
        self.in_channels = int(in_channels)
        self.normalize_input = bool(normalize_input)
        self.assignment = nn.Linear(in_channels, clusters, bias=False)
        self.centroids = nn.Parameter(torch.rand(clusters, in_channels))
        self.output_dim = self.clusters * self.in_channels

    def _local_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = as_tokens(x)
        return F.normalize(tokens, dim=2) if self.normalize_input else tokens

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """Assignment of each local feature to each cluster: ``(B, N, K)``, rows summing to 1."""
        return F.softmax(self.assignment(self._local_features(x)), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._local_features(x)
        assign = F.softmax(self.assignment(tokens), dim=2)
        # Σ_n a_nk (x_n − c_k) = Σ_n a_nk x_n − (Σ_n a_nk) c_k, without a (B, N, K, C) tensor.
        vlad = assign.transpose(1, 2) @ tokens - assign.sum(dim=1).unsqueeze(2) * self.centroids
        vlad = F.normalize(vlad, dim=2)
        return F.normalize(vlad.flatten(1), dim=1)

    @torch.no_grad()
    def init_from_features(self, features: np.ndarray, seed: int = 0, iterations: int = 100, restarts: int = 1) -> None:
        """Set centroids by k-means (faiss) on local features and the assignment as in NetVLAD.

        The assignment weights are ``α · c_k / ||c_k||`` with α chosen so that, on
        these features, the best cluster's dot product leads the second best by a
        softmax ratio of 100 on average (``α = −log 0.01 / mean(d1 − d2)``).

        Args:
            features: ``(N, C)`` local features, N ≥ K (ideally tens of thousands).
            seed, iterations: of the k-means.
            restarts: k-means runs; the one with the lowest objective is kept.
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f"NetVLAD init: features must be (N, {self.in_channels}), got {features.shape}")
        if features.shape[0] < self.clusters:
            raise ValueError(
                f"NetVLAD init: need at least {self.clusters} features for {self.clusters} clusters, "
                f"got {features.shape[0]}"
            )
        if self.normalize_input:
            features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        kmeans = faiss.Kmeans(
            self.in_channels, self.clusters, niter=iterations, nredo=restarts, seed=seed, verbose=False
        )
        kmeans.train(features)
        centroids = kmeans.centroids.astype(np.float32)
        directions = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        dots = np.sort(directions @ features.T, axis=0)[::-1]
        gap = float(np.mean(dots[0] - dots[1]))
        alpha = -math.log(0.01) / max(gap, 1e-6)
        self.centroids.copy_(torch.from_numpy(centroids))
        self.assignment.weight.copy_(torch.from_numpy(alpha * directions))

"""Triplet margin loss over mined tuples (METHODS §3), averaged over valid (query, negative) pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vprdistill.losses.masking import mean_over_valid

REDUCTIONS = ("mean", "sum", "none")


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    margin: float = 0.1,
    negative_mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``max(d(a, p) − d(a, n) + margin, 0)`` for every (query, negative) pair, with Euclidean ``d``.

    The same value as ``nn.TripletMarginLoss(margin, p=2)`` applied to each pair, which is
    what NetVLAD-style training (and the TSCM code) uses.

    Args:
        anchor: ``(B, D)`` query descriptors.
        positive: ``(B, D)`` positive descriptors.
        negatives: ``(B, Nn, D)`` negative descriptors.
        margin: the margin, in descriptor-distance units.
        negative_mask: ``(B, Nn)`` bool, True for valid negatives; None means all are valid.
        reduction: ``"mean"`` over valid pairs of the batch (0 when there are none), ``"sum"``
            over valid pairs, or ``"none"`` for the ``(B, Nn)`` per-pair losses with invalid pairs at 0.

    Returns:
        A scalar, or ``(B, Nn)`` for ``reduction="none"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"triplet_margin_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if negatives.dim() != 3 or anchor.dim() != 2 or negatives.shape[0] != anchor.shape[0]:
        raise ValueError(
            "triplet_margin_loss: expected anchor (B, D), positive (B, D), negatives (B, Nn, D); got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negatives.shape)}"
        )
    batch, num_negatives, dim = negatives.shape
    per_pair = F.triplet_margin_loss(
        anchor.unsqueeze(1).expand(batch, num_negatives, dim).reshape(-1, dim),
        positive.unsqueeze(1).expand(batch, num_negatives, dim).reshape(-1, dim),
        negatives.reshape(-1, dim),
        margin=margin,
        p=2,
        reduction="none",
    ).view(batch, num_negatives)
    if reduction == "mean":
        return mean_over_valid(per_pair, negative_mask)
    if negative_mask is not None:
        # torch.where, not a product: a masked pair must not leak NaN or gradient.
        per_pair = torch.where(negative_mask, per_pair, torch.zeros_like(per_pair))
    return per_pair if reduction == "none" else per_pair.sum()

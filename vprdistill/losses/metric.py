"""Losses on place-labelled batches (P places × K views): multi-similarity loss and miner.

Place-batched training (as MixVPR, SALAD and BoQ train on GSV-Cities) sees
labels, not mined tuples: every pair of views of one place is a positive pair,
every pair across places a negative one. The loss and the pair miner are
``pytorch-metric-learning``'s; this module gives them the package's call
convention (a :class:`LossOutput` with logged terms).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import Tensor

from vprdistill.losses.types import LossOutput


def _check_labelled(descriptors: Tensor, labels: Tensor, who: str) -> None:
    if descriptors.dim() != 2 or labels.shape != descriptors.shape[:1]:
        raise ValueError(
            f"{who}: expected descriptors (B, D) and labels (B,), got {tuple(descriptors.shape)} and {tuple(labels.shape)}"
        )


class MultiSimilarityLoss:
    """Multi-similarity loss (Wang et al., CVPR 2019) on the pairs its miner keeps.

    The defaults are the values MixVPR, SALAD and BoQ train with on GSV-Cities.

    Args:
        alpha: weight of positive pairs (scale of the positive log-sum-exp).
        beta: weight of negative pairs.
        base: the similarity threshold λ both terms are centred on.
        epsilon: the miner keeps a negative pair whose similarity exceeds the hardest
            positive's minus ``epsilon``, and a positive pair whose similarity is below the
            hardest negative's plus ``epsilon``; None trains on every pair (no miner).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 50.0,
        base: float = 0.0,
        epsilon: float | None = 0.1,
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not value > 0:
                raise ValueError(f"multi_similarity: {name} must be > 0, got {value}")
        if epsilon is not None and epsilon < 0:
            raise ValueError(f"multi_similarity: epsilon must be >= 0 or null, got {epsilon}")
        self.alpha, self.beta, self.base, self.epsilon = float(alpha), float(beta), float(base), epsilon
        self.loss = pml_losses.MultiSimilarityLoss(alpha=self.alpha, beta=self.beta, base=self.base)
        self.miner = None if epsilon is None else pml_miners.MultiSimilarityMiner(epsilon=float(epsilon))

    def __call__(self, descriptors: Tensor, labels: Tensor) -> LossOutput:
        """Loss of ``descriptors`` ``(B, D)`` (unit-norm) with place ``labels`` ``(B,)``.

        Terms: ``ms`` (the loss) and ``mined_pairs`` (share of the batch's positive and
        negative pairs the miner kept: near 1 means nothing is learnt yet, near 0 that
        the batch is nearly separated).
        """
        _check_labelled(descriptors, labels, "multi_similarity")
        labels = labels.to(descriptors.device)
        if self.miner is None:
            total = self.loss(descriptors, labels)
            return LossOutput.from_tensors(total, {"ms": total, "mined_pairs": 1.0})
        pairs = self.miner(descriptors, labels)
        total = self.loss(descriptors, labels, pairs)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        all_pairs = int(same.sum() - labels.numel()) + int((~same).sum())
        kept = sum(int(p.numel()) for p in (pairs[0], pairs[2]))
        return LossOutput.from_tensors(total, {"ms": total, "mined_pairs": kept / max(all_pairs, 1)})


def in_batch_tuples(descriptors: Tensor, labels: Tensor, num_negatives: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tuples for the tuple losses (distillation) from a place-labelled batch.

    Every image is an anchor; its positive is the least similar other view of its place
    (the hardest positive), its negatives the ``num_negatives`` most similar images of
    other places (the hardest negatives), judged by ``descriptors``.

    Args:
        descriptors: ``(B, D)`` unit-norm descriptors (only compared; no gradient is taken).
        labels: ``(B,)`` place labels; each place must have at least two views in the batch.
        num_negatives: Nn, at most the number of images of other places.

    Returns:
        ``anchor`` (A,), ``positive`` (A,), ``negatives`` (A, Nn) indices into the batch, and
        the ``(A, Nn)`` bool mask of valid negatives (False where an anchor has fewer).
    """
    _check_labelled(descriptors, labels, "in_batch_tuples")
    if num_negatives < 1:
        raise ValueError(f"in_batch_tuples: num_negatives must be >= 1, got {num_negatives}")
    labels = labels.to(descriptors.device)
    with torch.no_grad():
        similarity = descriptors.detach() @ descriptors.detach().T
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive_candidates = same & ~eye
        if not bool(positive_candidates.any(dim=1).all()):
            lonely = labels[~positive_candidates.any(dim=1)].unique().tolist()
            raise ValueError(
                f"in_batch_tuples: place(s) {lonely} have a single view in the batch; a positive needs two"
            )
        positive = similarity.masked_fill(~positive_candidates, float("inf")).argmin(dim=1)
        other = ~same
        count = min(int(num_negatives), int(other.sum(dim=1).max()))
        scores = similarity.masked_fill(~other, float("-inf"))
        top = scores.topk(count, dim=1)
        mask = torch.isfinite(top.values)
    anchor = torch.arange(len(labels), device=labels.device)
    return anchor, positive, top.indices, mask

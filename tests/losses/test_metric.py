"""Multi-similarity loss on place batches and in-batch tuples, against formulas written out here."""

import math

import pytest
import torch
import torch.nn.functional as F

from vprdistill.losses.metric import MultiSimilarityLoss, in_batch_tuples


def _ms_by_hand(descriptors: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float, base: float) -> float:
    """Wang et al. (2019), eq. 4, every pair kept, mean over anchors: written with Python loops."""
    x = F.normalize(descriptors, dim=1)
    total = 0.0
    for i in range(len(labels)):
        pos = [float(x[i] @ x[j]) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [float(x[i] @ x[j]) for j in range(len(labels)) if labels[j] != labels[i]]
        total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - base)) for s in neg)) / beta
    return total / len(labels)


def test_multi_similarity_without_miner_matches_the_paper_formula():
    torch.manual_seed(0)
    descriptors = torch.randn(12, 8)
    labels = torch.arange(4).repeat_interleave(3)
    loss = MultiSimilarityLoss(alpha=2.0, beta=10.0, base=0.3, epsilon=None)
    output = loss(F.normalize(descriptors, dim=1), labels)
    assert output.total.item() == pytest.approx(_ms_by_hand(descriptors, labels, 2.0, 10.0, 0.3), rel=1e-5)
    assert output.terms["mined_pairs"] == 1.0


def test_the_miner_keeps_only_hard_pairs_and_a_separated_batch_costs_little():
    labels = torch.arange(4).repeat_interleave(2)
    separated = F.one_hot(labels, 8).float()  # views of a place identical, places orthogonal
    loss = MultiSimilarityLoss()
    output = loss(separated, labels)
    assert output.terms["mined_pairs"] == 0.0
    assert output.total.item() == pytest.approx(0.0, abs=1e-6)
    mixed = F.normalize(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    assert loss(mixed, labels).total.item() > 0.01


def test_multi_similarity_gradient_pulls_views_of_a_place_together():
    torch.manual_seed(0)
    raw = torch.randn(8, 16, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(2)
    optimiser = torch.optim.SGD([raw], lr=2.0)
    loss = MultiSimilarityLoss(epsilon=None)

    def gap() -> float:
        x = F.normalize(raw.detach(), dim=1)
        similarity = x @ x.T
        same = (labels[:, None] == labels[None, :]) & ~torch.eye(8, dtype=torch.bool)
        return float(similarity[same].mean() - similarity[labels[:, None] != labels[None, :]].mean())

    before = gap()
    for _ in range(60):
        optimiser.zero_grad()
        loss(F.normalize(raw, dim=1), labels).total.backward()
        optimiser.step()
    assert gap() > before + 0.3


def test_in_batch_tuples_pick_the_hardest_positive_and_negatives():
    torch.manual_seed(2)
    x = F.normalize(torch.randn(9, 6), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    anchor, positive, negatives, mask = in_batch_tuples(x, labels, num_negatives=4)
    similarity = x @ x.T
    assert torch.equal(anchor, torch.arange(9))
    assert mask.all() and negatives.shape == (9, 4)
    for i in range(9):
        same = [j for j in range(9) if labels[j] == labels[i] and j != i]
        assert int(positive[i]) == min(same, key=lambda j: float(similarity[i, j]))
        others = sorted((j for j in range(9) if labels[j] != labels[i]), key=lambda j: -float(similarity[i, j]))
        assert negatives[i].tolist() == others[:4]


def test_in_batch_tuples_refuse_a_place_with_one_view():
    with pytest.raises(ValueError, match="single view"):
        in_batch_tuples(torch.eye(3), torch.tensor([0, 0, 1]), num_negatives=1)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="beta"):
        MultiSimilarityLoss(beta=0)
    with pytest.raises(ValueError, match="labels"):
        MultiSimilarityLoss()(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))

from __future__ import annotations

import math

import pytest
import torch

from tests.losses.tuples import tensor
from vprdistill.losses import triplet_margin_loss

# One query (1, 0) with positive (0.6, 0.8): d(a, p) = sqrt(0.4² + 0.8²) = sqrt(0.8).
ANCHOR = tensor([[1.0, 0.0]])
POSITIVE = tensor([[0.6, 0.8]])
NEGATIVES = tensor([[[0.0, 1.0], [0.8, 0.6]]])  # d(a, n) = sqrt(2) and sqrt(0.2² + 0.6²) = sqrt(0.4)


def test_equals_hand_computation() -> None:
    first = max(math.sqrt(0.8) - math.sqrt(2.0) + 0.1, 0.0)  # satisfied: 0
    second = math.sqrt(0.8) - math.sqrt(0.4) + 0.1
    loss = triplet_margin_loss(ANCHOR, POSITIVE, NEGATIVES, margin=0.1)
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-5)
    per_pair = triplet_margin_loss(ANCHOR, POSITIVE, NEGATIVES, margin=0.1, reduction="none")
    assert per_pair.shape == (1, 2)
    assert per_pair[0, 0].item() == pytest.approx(first, abs=1e-5)
    assert per_pair[0, 1].item() == pytest.approx(second, abs=1e-5)
    summed = triplet_margin_loss(ANCHOR, POSITIVE, NEGATIVES, margin=0.1, reduction="sum")
    assert summed.item() == pytest.approx(first + second, abs=1e-5)


def test_zero_when_margins_satisfied() -> None:
    negatives = tensor([[[0.0, 1.0], [-1.0, 0.0]]])  # sqrt(2) and 2, both beyond sqrt(0.8) + 0.1
    assert triplet_margin_loss(ANCHOR, POSITIVE, negatives, margin=0.1).item() == 0.0


def test_mean_is_over_valid_pairs_and_masked_negatives_do_not_count() -> None:
    anchor = torch.cat([ANCHOR, tensor([[0.0, 1.0]])])
    positive = torch.cat([POSITIVE, tensor([[0.0, 1.0]])])  # second query: d(a, p) = 0
    negatives = torch.cat([NEGATIVES, tensor([[[1.0, 0.0], [0.0, 1.0]]])])  # its second negative is masked
    mask = torch.tensor([[True, True], [True, False]])
    second = math.sqrt(0.8) - math.sqrt(0.4) + 0.1
    third = max(0.0 - math.sqrt(2.0) + 0.1, 0.0)
    expected = (0.0 + second + third) / 3  # three valid pairs
    loss = triplet_margin_loss(anchor, positive, negatives, margin=0.1, negative_mask=mask)
    assert loss.item() == pytest.approx(expected, abs=1e-5)

    moved = negatives.clone()
    moved[1, 1] = tensor([0.0, 0.99])  # the masked negative would now violate the margin
    assert triplet_margin_loss(anchor, positive, moved, margin=0.1, negative_mask=mask).item() == pytest.approx(
        loss.item(), abs=1e-7
    )
    # Unmasked, the moved negative does count: 0 − 0.01 + 0.1 more in the sum.
    unmasked_sum = triplet_margin_loss(anchor, positive, moved, margin=0.1, reduction="sum").item()
    assert unmasked_sum == pytest.approx(second + third + 0.09, abs=1e-5)


def test_all_masked_gives_zero_that_backpropagates() -> None:
    anchor = ANCHOR.clone().requires_grad_()
    mask = torch.zeros(1, 2, dtype=torch.bool)
    loss = triplet_margin_loss(anchor, POSITIVE, NEGATIVES, margin=0.1, negative_mask=mask)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(anchor.grad == 0)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="reduction"):
        triplet_margin_loss(ANCHOR, POSITIVE, NEGATIVES, reduction="max")
    with pytest.raises(ValueError, match="negatives"):
        triplet_margin_loss(ANCHOR, POSITIVE, NEGATIVES[0])

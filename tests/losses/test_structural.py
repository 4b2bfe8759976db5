from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.losses.tuples import random_tuples, tensor
from vprdistill.losses import StructuralDistillationLoss, TupleDescriptors, similarity_distribution_kl

E = math.e


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# Tuple 1: the teacher ranks the positive first, the student does not.
# Student: cos(a, p) = 0, cos(a, n) = 1; teacher: cos(a, p) = 0.8, cos(a, n) = 0.6.
STUDENT_1 = TupleDescriptors(tensor([[1.0, 0.0]]), tensor([[0.0, 1.0]]), tensor([[[1.0, 0.0]]]))
TEACHER_1 = TupleDescriptors(tensor([[1.0, 0.0]]), tensor([[0.8, 0.6]]), tensor([[[0.6, 0.8]]]))
TAU = 0.5
P_STUDENT_1 = [1 / (1 + E**2), E**2 / (1 + E**2)]  # softmax([0, 1] / 0.5)
P_TEACHER_1 = [E**1.6 / (E**1.6 + E**1.2), E**1.2 / (E**1.6 + E**1.2)]  # softmax([0.8, 0.6] / 0.5)
KL_1 = _kl(P_TEACHER_1, P_STUDENT_1)
HARD_1 = math.sqrt(2.0) + 0.1  # d(a, p) = sqrt(2), d(a, n) = 0

# Tuple 2: the student ranks the positive first, the teacher does not (harmful, weight 0).
STUDENT_2 = TupleDescriptors(tensor([[0.0, 1.0]]), tensor([[0.0, 1.0]]), tensor([[[1.0, 0.0]]]))
TEACHER_2 = TupleDescriptors(tensor([[1.0, 0.0]]), tensor([[0.0, 1.0]]), tensor([[[1.0, 0.0]]]))
# P_S = softmax([2, 0]), P_T = softmax([0, 2]): KL = 2·(e² − 1)/(e² + 1).
KL_2 = 2 * (E**2 - 1) / (E**2 + 1)
HARD_2 = 0.0  # d(a, p) = 0, d(a, n) = sqrt(2) > 0.1


def _stack(first: TupleDescriptors, second: TupleDescriptors) -> TupleDescriptors:
    return TupleDescriptors(
        torch.cat([first.anchor, second.anchor]),
        torch.cat([first.positive, second.positive]),
        torch.cat([first.negatives, second.negatives]),
    )


def _candidates(tuples: TupleDescriptors) -> torch.Tensor:
    return torch.cat([tuples.positive.unsqueeze(1), tuples.negatives], dim=1)


def test_kl_equals_hand_computation() -> None:
    kl = similarity_distribution_kl(
        STUDENT_1.anchor, _candidates(STUDENT_1), TEACHER_1.anchor, _candidates(TEACHER_1), temperature=TAU
    )
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(KL_1, abs=1e-6)


def test_kl_is_zero_for_matching_distributions_even_across_dimensions() -> None:
    tuples = random_tuples(batch=3, num_negatives=4, dim=5, seed=2, with_mask=False)
    candidates = _candidates(tuples)
    # The teacher is the student padded with zeros: same cosines, another dimension.
    padded_anchor = F.pad(tuples.anchor, (0, 3))
    padded_candidates = F.pad(candidates, (0, 3))
    kl = similarity_distribution_kl(tuples.anchor, candidates, padded_anchor, padded_candidates)
    assert torch.allclose(kl, torch.zeros(3), atol=1e-6)


def test_kl_ignores_masked_candidates() -> None:
    extra_s = torch.cat([_candidates(STUDENT_1), tensor([[[-1.0, 0.0]]])], dim=1)
    extra_t = torch.cat([_candidates(TEACHER_1), tensor([[[1.0, 0.0]]])], dim=1)
    mask = torch.tensor([[True, True, False]])
    kl = similarity_distribution_kl(STUDENT_1.anchor, extra_s, TEACHER_1.anchor, extra_t, TAU, mask)
    assert kl.item() == pytest.approx(KL_1, abs=1e-6)
    with pytest.raises(ValueError, match="positive"):
        similarity_distribution_kl(STUDENT_1.anchor, extra_s, TEACHER_1.anchor, extra_t, TAU, ~mask)


def test_loss_equals_hand_computation_with_partition_weights() -> None:
    loss = StructuralDistillationLoss(margin=0.1, w_hard=1.0, w_kd=1.0, temperature=TAU, weighting="partition")
    single = loss(STUDENT_1, TEACHER_1)  # teacher right, student wrong: weight 1
    assert single.total.item() == pytest.approx(HARD_1 + KL_1, abs=1e-5)

    out = loss(_stack(STUDENT_1, STUDENT_2), _stack(TEACHER_1, TEACHER_2))
    hard = (HARD_1 + HARD_2) / 2
    distillation = (1.0 * KL_1 + 0.0 * KL_2) / 2  # tuple 2 is "teacher wrong, student right": weight 0
    assert out.terms["hard"] == pytest.approx(hard, abs=1e-5)
    assert out.terms["kl"] == pytest.approx((KL_1 + KL_2) / 2, abs=1e-5)
    assert out.terms["distillation"] == pytest.approx(distillation, abs=1e-5)
    assert out.total.item() == pytest.approx(hard + distillation, abs=1e-5)
    assert out.terms["partition/share/teacher_right_student_wrong"] == 0.5
    assert out.terms["partition/share/teacher_wrong_student_right"] == 0.5
    assert out.terms["partition/mean_weight"] == 0.5


def test_uniform_weighting_is_the_plain_mean() -> None:
    loss = StructuralDistillationLoss(w_hard=0.0, w_kd=2.0, temperature=TAU, weighting="uniform")
    out = loss(_stack(STUDENT_1, STUDENT_2), _stack(TEACHER_1, TEACHER_2))
    assert out.total.item() == pytest.approx(2.0 * (KL_1 + KL_2) / 2, abs=1e-5)


def test_weighting_accepts_a_config_mapping() -> None:
    loss = StructuralDistillationLoss(
        w_hard=0.0, temperature=TAU, weighting={"name": "partition", "teacher_wrong_student_right": 0.5}
    )
    out = loss(_stack(STUDENT_1, STUDENT_2), _stack(TEACHER_1, TEACHER_2))
    assert out.total.item() == pytest.approx((KL_1 + 0.5 * KL_2) / 2, abs=1e-5)


def test_optional_regression_term() -> None:
    # ||S(a) − T(a)||² = 0, ||S(p) − T(p)||² = 0.8² + 0.4² = 0.8, ||S(n) − T(n)||² = 0.4² + 0.8² = 0.8
    loss = StructuralDistillationLoss(w_hard=0.0, w_kd=0.0, w_regression=1.0, weighting="uniform")
    out = loss(STUDENT_1, TEACHER_1)
    assert out.terms["regression"] == pytest.approx(1.6, abs=1e-6)
    assert out.total.item() == pytest.approx(1.6, abs=1e-6)

    wide_teacher = random_tuples(batch=1, num_negatives=1, dim=4, with_mask=False)
    with pytest.raises(ValueError, match="w_regression"):
        loss(STUDENT_1, wide_teacher)
    without_regression = StructuralDistillationLoss(weighting="uniform")
    assert "regression" not in without_regression(STUDENT_1, wide_teacher).terms


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="temperature"):
        StructuralDistillationLoss(temperature=0.0)
    with pytest.raises(ValueError, match="unknown name"):
        StructuralDistillationLoss(weighting="focal")
    with pytest.raises(ValueError, match="'name'"):
        StructuralDistillationLoss(weighting={"both_right": 1.0})
    with pytest.raises(ValueError, match="teacher=None"):
        StructuralDistillationLoss()(STUDENT_1, None)

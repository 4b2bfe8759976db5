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
    # Tuple 2 is "teacher wrong, student right": weight 0; the weighted mean divides by Σw = 1.
    distillation = (1.0 * KL_1 + 0.0 * KL_2) / 1.0
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
    assert out.total.item() == pytest.approx((KL_1 + 0.5 * KL_2) / 1.5, abs=1e-5)
    assert out.terms["weighted_kl"] == pytest.approx((KL_1 + 0.5 * KL_2) / 1.5, abs=1e-5)


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


def _reference_loss(
    student: TupleDescriptors, teacher: TupleDescriptors, tau: float, weights_by_group: dict[str, float]
) -> tuple[float, list[str]]:
    """Float64 reference of the weighted distillation term, written from the specification.

    Ranks count the valid negatives at least as close as the positive (ties against the
    positive); the result is Σ w·KL / Σ w, or 0 when Σ w = 0.
    """
    import numpy as np

    def as64(x: torch.Tensor) -> np.ndarray:
        return x.detach().double().numpy()

    mask = student.valid_negatives().numpy()
    total, weight_sum, groups = 0.0, 0.0, []
    for b in range(student.batch_size):
        valid = [k for k in range(student.num_negatives) if mask[b, k]]
        ranks, logits = [], []
        for model in (teacher, student):
            anchor = as64(model.anchor[b])
            cands = [as64(model.positive[b])] + [as64(model.negatives[b, k]) for k in valid]
            dist = [float(np.sqrt(((anchor - c) ** 2).sum())) for c in cands]
            ranks.append(sum(1 for d in dist[1:] if d <= dist[0]))
            cos = [float(anchor @ c / (np.linalg.norm(anchor) * np.linalg.norm(c))) for c in cands]
            logits.append(np.array(cos) / tau)
        r_t, r_s = ranks
        if r_t == 0 and r_s > 0:
            group, weight = "teacher_right_student_wrong", weights_by_group["teacher_right_student_wrong"]
        elif r_t == 0:
            group, weight = "both_right", weights_by_group["both_right"]
        elif r_s == 0:
            group, weight = "teacher_wrong_student_right", weights_by_group["teacher_wrong_student_right"]
        else:
            better = r_t < r_s
            group = "both_wrong"
            weight = weights_by_group["both_wrong"] if better else weights_by_group["both_wrong_teacher_not_better"]
        p_t = np.exp(logits[0] - logits[0].max())
        p_t /= p_t.sum()
        log_p_s = logits[1] - logits[1].max() - np.log(np.exp(logits[1] - logits[1].max()).sum())
        kl = float((p_t * (np.log(p_t) - log_p_s)).sum())
        total += weight * kl
        weight_sum += weight
        groups.append(group)
    return (total / weight_sum if weight_sum > 0 else 0.0), groups


DEFAULT_PARTITION = {
    "teacher_right_student_wrong": 1.0,
    "both_right": 0.5,
    "teacher_wrong_student_right": 0.0,
    "both_wrong": 0.5,
    "both_wrong_teacher_not_better": 0.0,
}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weighted_distillation_matches_a_float64_reference(seed: int) -> None:
    student = random_tuples(batch=16, num_negatives=5, dim=6, seed=seed)
    teacher = random_tuples(batch=16, num_negatives=5, dim=9, seed=100 + seed)
    teacher = TupleDescriptors(teacher.anchor, teacher.positive, teacher.negatives, student.negative_mask)
    expected, groups = _reference_loss(student, teacher, TAU, DEFAULT_PARTITION)
    out = StructuralDistillationLoss(w_hard=0.0, temperature=TAU, weighting="partition")(student, teacher)
    assert out.terms["distillation"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert out.total.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for name in ("teacher_right_student_wrong", "both_right", "teacher_wrong_student_right", "both_wrong"):
        assert out.terms[f"partition/share/{name}"] == pytest.approx(groups.count(name) / len(groups))


def test_uniform_and_partition_distil_at_equal_strength() -> None:
    # Every tuple has the same KL; the partition keeps some of them at weight 0.5 or 1
    # and drops others. A strength-preserving weighting gives the same loss as uniform.
    student = random_tuples(batch=8, num_negatives=3, dim=4, seed=5, with_mask=False)
    anchor = student.anchor[:1].expand(8, -1)
    positive = student.positive[:1].expand(8, -1)
    negatives = student.negatives[:1].expand(8, -1, -1)
    same = TupleDescriptors(anchor.contiguous(), positive.contiguous(), negatives.contiguous())
    teacher = random_tuples(batch=1, num_negatives=3, dim=4, seed=6, with_mask=False)
    teacher = TupleDescriptors(
        teacher.anchor.expand(8, -1).contiguous(),
        teacher.positive.expand(8, -1).contiguous(),
        teacher.negatives.expand(8, -1, -1).contiguous(),
    )
    uniform = StructuralDistillationLoss(w_hard=0.0, temperature=TAU, weighting="uniform")(same, teacher)
    halved = StructuralDistillationLoss(
        w_hard=0.0, temperature=TAU, weighting={"name": "partition", **{k: 0.5 for k in DEFAULT_PARTITION}}
    )(same, teacher)
    assert halved.terms["partition/mean_weight"] == pytest.approx(0.5)
    assert halved.total.item() == pytest.approx(uniform.total.item(), rel=1e-6)


def test_a_collapsed_teacher_is_never_right_and_distils_nothing() -> None:
    student = random_tuples(batch=6, num_negatives=4, dim=5, seed=7, requires_grad=True)
    constant = F.normalize(torch.ones(5), dim=0)
    collapsed = TupleDescriptors(
        constant.expand(6, 5).clone(),
        constant.expand(6, 5).clone(),
        constant.expand(6, 4, 5).clone(),
        student.negative_mask,
    )
    out = StructuralDistillationLoss(w_hard=0.0, temperature=TAU, weighting="partition")(student, collapsed)
    # All distances tie, and ties count against the positive: the teacher is wrong on every tuple.
    assert out.terms["partition/share/teacher_right_student_wrong"] == 0.0
    assert out.terms["partition/share/both_right"] == 0.0
    assert out.terms["partition/mean_weight"] == 0.0
    assert out.terms["distillation"] == 0.0
    out.total.backward()
    for tensor_ in (student.anchor, student.positive, student.negatives):
        assert tensor_.grad is not None and torch.isfinite(tensor_.grad).all() and not tensor_.grad.any()

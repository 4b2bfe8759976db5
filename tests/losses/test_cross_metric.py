from __future__ import annotations

import math

import pytest
import torch

from tests.losses.tuples import random_tuples, tensor
from vprdistill.losses import CrossMetricDistillationLoss, TupleDescriptors, build_kd_loss

# One tuple, 2-D descriptors, chosen so every squared distance is easy by hand.
STUDENT = TupleDescriptors(tensor([[1.0, 0.0]]), tensor([[0.0, 1.0]]), tensor([[[0.6, 0.8]]]))
TEACHER = TupleDescriptors(tensor([[0.6, 0.8]]), tensor([[0.8, 0.6]]), tensor([[[0.6, 0.8]]]))
SOFT_A = 0.4**2 + 0.8**2  # ||S(a) − T(a)||² = 0.8
SOFT_P = 0.8**2 + 0.4**2  # ||S(p) − T(p)||² = 0.8
SOFT_N = 0.0  # S(n) = T(n)
CM_AP = 0.2**2 + 0.6**2  # ||S(a) − T(p)||² = 0.4
CM_PA = 0.6**2 + 0.2**2  # ||S(p) − T(a)||² = 0.4
# d(S(a), S(p)) = sqrt(2), d(S(a), S(n)) = sqrt(0.4² + 0.8²) = sqrt(0.8)
HARD = math.sqrt(2.0) - math.sqrt(0.8) + 0.1


def test_paper_form_equals_hand_computation() -> None:
    loss = CrossMetricDistillationLoss(form="paper", margin=0.1, w_hard=1.0, w_soft=0.5, w_cm=2.0)
    out = loss(STUDENT, TEACHER)
    soft = SOFT_A + SOFT_P + SOFT_N
    cross_metric = CM_AP + CM_PA
    assert out.terms["hard"] == pytest.approx(HARD, abs=1e-5)
    assert out.terms["soft"] == pytest.approx(soft, abs=1e-6)
    assert out.terms["cross_metric"] == pytest.approx(cross_metric, abs=1e-6)
    assert out.total.item() == pytest.approx(HARD + 0.5 * soft + 2.0 * cross_metric, abs=1e-5)
    assert out.terms["total"] == pytest.approx(out.total.item())


def test_paper_soft_term_averages_valid_negatives() -> None:
    # A second negative with S(n) = (−1, 0), T(n) = (0, −1): ||S(n) − T(n)||² = 1 + 1 = 2.
    negatives_s = torch.cat([STUDENT.negatives, tensor([[[-1.0, 0.0]]])], dim=1)
    negatives_t = torch.cat([TEACHER.negatives, tensor([[[0.0, -1.0]]])], dim=1)
    student = TupleDescriptors(STUDENT.anchor, STUDENT.positive, negatives_s)
    teacher = TupleDescriptors(TEACHER.anchor, TEACHER.positive, negatives_t)
    soft_only = CrossMetricDistillationLoss(w_hard=0.0, w_soft=1.0, w_cm=0.0)
    assert soft_only(student, teacher).total.item() == pytest.approx(SOFT_A + SOFT_P + (0.0 + 2.0) / 2, abs=1e-6)

    student_masked = TupleDescriptors(student.anchor, student.positive, negatives_s, torch.tensor([[True, False]]))
    assert soft_only(student_masked, teacher).total.item() == pytest.approx(SOFT_A + SOFT_P + SOFT_N, abs=1e-6)


def test_official_form_equals_hand_computation_for_one_tuple_one_negative() -> None:
    distance = SOFT_A + SOFT_P + SOFT_N + CM_AP + CM_PA  # D = 2.4
    out = CrossMetricDistillationLoss(form="official", margin=0.1)(STUDENT, TEACHER)
    assert out.terms["kd"] == pytest.approx(0.5 * (0.1 + distance) ** 2, abs=1e-5)  # 0.5 · 2.5² = 3.125
    assert out.total.item() == pytest.approx(HARD + 0.5 * (0.1 + distance) ** 2, abs=1e-5)

    weighted = CrossMetricDistillationLoss(form="official", margin=0.1, w_hard=0.0, w_soft=2.0, w_cm=0.5)
    distance = 2.0 * (SOFT_A + SOFT_P + SOFT_N) + 0.5 * (CM_AP + CM_PA)  # 3.2 + 0.4
    assert weighted(STUDENT, TEACHER).total.item() == pytest.approx(0.5 * (0.1 + distance) ** 2, abs=1e-5)


def test_official_form_is_a_mean_over_valid_pairs() -> None:
    negatives_s = torch.cat([STUDENT.negatives, tensor([[[-1.0, 0.0]]])], dim=1)
    negatives_t = torch.cat([TEACHER.negatives, tensor([[[0.0, -1.0]]])], dim=1)
    student = TupleDescriptors(STUDENT.anchor, STUDENT.positive, negatives_s)
    teacher = TupleDescriptors(TEACHER.anchor, TEACHER.positive, negatives_t)
    loss = CrossMetricDistillationLoss(form="official", margin=0.1, w_hard=0.0)
    shared = SOFT_A + SOFT_P + CM_AP + CM_PA
    expected = (0.5 * (0.1 + shared + 0.0) ** 2 + 0.5 * (0.1 + shared + 2.0) ** 2) / 2
    assert loss(student, teacher).total.item() == pytest.approx(expected, abs=1e-5)
    masked = TupleDescriptors(STUDENT.anchor, STUDENT.positive, negatives_s, torch.tensor([[True, False]]))
    assert loss(masked, teacher).total.item() == pytest.approx(0.5 * (0.1 + shared) ** 2, abs=1e-5)


def test_soft_and_cross_metric_vanish_when_student_equals_teacher_and_anchor_equals_positive() -> None:
    same = random_tuples(batch=2, num_negatives=3, dim=6, seed=3)
    tuples = TupleDescriptors(same.anchor, same.anchor.clone(), same.negatives, same.negative_mask)
    copy = TupleDescriptors(
        tuples.anchor.clone(), tuples.positive.clone(), tuples.negatives.clone(), tuples.negative_mask
    )
    out = CrossMetricDistillationLoss(form="paper")(tuples, copy)
    assert out.terms["soft"] == 0.0
    assert out.terms["cross_metric"] == 0.0
    official = CrossMetricDistillationLoss(form="official", margin=0.1, w_hard=0.0)(tuples, copy)
    assert official.terms["soft"] == 0.0 and official.terms["cross_metric"] == 0.0
    assert official.total.item() == pytest.approx(0.5 * 0.1**2)  # D = 0 leaves only the margin


def test_ablation_variants_are_configurations_of_one_loss() -> None:
    kinds = {name: build_kd_loss(name) for name in ("none", "soft", "cross_metric", "soft_cross_metric", "official")}
    assert all(type(loss) is CrossMetricDistillationLoss for loss in kinds.values())
    assert (kinds["none"].w_soft, kinds["none"].w_cm) == (0.0, 0.0)
    assert (kinds["soft"].w_soft, kinds["soft"].w_cm) == (1.0, 0.0)
    assert (kinds["cross_metric"].w_soft, kinds["cross_metric"].w_cm) == (0.0, 1.0)
    assert kinds["official"].form == "official"
    assert kinds["none"](STUDENT, None).total.item() == pytest.approx(HARD, abs=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        kinds["soft"](STUDENT, None)

    out = {name: loss(STUDENT, TEACHER) for name, loss in kinds.items()}
    assert out["none"].total.item() == pytest.approx(HARD, abs=1e-5)
    assert out["soft"].total.item() == pytest.approx(HARD + SOFT_A + SOFT_P + SOFT_N, abs=1e-5)
    assert out["cross_metric"].total.item() == pytest.approx(HARD + CM_AP + CM_PA, abs=1e-5)
    assert out["soft_cross_metric"].total.item() == pytest.approx(HARD + 1.6 + 0.8, abs=1e-5)
    assert build_kd_loss("soft", w_soft=0.25, margin=0.2).w_soft == 0.25


def test_bad_configuration_and_input_raise() -> None:
    with pytest.raises(ValueError, match="unknown name"):
        build_kd_loss("hint")
    with pytest.raises(ValueError, match="fixes w_cm"):
        build_kd_loss("soft", w_cm=1.0)
    with pytest.raises(ValueError, match="bad parameters"):
        build_kd_loss("official", temperature=0.1)
    with pytest.raises(ValueError, match="form"):
        CrossMetricDistillationLoss(form="mixed")
    with pytest.raises(ValueError, match="margin"):
        CrossMetricDistillationLoss(margin=0.0)
    with pytest.raises(ValueError, match="w_soft"):
        CrossMetricDistillationLoss(w_soft=-1.0)
    with pytest.raises(ValueError, match="teacher=None"):
        CrossMetricDistillationLoss()(STUDENT, None)
    wide_teacher = random_tuples(batch=1, num_negatives=1, dim=3, with_mask=False)
    with pytest.raises(ValueError, match="dimension"):
        CrossMetricDistillationLoss()(STUDENT, wide_teacher)
    assert build_kd_loss("none")(STUDENT, None).total.item() == pytest.approx(HARD, abs=1e-5)

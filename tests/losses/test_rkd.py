from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.losses.tuples import random_tuples, tensor
from vprdistill.losses import RelationalDistillationLoss, TupleDescriptors, build_kd_loss, rkd_distance_loss

# Teacher: a right triangle with sides 3, 4, 5 (pairs a–p, a–n, p–n), mean 4.
TEACHER = TupleDescriptors(tensor([[0.0, 0.0]]), tensor([[3.0, 0.0]]), tensor([[[0.0, 4.0]]]))
# Student: sides 1, 1, sqrt(2), mean (2 + sqrt(2)) / 3.
STUDENT = TupleDescriptors(tensor([[0.0, 0.0]]), tensor([[1.0, 0.0]]), tensor([[[0.0, 1.0]]]))


def _hand_rkd() -> float:
    teacher = [3 / 4, 4 / 4, 5 / 4]
    student_mean = (1 + 1 + math.sqrt(2)) / 3
    student = [1 / student_mean, 1 / student_mean, math.sqrt(2) / student_mean]
    # Every difference is below 1, so smooth-L1 (beta 1) is 0.5·x².
    return sum(0.5 * (s - t) ** 2 for s, t in zip(student, teacher)) / 3


def test_rkd_equals_hand_computation() -> None:
    flat_student = torch.cat([STUDENT.anchor, STUDENT.positive, STUDENT.negatives[0]])
    flat_teacher = torch.cat([TEACHER.anchor, TEACHER.positive, TEACHER.negatives[0]])
    assert rkd_distance_loss(flat_student, flat_teacher).item() == pytest.approx(_hand_rkd(), abs=1e-6)

    loss = RelationalDistillationLoss(margin=0.1, w_hard=0.0, w_rkd=2.0)
    out = loss(STUDENT, TEACHER)
    assert out.terms["rkd"] == pytest.approx(_hand_rkd(), abs=1e-6)
    assert out.total.item() == pytest.approx(2.0 * _hand_rkd(), abs=1e-6)


def test_rkd_variant_adds_the_hard_triplet_term() -> None:
    # Student: d(a, p) = 1, d(a, n) = 1, so the triplet loss is the margin 0.1.
    out = build_kd_loss("rkd", margin=0.1, w_rkd=0.5)(STUDENT, TEACHER)
    assert out.terms["hard"] == pytest.approx(0.1, abs=1e-5)
    assert out.total.item() == pytest.approx(0.1 + 0.5 * _hand_rkd(), abs=1e-5)


def test_rkd_is_zero_for_a_scaled_rotated_copy_even_of_another_dimension() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(9, 4, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    student = 3.0 * teacher @ rotation[:4]  # rows of an orthogonal matrix keep distances
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert rkd_distance_loss(F.normalize(student + 0.5, dim=-1), teacher).item() > 1e-3


def test_masked_negatives_are_left_out_of_the_relations() -> None:
    student = random_tuples(batch=2, num_negatives=3, dim=5, seed=4)
    teacher = random_tuples(batch=2, num_negatives=3, dim=7, seed=5)
    mask = student.negative_mask
    loss = RelationalDistillationLoss(w_hard=0.0)
    moved = student.negatives.clone()
    moved[~mask] = 5.0
    changed = TupleDescriptors(student.anchor, student.positive, moved, mask)
    assert loss(changed, teacher).total.item() == pytest.approx(loss(student, teacher).total.item(), abs=1e-7)

    valid = [student.anchor, student.positive, student.negatives[mask]]
    valid_teacher = [teacher.anchor, teacher.positive, teacher.negatives[mask]]
    expected = rkd_distance_loss(torch.cat(valid), torch.cat(valid_teacher))
    assert loss(student, teacher).total.item() == pytest.approx(expected.item(), abs=1e-7)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="rkd_distance_loss"):
        rkd_distance_loss(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="w_rkd"):
        RelationalDistillationLoss(w_rkd=-1.0)

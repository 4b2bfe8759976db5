"""Properties every registered loss must have: teacher gets no gradient, masked negatives count for nothing."""

from __future__ import annotations

import pytest
import torch

from tests.losses.tuples import random_tuples
from vprdistill.losses import LOSS_REGISTRY, LossOutput, TupleDescriptors, build_loss

ALL_NAMES = sorted(LOSS_REGISTRY)


def test_registry_covers_baseline_kd_variants_and_structural() -> None:
    expected = {"triplet", "none", "soft", "cross_metric", "soft_cross_metric", "official", "rkd", "structural"}
    assert set(LOSS_REGISTRY) == expected


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradients_reach_only_the_student(name: str) -> None:
    student = random_tuples(seed=0, requires_grad=True)
    teacher = random_tuples(seed=1, requires_grad=True)
    out = build_loss({"name": name, "margin": 0.5})(student, teacher)
    assert isinstance(out, LossOutput) and out.total.dim() == 0
    assert all(type(value) is float for value in out.terms.values())
    assert out.terms["total"] == pytest.approx(out.total.item())
    out.total.backward()
    for tensor in (teacher.anchor, teacher.positive, teacher.negatives):
        assert tensor.grad is None
    student_grads = [t.grad for t in (student.anchor, student.positive, student.negatives)]
    assert all(g is not None for g in student_grads)
    assert sum(g.abs().sum().item() for g in student_grads) > 0
    # Masked negatives receive exactly zero gradient.
    assert torch.all(student.negatives.grad[~student.negative_mask] == 0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_masked_negatives_change_nothing(name: str) -> None:
    student = random_tuples(seed=0)
    teacher = random_tuples(seed=1)
    mask = student.negative_mask
    loss = build_loss({"name": name, "margin": 0.5})
    reference = loss(student, teacher)

    def moved(tuples: TupleDescriptors, value: float) -> TupleDescriptors:
        negatives = tuples.negatives.clone()
        negatives[~mask] = value
        return TupleDescriptors(tuples.anchor, tuples.positive, negatives, mask)

    changed = loss(moved(student, 0.3), moved(teacher, -0.7))
    assert changed.total.item() == pytest.approx(reference.total.item(), abs=1e-6)
    assert changed.terms == pytest.approx(reference.terms, abs=1e-6)
    # Unmasked, the same change does matter (so the test can fail).
    unmasked = TupleDescriptors(student.anchor, student.positive, moved(student, 0.3).negatives)
    unmasked_teacher = TupleDescriptors(teacher.anchor, teacher.positive, moved(teacher, -0.7).negatives)
    assert loss(unmasked, unmasked_teacher).total.item() != pytest.approx(reference.total.item(), abs=1e-6)


def test_a_missing_teacher_is_refused_only_by_losses_with_teacher_terms() -> None:
    student = random_tuples()
    for name in ALL_NAMES:
        loss = build_loss({"name": name})
        if name in ("none", "triplet"):
            assert loss(student, None).total.dim() == 0
        else:
            with pytest.raises(ValueError, match="teacher"):
                loss(student, None)
    # With every teacher weight at 0, only the student's triplet term is left.
    reference = build_loss({"name": "triplet"})(student, None).total.item()
    for config in (
        {"name": "soft", "w_soft": 0.0},
        {"name": "rkd", "w_rkd": 0.0},
        {"name": "structural", "w_kd": 0.0, "w_regression": 0.0},
    ):
        assert build_loss(config)(student, None).total.item() == pytest.approx(reference), config


def test_teacher_must_describe_the_same_tuples() -> None:
    student = random_tuples(batch=3)
    with pytest.raises(ValueError, match="do not match"):
        build_loss({"name": "soft"})(student, random_tuples(batch=2))
    other_mask = random_tuples(batch=3)
    other_mask = TupleDescriptors(
        other_mask.anchor, other_mask.positive, other_mask.negatives, ~other_mask.negative_mask
    )
    with pytest.raises(ValueError, match="negative_mask"):
        build_loss({"name": "structural"})(student, other_mask)


def test_build_loss_rejects_bad_configs() -> None:
    with pytest.raises(ValueError, match="missing 'name'"):
        build_loss({"margin": 0.1})
    with pytest.raises(ValueError, match="unknown name"):
        build_loss({"name": "contrastive"})
    with pytest.raises(ValueError, match="bad parameters"):
        build_loss({"name": "structural", "w_cm": 1.0})


def test_descriptor_shapes_are_checked() -> None:
    anchor = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="positive"):
        TupleDescriptors(anchor, torch.zeros(2, 5), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="negatives"):
        TupleDescriptors(anchor, anchor, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="negative_mask"):
        TupleDescriptors(anchor, anchor, torch.zeros(2, 3, 4), torch.ones(2, 3))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_zero_padded_negatives_give_finite_gradients(name: str) -> None:
    # The training loop pads missing negatives with zero vectors; they must not produce NaN.
    student = random_tuples(seed=0)
    teacher = random_tuples(seed=1)
    mask = student.negative_mask
    padded = student.negatives.detach().clone()
    padded[~mask] = 0.0
    padded.requires_grad_()
    student = TupleDescriptors(student.anchor.detach().requires_grad_(), student.positive, padded, mask)
    out = build_loss({"name": name})(student, teacher)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert torch.isfinite(student.anchor.grad).all() and torch.isfinite(padded.grad).all()

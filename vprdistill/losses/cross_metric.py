"""TSCM cross-metric knowledge distillation (METHODS §4), in the paper's and the official code's form.

``paper`` (the ICRA 2024 paper)::

    L_total = w_hard·L_hard + w_soft·L_soft + w_cm·L_cm
    L_hard  = triplet loss on the student's descriptors
    L_soft  = ||S(a) − T(a)||² + ||S(p) − T(p)||² + mean_n ||S(n) − T(n)||²
    L_cm    = ||S(a) − T(p)||² + ||S(p) − T(a)||²

``L_soft`` and ``L_cm`` are means over the tuples of the batch; the negatives' part of
``L_soft`` is the mean over each tuple's valid negatives (our choice: the paper writes a
sum over x ∈ {a, p, n} without saying how several negatives combine).

``official`` (the authors' released code, ``CKD_loss``): for each valid (query, negative) pair::

    D       = w_soft·(||S(a) − T(a)||² + ||S(p) − T(p)||² + ||S(n) − T(n)||²)
              + w_cm·(||S(a) − T(p)||² + ||S(p) − T(a)||²)
    L_total = w_hard·L_hard + mean_pairs 0.5·max(margin + D, 0)²

with all weights 1 in the released code. The teacher is always detached.

Every distillation term compares a student descriptor with a teacher descriptor
directly, so both must live in one space: for a teacher of another dimension the
caller passes ``projected_student`` (the student's tuples through a learned
projection into the teacher's space); ``L_hard`` stays on the student's own descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from vprdistill.losses.base import TeacherTermLoss
from vprdistill.losses.masking import mean_over_valid
from vprdistill.losses.regression import descriptor_regression, squared_distance
from vprdistill.losses.types import Terms, TupleDescriptors

FORMS = ("paper", "official")


def cross_metric_distance(student: TupleDescriptors, teacher: TupleDescriptors) -> Tensor:
    """Per tuple ``||S(a) − T(p)||² + ||S(p) − T(a)||²``: ``(B,)``.

    The anchor of one model is pulled to the positive of the other, so the student
    learns where the teacher puts a query's positive, not only the teacher's features.
    """
    return squared_distance(student.anchor, teacher.positive) + squared_distance(student.positive, teacher.anchor)


def official_pair_distances(student: TupleDescriptors, teacher: TupleDescriptors) -> tuple[Tensor, Tensor]:
    """The official code's two sums for every (query, negative) pair, unweighted, each ``(B, Nn)``.

    Returns:
        ``soft = ||S(a)−T(a)||² + ||S(p)−T(p)||² + ||S(n)−T(n)||²`` and
        ``cm = ||S(a)−T(p)||² + ||S(p)−T(a)||²`` (the same for all negatives of a query).
    """
    per_query = squared_distance(student.anchor, teacher.anchor) + squared_distance(student.positive, teacher.positive)
    soft = per_query.unsqueeze(1) + squared_distance(student.negatives, teacher.negatives)
    cm = cross_metric_distance(student, teacher).unsqueeze(1).expand_as(soft)
    return soft, cm


@dataclass
class CrossMetricDistillationLoss(TeacherTermLoss):
    """TSCM's student loss: hard triplet term plus soft and cross-metric distillation.

    Call with ``(student, teacher)`` tuples; returns a :class:`LossOutput` whose terms
    are ``hard``, ``soft``, ``cross_metric`` (unweighted, only the active ones),
    ``kd`` (official form: the mean of ``0.5·(margin + D)²``) and ``total``.
    :meth:`teacher_term` gives the distillation part alone.

    Attributes:
        form: ``"paper"`` or ``"official"`` (see the module docstring).
        margin: triplet margin; the official form also uses it inside ``(margin + D)²``.
        w_hard: weight of the student's triplet loss.
        w_soft: weight of the same-image terms ``||S(x) − T(x)||²``.
        w_cm: weight of the cross-metric terms ``||S(a) − T(p)||² + ||S(p) − T(a)||²``.
    """

    form: str = "paper"
    margin: float = 0.1
    w_hard: float = 1.0
    w_soft: float = 1.0
    w_cm: float = 1.0
    teacher_weights: ClassVar[tuple[str, ...]] = ("w_soft", "w_cm")

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"CrossMetricDistillationLoss.form: expected one of {FORMS}, got {self.form!r}")
        super().__post_init__()

    @property
    def compares_across_spaces(self) -> bool:
        """Soft and cross-metric terms compare student and teacher descriptors directly."""
        return self.has_teacher_term

    def _teacher_term(
        self, student: TupleDescriptors, teacher: TupleDescriptors, compared: TupleDescriptors
    ) -> tuple[Tensor, Terms]:
        if teacher.dim != compared.dim:
            raise ValueError(
                f"CrossMetricDistillationLoss: student dimension {compared.dim} differs from teacher "
                f"dimension {teacher.dim}; TSCM compares descriptors directly, so they must agree "
                "(a teacher of another dimension needs a projection of the student: projection: auto)"
            )
        if self.form == "paper":
            return self._paper_terms(compared, teacher)
        return self._official_term(compared, teacher)

    def _paper_terms(self, student: TupleDescriptors, teacher: TupleDescriptors) -> tuple[Tensor, Terms]:
        parts = {"soft": (self.w_soft, descriptor_regression), "cross_metric": (self.w_cm, cross_metric_distance)}
        terms: Terms = {name: term(student, teacher).mean() for name, (weight, term) in parts.items() if weight > 0}
        weighted = sum((parts[name][0] * value for name, value in terms.items()), student.anchor.new_zeros(()))
        return weighted, terms

    def _official_term(self, student: TupleDescriptors, teacher: TupleDescriptors) -> tuple[Tensor, Terms]:
        soft, cross_metric = official_pair_distances(student, teacher)
        per_pair = 0.5 * torch.clamp(self.margin + self.w_soft * soft + self.w_cm * cross_metric, min=0).pow(2)
        mask = student.negative_mask
        parts = (("soft", self.w_soft, soft), ("cross_metric", self.w_cm, cross_metric))
        terms: Terms = {name: mean_over_valid(values, mask) for name, weight, values in parts if weight > 0}
        terms["kd"] = mean_over_valid(per_pair, mask)
        return terms["kd"], terms

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

import torch
from torch import Tensor

from vprdistill.losses.masking import mean_over_valid
from vprdistill.losses.regression import descriptor_regression, squared_distance
from vprdistill.losses.triplet import triplet_margin_loss
from vprdistill.losses.types import LossOutput, Terms, TupleDescriptors, in_teacher_space, paired_teacher

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
class CrossMetricDistillationLoss:
    """TSCM's student loss: hard triplet term plus soft and cross-metric distillation.

    Call with ``(student, teacher)`` tuples; returns a :class:`LossOutput` whose terms
    are ``hard``, ``soft``, ``cross_metric`` (unweighted, only the active ones),
    ``kd`` (official form: the mean of ``0.5·(margin + D)²``) and ``total``.

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

    def __post_init__(self) -> None:
        if self.margin <= 0:
            raise ValueError(f"CrossMetricDistillationLoss.margin: must be > 0, got {self.margin}")
        if self.form not in FORMS:
            raise ValueError(f"CrossMetricDistillationLoss.form: expected one of {FORMS}, got {self.form!r}")
        for name in ("w_hard", "w_soft", "w_cm"):
            if getattr(self, name) < 0:
                raise ValueError(f"CrossMetricDistillationLoss.{name}: must be >= 0, got {getattr(self, name)}")

    @property
    def compares_across_spaces(self) -> bool:
        """Soft and cross-metric terms compare student and teacher descriptors directly."""
        return self.w_soft > 0 or self.w_cm > 0

    def __call__(
        self,
        student: TupleDescriptors,
        teacher: TupleDescriptors | None = None,
        projected_student: TupleDescriptors | None = None,
    ) -> LossOutput:
        """Loss of a batch: ``student`` and ``teacher`` hold ``(B, D)``, ``(B, D)``, ``(B, Nn, D)`` descriptors.

        ``projected_student`` (``(B, Dt)``, ``(B, Dt)``, ``(B, Nn, Dt)``), when given, replaces
        ``student`` in the soft and cross-metric terms; the hard term reads ``student``.
        """
        hard = triplet_margin_loss(
            student.anchor, student.positive, student.negatives, self.margin, student.negative_mask
        )
        total = self.w_hard * hard
        terms: Terms = {"hard": hard}
        if self.w_soft > 0 or self.w_cm > 0:
            teacher = paired_teacher(student, teacher, "CrossMetricDistillationLoss")
            compared = in_teacher_space(student, projected_student, "CrossMetricDistillationLoss")
            if teacher.dim != compared.dim:
                raise ValueError(
                    f"CrossMetricDistillationLoss: student dimension {compared.dim} differs from teacher "
                    f"dimension {teacher.dim}; TSCM compares descriptors directly, so they must agree "
                    "(a teacher of another dimension needs a projection of the student: projection: auto)"
                )
            if self.form == "paper":
                total = total + self._paper_terms(compared, teacher, terms)
            else:
                total = total + self._official_term(compared, teacher, terms)
        return LossOutput.from_tensors(total, terms)

    def _paper_terms(self, student: TupleDescriptors, teacher: TupleDescriptors, terms: Terms) -> Tensor:
        weighted = torch.zeros((), dtype=student.anchor.dtype, device=student.anchor.device)
        if self.w_soft > 0:
            soft = descriptor_regression(student, teacher).mean()
            terms["soft"] = soft
            weighted = weighted + self.w_soft * soft
        if self.w_cm > 0:
            cross_metric = cross_metric_distance(student, teacher).mean()
            terms["cross_metric"] = cross_metric
            weighted = weighted + self.w_cm * cross_metric
        return weighted

    def _official_term(self, student: TupleDescriptors, teacher: TupleDescriptors, terms: Terms) -> Tensor:
        soft, cross_metric = official_pair_distances(student, teacher)
        distance = self.w_soft * soft + self.w_cm * cross_metric
        per_pair = 0.5 * torch.clamp(self.margin + distance, min=0).pow(2)
        mask = student.negative_mask
        if self.w_soft > 0:
            terms["soft"] = mean_over_valid(soft, mask)
        if self.w_cm > 0:
            terms["cross_metric"] = mean_over_valid(cross_metric, mask)
        kd = mean_over_valid(per_pair, mask)
        terms["kd"] = kd
        return kd

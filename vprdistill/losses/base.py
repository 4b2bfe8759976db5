"""What the tuple losses share: the student's triplet term beside a pure teacher term, and named builders.

Every distillation loss of this package is ``w_hard·triplet(student) + teacher_term(student, teacher)``.
The teacher term alone (:meth:`TeacherTermLoss.teacher_term`) is what a training method with
several teachers sums, so that the student's own triplet term is computed once, by the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from torch import Tensor

from vprdistill.losses.triplet import triplet_margin_loss
from vprdistill.losses.types import LossOutput, Terms, TupleDescriptors, in_teacher_space, paired_teacher

Built = TypeVar("Built")


def build_named(registry: Mapping[str, Callable[..., Built]], name: Any, params: Mapping[str, Any], what: str) -> Built:
    """``registry[name](**params)``; ValueError naming ``what`` for an unknown name or bad parameters."""
    if name not in registry:
        raise ValueError(f"{what}: unknown name {name!r}; known: {sorted(registry)}")
    try:
        return registry[name](**params)
    except TypeError as error:
        raise ValueError(f"{what} {name!r}: bad parameters {sorted(params)}: {error}") from error


class TeacherTermLoss:
    """Mixin of the tuple losses: ``w_hard·triplet(student; margin) + teacher_term``.

    A subclass is a dataclass with ``margin``, ``w_hard`` and the weights named in ``teacher_weights``;
    its ``_teacher_term(student, teacher, compared)`` (``compared``: the student's tuples in the
    teacher's space) returns the weighted teacher term and its logged parts.

    What the training loop calls on a batch of tuples (every loss of :func:`build_loss` is one).
    ``teacher`` may be ``None`` when the loss has no teacher term (its teacher
    weights are all 0). ``compares_across_spaces`` tells whether a term compares
    a student descriptor with a teacher descriptor directly (``||S(x) − T(y)||²``),
    which needs both in one space. Such terms read ``projected_student`` when
    given: the student's tuples carried into the teacher's space (a learned
    projection, for a teacher of another dimension); the student's own terms
    (triplet) and relational terms (similarities or distances within each model's
    space) always read ``student``.
    """

    margin: float
    w_hard: float
    compares_across_spaces: bool
    teacher_weights: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        """Check the margin (> 0) and the weights (>= 0) of the subclass's dataclass fields."""
        name = type(self).__name__
        if self.margin <= 0:
            raise ValueError(f"{name}.margin: must be > 0, got {self.margin}")
        for weight in ("w_hard", *self.teacher_weights):
            if getattr(self, weight) < 0:
                raise ValueError(f"{name}.{weight}: must be >= 0, got {getattr(self, weight)}")

    @property
    def has_teacher_term(self) -> bool:
        """Whether any teacher weight is > 0 (else the loss needs no teacher)."""
        return any(getattr(self, weight) > 0 for weight in self.teacher_weights)

    def teacher_term(
        self,
        student: TupleDescriptors,
        teacher: TupleDescriptors | None,
        projected_student: TupleDescriptors | None = None,
    ) -> tuple[Tensor, Terms]:
        """The weighted teacher term (a scalar with gradient) and its unweighted parts, without the hard term.

        Raises:
            ValueError: no teacher, or teacher tuples that do not match the student's.
        """
        name = type(self).__name__
        teacher = paired_teacher(student, teacher, name)
        return self._teacher_term(student, teacher, in_teacher_space(student, projected_student, name))

    def __call__(
        self,
        student: TupleDescriptors,
        teacher: TupleDescriptors | None = None,
        projected_student: TupleDescriptors | None = None,
    ) -> LossOutput:
        """Loss of a batch: terms ``hard``, the teacher term's parts (when a teacher weight is > 0), ``total``.

        ``projected_student``, when given, replaces ``student`` in the terms that compare
        descriptors across the two spaces; the hard term always reads ``student``.
        """
        hard = triplet_margin_loss(  # the student's own triplet loss (unweighted scalar)
            student.anchor, student.positive, student.negatives, self.margin, student.negative_mask
        )
        total = self.w_hard * hard
        terms: Terms = {"hard": hard}
        if self.has_teacher_term:
            term, parts = self.teacher_term(student, teacher, projected_student)
            terms.update(parts)
            total = total + term
        return LossOutput.from_tensors(total, terms)

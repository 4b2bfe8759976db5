"""The data every loss takes and returns: a batch of mined tuples and the loss value.

A batch holds B tuples of 1 query (anchor) + 1 positive + Nn negatives. Mining can
return fewer than Nn hard negatives for some queries; ``negative_mask`` marks the
valid ones, and every loss of this package ignores the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

# Loss terms while they are computed: tensors (converted to floats at the end) or floats.
Terms = dict[str, Tensor | float]


@dataclass(frozen=True)
class TupleDescriptors:
    """Descriptors of a batch of mined tuples, from one model.

    Attributes:
        anchor: ``(B, D)`` query descriptors.
        positive: ``(B, D)`` descriptors of each query's positive.
        negatives: ``(B, Nn, D)`` descriptors of each query's negatives.
        negative_mask: ``(B, Nn)`` bool, True where a negative is valid; None means all are.
    """

    anchor: Tensor
    positive: Tensor
    negatives: Tensor
    negative_mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.anchor.dim() != 2:
            raise ValueError(f"TupleDescriptors.anchor: expected (B, D), got shape {tuple(self.anchor.shape)}")
        if self.positive.shape != self.anchor.shape:
            raise ValueError(
                f"TupleDescriptors.positive: expected shape {tuple(self.anchor.shape)} like the anchor, "
                f"got {tuple(self.positive.shape)}"
            )
        batch, dim = self.anchor.shape
        if self.negatives.dim() != 3 or self.negatives.shape[0] != batch or self.negatives.shape[2] != dim:
            raise ValueError(
                f"TupleDescriptors.negatives: expected ({batch}, Nn, {dim}), got {tuple(self.negatives.shape)}"
            )
        if self.negative_mask is not None:
            if self.negative_mask.dtype != torch.bool:
                raise ValueError(f"TupleDescriptors.negative_mask: expected dtype bool, got {self.negative_mask.dtype}")
            if self.negative_mask.shape != self.negatives.shape[:2]:
                raise ValueError(
                    f"TupleDescriptors.negative_mask: expected shape {tuple(self.negatives.shape[:2])}, "
                    f"got {tuple(self.negative_mask.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.anchor.shape[0]

    @property
    def num_negatives(self) -> int:
        return self.negatives.shape[1]

    @property
    def dim(self) -> int:
        return self.anchor.shape[1]

    def valid_negatives(self) -> Tensor:
        """The negative mask, all True when none was given: ``(B, Nn)`` bool."""
        if self.negative_mask is not None:
            return self.negative_mask
        return torch.ones(self.negatives.shape[:2], dtype=torch.bool, device=self.negatives.device)

    def candidates(self) -> tuple[Tensor, Tensor]:
        """The tuple's retrieval candidates, positive first: ``(B, 1 + Nn, D)`` and their mask ``(B, 1 + Nn)``."""
        candidates = torch.cat([self.positive.unsqueeze(1), self.negatives], dim=1)
        positive_valid = torch.ones((self.batch_size, 1), dtype=torch.bool, device=self.anchor.device)
        return candidates, torch.cat([positive_valid, self.valid_negatives()], dim=1)

    def map(self, fn: Callable[[Tensor], Tensor]) -> TupleDescriptors:
        """``fn`` applied to every descriptor (along the last axis: ``(..., D) -> (..., D')``), the mask kept.

        How a student's tuples are carried into a teacher's descriptor space by a projection.
        """
        return TupleDescriptors(fn(self.anchor), fn(self.positive), fn(self.negatives), self.negative_mask)

    def detach(self) -> TupleDescriptors:
        """The same descriptors cut from the autograd graph (for teachers)."""
        return self.map(Tensor.detach)


@dataclass
class LossOutput:
    """A loss value and its parts for logging.

    Attributes:
        total: scalar tensor to call ``backward()`` on.
        terms: the unweighted value of each term, ``total``, and statistics, as floats.
    """

    total: Tensor
    terms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_tensors(cls, total: Tensor, terms: Terms) -> LossOutput:
        """Pack ``total`` and its terms, adding ``terms["total"]``; tensor terms become floats in one device sync."""
        names = [name for name, value in terms.items() if isinstance(value, Tensor)]
        dtype = total.dtype if total.is_floating_point() else torch.float32
        stacked = [terms[name].detach().reshape(()).to(dtype) for name in names] + [total.detach()]
        converted = dict(zip([*names, "total"], torch.stack(stacked).tolist()))
        floats = {name: converted[name] if name in converted else float(value) for name, value in terms.items()}
        floats["total"] = converted["total"]
        return cls(total, floats)


def _check_same_tuples(
    student: TupleDescriptors, other: TupleDescriptors, loss_name: str, label: str, inherits_mask: bool = False
) -> None:
    """``other`` (``label``) describes the student's tuples: batch, negatives, mask (unless it has none to inherit)."""
    if other.batch_size != student.batch_size or other.num_negatives != student.num_negatives:
        raise ValueError(
            f"{loss_name}: {label} tuples (B={other.batch_size}, Nn={other.num_negatives}) do not match "
            f"student tuples (B={student.batch_size}, Nn={student.num_negatives})"
        )
    if not (inherits_mask and other.negative_mask is None) and not torch.equal(
        other.valid_negatives(), student.valid_negatives()
    ):
        raise ValueError(f"{loss_name}: {label}.negative_mask differs from student.negative_mask")


def in_teacher_space(
    student: TupleDescriptors, projected_student: TupleDescriptors | None, loss_name: str
) -> TupleDescriptors:
    """The student's tuples to compare with the teacher's: ``projected_student`` when given, else ``student``.

    Raises:
        ValueError: ``projected_student`` does not describe the same tuples (batch, negatives, mask).
    """
    if projected_student is None:
        return student
    _check_same_tuples(student, projected_student, loss_name, "projected_student")
    return projected_student


def paired_teacher(student: TupleDescriptors, teacher: TupleDescriptors | None, loss_name: str) -> TupleDescriptors:
    """Check that ``teacher`` describes the same tuples as ``student`` and return it detached.

    The teacher may have another descriptor dimension; batch size, number of negatives
    and the negative mask must agree. The teacher inherits the student's mask when it has none.

    Raises:
        ValueError: no teacher, or tuples that do not match.
    """
    if teacher is None:
        raise ValueError(f"{loss_name}: this loss needs teacher descriptors, got teacher=None")
    _check_same_tuples(student, teacher, loss_name, "teacher", inherits_mask=True)
    return replace(teacher.detach(), negative_mask=student.negative_mask)

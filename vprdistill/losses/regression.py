"""Descriptor regression: the student's descriptor of an image pulled onto the teacher's.

TSCM calls it the soft loss, ``Σ_{x ∈ a,p,n} ||S(x) − T(x)||²``; StructVPR (our
specification) can add it to the similarity-distribution term when dimensions agree.
"""

from __future__ import annotations

from torch import Tensor

from vprdistill.losses.masking import masked_mean
from vprdistill.losses.types import TupleDescriptors


def squared_distance(x: Tensor, y: Tensor) -> Tensor:
    """``||x − y||²`` along the last axis: ``(..., D), (..., D) -> (...)``."""
    return (x - y).pow(2).sum(dim=-1)


def descriptor_regression(student: TupleDescriptors, teacher: TupleDescriptors) -> Tensor:
    """Per tuple ``||S(a) − T(a)||² + ||S(p) − T(p)||² + mean_n ||S(n) − T(n)||²``: ``(B,)``.

    The negatives' term is the mean over the tuple's valid negatives (our choice, so that
    the term's scale does not grow with the number of mined negatives). Gradients reach
    both arguments; callers detach the teacher.

    Raises:
        ValueError: the two descriptor dimensions differ.
    """
    if student.dim != teacher.dim:
        raise ValueError(
            f"descriptor_regression: student dimension {student.dim} differs from teacher dimension "
            f"{teacher.dim}; descriptors of different sizes cannot be regressed onto each other"
        )
    negatives = masked_mean(squared_distance(student.negatives, teacher.negatives), student.negative_mask)
    return (
        squared_distance(student.anchor, teacher.anchor)
        + squared_distance(student.positive, teacher.positive)
        + negatives
    )

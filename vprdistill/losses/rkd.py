"""Relational knowledge distillation, distance-wise (Park et al., CVPR 2019).

TSCM's ablation compares its cross-metric loss with RKD as "the other counterpart".

The student copies the *shape* of the teacher's batch, not its coordinates: pairwise
distances of both models, each divided by its own mean, are matched with a Huber
(smooth-L1) loss. Teacher and student dimensions may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vprdistill.losses.base import TeacherTermLoss
from vprdistill.losses.types import Terms, TupleDescriptors


def _mean_normalised(distances: Tensor) -> Tensor:
    positive = distances[distances > 0]
    if positive.numel() == 0:
        return distances
    return distances / positive.mean()


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Distance-wise RKD between two sets of N embeddings of the same images.

    ``smooth_l1(d_S / mean(d_S), d_T / mean(d_T))`` over the N·(N−1)/2 distinct pairs, where
    ``d`` are Euclidean distances and each mean is over the non-zero pairs. Park et al.
    average over the full N×N matrix instead, which is this value times (N−1)/N.

    Args:
        student: ``(N, Ds)`` student embeddings.
        teacher: ``(N, Dt)`` teacher embeddings (detached here).

    Returns:
        A scalar; 0 when N < 2.
    """
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"rkd_distance_loss: expected student (N, Ds) and teacher (N, Dt), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if student.shape[0] < 2:
        return student.sum() * 0.0
    with torch.no_grad():
        teacher_distances = _mean_normalised(F.pdist(teacher.detach(), p=2))
    student_distances = _mean_normalised(F.pdist(student, p=2))
    return F.smooth_l1_loss(student_distances, teacher_distances, reduction="mean")


def flatten_tuples(descriptors: TupleDescriptors) -> Tensor:
    """Anchors, positives, then the valid negatives of a batch as one ``(N, D)`` set."""
    negatives = descriptors.negatives[descriptors.valid_negatives()]
    return torch.cat([descriptors.anchor, descriptors.positive, negatives], dim=0)


@dataclass
class RelationalDistillationLoss(TeacherTermLoss):
    """``w_hard·triplet(student) + w_rkd·RKD-D(student, teacher)`` over all descriptors of the batch.

    Terms: ``hard``, ``rkd`` (unweighted) and ``total``. The teacher's descriptor dimension
    may differ from the student's; ``projected_student`` is not used: the student's own
    distances are matched, never a projection's.

    Attributes:
        margin: triplet margin.
        w_hard: weight of the student's triplet loss.
        w_rkd: weight of the distance-wise RKD term (Park et al. use 1 for metric learning).
    """

    margin: float = 0.1
    w_hard: float = 1.0
    w_rkd: float = 1.0
    teacher_weights: ClassVar[tuple[str, ...]] = ("w_rkd",)
    # RKD compares distances measured within each model's own space: no projection is needed.
    compares_across_spaces: ClassVar[bool] = False

    def _teacher_term(
        self, student: TupleDescriptors, teacher: TupleDescriptors, compared: TupleDescriptors
    ) -> tuple[Tensor, Terms]:
        rkd = rkd_distance_loss(flatten_tuples(student), flatten_tuples(teacher))
        return self.w_rkd * rkd, {"rkd": rkd}

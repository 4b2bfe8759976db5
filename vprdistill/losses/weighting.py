"""StructVPR's sample partition and weighting of the distillation loss (METHODS §5, our specification).

The StructVPR paper partitions samples and weights each one's distillation loss, but its
exact function is not available; this is the project's own specification.

For each tuple, ``r_T`` is the rank of the true positive among the tuple's candidates
(positive + valid negatives) under the teacher (seg-branch), ``r_S`` the same under the
student (RGB branch); rank 0 means "right". The groups and their default weights:

============================  ===============================  =====================
group                         meaning                          default weight
============================  ===============================  =====================
teacher_right_student_wrong   the knowledge the student lacks  1.0
both_right                    keeps what the student knows     0.5
teacher_wrong_student_right   the teacher would mislead        0.0
both_wrong                    useful only if r_T < r_S         0.5 there, else 0.0
============================  ===============================  =====================

A weighting is a named component built by :func:`build_sample_weighting`; ``uniform``
(all weights 1) is the ablation baseline. Add a new one to ``SAMPLE_WEIGHTINGS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from vprdistill.losses.base import build_named

GROUP_NAMES: tuple[str, ...] = (
    "teacher_right_student_wrong",
    "both_right",
    "teacher_wrong_student_right",
    "both_wrong",
)
TEACHER_RIGHT_STUDENT_WRONG, BOTH_RIGHT, TEACHER_WRONG_STUDENT_RIGHT, BOTH_WRONG = range(len(GROUP_NAMES))


def compute_ranks(anchor: Tensor, candidates: Tensor, candidate_mask: Tensor | None = None) -> Tensor:
    """Rank of each tuple's positive among its candidates by Euclidean distance to the anchor.

    The rank is the number of valid negatives at least as close to the anchor as the
    positive: ties count *against* the positive, so a model that cannot tell the
    positive from a negative is never "right". A collapsed model, whose descriptors are
    all equal, ranks every positive last. On L2-normalised descriptors this is the order
    of retrieval by inner product too.

    Args:
        anchor: ``(B, D)`` query descriptors.
        candidates: ``(B, K, D)`` candidates, the positive at index 0.
        candidate_mask: ``(B, K)`` bool, True for valid candidates; None means all are.

    Returns:
        ``(B,)`` long ranks, 0 = the positive comes first.
    """
    if anchor.dim() != 2 or candidates.dim() != 3 or candidates.shape[0] != anchor.shape[0]:
        raise ValueError(
            f"compute_ranks: expected anchor (B, D) and candidates (B, K, D), got "
            f"{tuple(anchor.shape)} and {tuple(candidates.shape)}"
        )
    with torch.no_grad():
        # The exact form, not the matrix-product shortcut, so near-ties are not flipped by rounding.
        distances = torch.cdist(anchor.unsqueeze(1), candidates, compute_mode="donot_use_mm_for_euclid_dist").squeeze(1)
        not_farther = distances <= distances[:, :1]
        not_farther[:, 0] = False  # the positive is not its own competitor
        if candidate_mask is not None:
            not_farther = not_farther & candidate_mask
        return not_farther.sum(dim=1)


def assign_groups(r_teacher: Tensor, r_student: Tensor) -> Tensor:
    """Partition group of each tuple from the teacher's and student's ranks: ``(B,)`` long ids into ``GROUP_NAMES``."""
    if r_teacher.shape != r_student.shape or r_teacher.dim() != 1:
        raise ValueError(
            f"assign_groups: expected two (B,) rank tensors, got {tuple(r_teacher.shape)} and {tuple(r_student.shape)}"
        )
    teacher_right = r_teacher == 0
    student_right = r_student == 0
    groups = torch.full_like(r_teacher, BOTH_WRONG, dtype=torch.long)
    groups[teacher_right & ~student_right] = TEACHER_RIGHT_STUDENT_WRONG
    groups[teacher_right & student_right] = BOTH_RIGHT
    groups[~teacher_right & student_right] = TEACHER_WRONG_STUDENT_RIGHT
    return groups


def partition_stats(groups: Tensor, weights: Tensor, r_teacher: Tensor, r_student: Tensor) -> dict[str, float]:
    """Statistics to log: ``share/<group>`` (shares of the batch, summing to 1), ``mean_weight``,
    and ``both_wrong_teacher_better_share`` (share of the batch both wrong with r_T < r_S)."""
    count = max(groups.numel(), 1)
    teacher_better = (groups == BOTH_WRONG) & (r_teacher < r_student)
    sums = torch.cat(
        [
            torch.bincount(groups, minlength=len(GROUP_NAMES)).float(),
            teacher_better.sum().reshape(1).float(),
            weights.detach().sum().reshape(1).float(),
        ]
    ).tolist()  # one device sync for all statistics
    stats = {f"share/{name}": sums[index] / count for index, name in enumerate(GROUP_NAMES)}
    stats["both_wrong_teacher_better_share"] = sums[len(GROUP_NAMES)] / count
    stats["mean_weight"] = sums[-1] / count
    return stats


class SampleWeighting(Protocol):
    """Maps the ranks of a batch to per-sample distillation weights and statistics to log."""

    def __call__(self, r_teacher: Tensor, r_student: Tensor) -> tuple[Tensor, dict[str, float]]: ...


@dataclass(frozen=True)
class UniformWeighting:
    """Every sample weighs 1: the ablation baseline. Group statistics are still reported."""

    def __call__(self, r_teacher: Tensor, r_student: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``(B,)`` ranks -> ``(B,)`` weights of 1 and the partition statistics."""
        groups = assign_groups(r_teacher, r_student)
        weights = torch.ones(groups.shape, dtype=torch.float32, device=groups.device)
        return weights, partition_stats(groups, weights, r_teacher, r_student)


@dataclass(frozen=True)
class PartitionWeighting:
    """Per-group weights (our specification of StructVPR's weighting; see the module docstring).

    Attributes:
        teacher_right_student_wrong: weight of tuples the teacher ranks right and the student wrong.
        both_right: weight of tuples both rank right.
        teacher_wrong_student_right: weight of tuples only the student ranks right.
        both_wrong: weight of tuples both rank wrong where the teacher ranks the positive better (r_T < r_S).
        both_wrong_teacher_not_better: weight of the other both-wrong tuples (r_T >= r_S).
    """

    teacher_right_student_wrong: float = 1.0
    both_right: float = 0.5
    teacher_wrong_student_right: float = 0.0
    both_wrong: float = 0.5
    both_wrong_teacher_not_better: float = 0.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"PartitionWeighting.{name}: weights must be >= 0, got {value}")

    def __call__(self, r_teacher: Tensor, r_student: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``(B,)`` ranks -> ``(B,)`` float weights (no gradient) and the partition statistics."""
        groups = assign_groups(r_teacher, r_student)
        group_weights = torch.tensor(
            [self.teacher_right_student_wrong, self.both_right, self.teacher_wrong_student_right, self.both_wrong],
            dtype=torch.float32,
            device=groups.device,
        )
        weights = group_weights[groups]
        teacher_not_better = (groups == BOTH_WRONG) & (r_teacher >= r_student)
        weights = torch.where(teacher_not_better, torch.full_like(weights, self.both_wrong_teacher_not_better), weights)
        return weights, partition_stats(groups, weights, r_teacher, r_student)


SAMPLE_WEIGHTINGS: dict[str, Callable[..., SampleWeighting]] = {
    "uniform": UniformWeighting,
    "partition": PartitionWeighting,
}


def build_sample_weighting(name: str, **params: float) -> SampleWeighting:
    """Build a registered sample weighting by name, e.g. ``build_sample_weighting("partition", both_right=0.3)``.

    Raises:
        ValueError: unknown name or parameter.
    """
    return build_named(SAMPLE_WEIGHTINGS, name, params, "sample weighting")

from __future__ import annotations

import pytest
import torch

from tests.losses.tuples import tensor
from vprdistill.losses import (
    GROUP_NAMES,
    PartitionWeighting,
    assign_groups,
    build_sample_weighting,
    compute_ranks,
)

# One tuple per case: (r_T, r_S) → group, default weight.
R_TEACHER = torch.tensor([0, 0, 2, 1, 3, 2])
R_STUDENT = torch.tensor([1, 0, 0, 2, 1, 2])
# teacher right/student wrong, both right, teacher wrong/student right,
# both wrong with r_T < r_S, both wrong with r_T > r_S, both wrong with r_T = r_S.
EXPECTED_GROUPS = [
    "teacher_right_student_wrong",
    "both_right",
    "teacher_wrong_student_right",
    "both_wrong",
    "both_wrong",
    "both_wrong",
]


def test_groups_from_ranks() -> None:
    groups = assign_groups(R_TEACHER, R_STUDENT)
    assert [GROUP_NAMES[i] for i in groups.tolist()] == EXPECTED_GROUPS


def test_partition_gives_each_group_its_default_weight() -> None:
    weights, stats = build_sample_weighting("partition")(R_TEACHER, R_STUDENT)
    assert weights.tolist() == [1.0, 0.5, 0.0, 0.5, 0.0, 0.0]
    assert not weights.requires_grad
    assert stats["share/teacher_right_student_wrong"] == pytest.approx(1 / 6)
    assert stats["share/both_right"] == pytest.approx(1 / 6)
    assert stats["share/teacher_wrong_student_right"] == pytest.approx(1 / 6)
    assert stats["share/both_wrong"] == pytest.approx(3 / 6)
    assert sum(stats[f"share/{name}"] for name in GROUP_NAMES) == pytest.approx(1.0)
    assert stats["both_wrong_teacher_better_share"] == pytest.approx(1 / 6)
    assert stats["mean_weight"] == pytest.approx((1.0 + 0.5 + 0.5) / 6)


def test_partition_weights_are_configurable() -> None:
    weighting = build_sample_weighting(
        "partition",
        teacher_right_student_wrong=2.0,
        both_right=0.3,
        teacher_wrong_student_right=0.1,
        both_wrong=0.7,
        both_wrong_teacher_not_better=0.2,
    )
    weights, _ = weighting(R_TEACHER, R_STUDENT)
    assert weights.tolist() == pytest.approx([2.0, 0.3, 0.1, 0.7, 0.2, 0.2])


def test_uniform_gives_ones_and_still_reports_groups() -> None:
    weights, stats = build_sample_weighting("uniform")(R_TEACHER, R_STUDENT)
    assert weights.tolist() == [1.0] * 6
    assert stats["mean_weight"] == 1.0
    assert sum(stats[f"share/{name}"] for name in GROUP_NAMES) == pytest.approx(1.0)
    assert stats["share/both_wrong"] == pytest.approx(0.5)


def test_compute_ranks_on_a_constructed_example() -> None:
    anchor = tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    candidates = tensor(
        [
            # squared distances to the anchor: positive 0.4, negatives 0.8 and 0 → rank 1
            [[0.8, 0.6], [0.6, 0.8], [1.0, 0.0]],
            # positive 0, negatives 2 and 0.4 → rank 0
            [[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]],
            # positive 2, negatives 0.4 and 0.8 → rank 2
            [[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]],
        ]
    )
    assert compute_ranks(anchor, candidates).tolist() == [1, 0, 2]
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, True]])
    assert compute_ranks(anchor, candidates, mask).tolist() == [0, 0, 1]


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="unknown name"):
        build_sample_weighting("focal")
    with pytest.raises(ValueError, match="bad parameters"):
        build_sample_weighting("partition", harmful=0.0)
    with pytest.raises(ValueError, match="both_right"):
        PartitionWeighting(both_right=-0.5)
    with pytest.raises(ValueError, match="assign_groups"):
        assign_groups(torch.tensor([0, 1]), torch.tensor([0]))


def test_ties_count_against_the_positive() -> None:
    anchor = tensor([[1.0, 0.0], [1.0, 0.0]])
    candidates = tensor(
        [
            # the positive and the first negative are equally far: a tie, counted as a miss → rank 1
            [[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]],
            # every candidate equal (a collapsed model): rank = number of valid negatives
            [[0.6, 0.8], [0.6, 0.8], [0.6, 0.8]],
        ]
    )
    assert compute_ranks(anchor, candidates).tolist() == [1, 2]
    mask = torch.tensor([[True, True, True], [True, False, True]])
    assert compute_ranks(anchor, candidates, mask).tolist() == [1, 1]

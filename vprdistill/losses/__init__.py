"""Losses for training place descriptors from mined tuples: triplet, TSCM KD variants, RKD, StructVPR distillation.

Every loss is called as ``loss(student: TupleDescriptors, teacher: TupleDescriptors | None)``
and returns a :class:`LossOutput`; :func:`build_loss` picks one by name from a config::

    build_loss({"name": "soft_cross_metric", "margin": 0.1, "w_cm": 1.0})
    build_loss({"name": "structural", "temperature": 0.07, "weighting": {"name": "partition"}})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from vprdistill.losses.base import TeacherTermLoss, build_named
from vprdistill.losses.cross_metric import CrossMetricDistillationLoss, cross_metric_distance
from vprdistill.losses.kd_variants import KD_NAMES, KD_VARIANTS, build_kd_loss
from vprdistill.losses.regression import descriptor_regression
from vprdistill.losses.rkd import RelationalDistillationLoss, rkd_distance_loss
from vprdistill.losses.structural import StructuralDistillationLoss, similarity_distribution_kl
from vprdistill.losses.triplet import triplet_margin_loss
from vprdistill.losses.types import LossOutput, TupleDescriptors
from vprdistill.losses.weighting import (
    GROUP_NAMES,
    SAMPLE_WEIGHTINGS,
    PartitionWeighting,
    SampleWeighting,
    UniformWeighting,
    assign_groups,
    build_sample_weighting,
    compute_ranks,
)

# The type of every tuple loss (its call convention: TeacherTermLoss's docstring).
DistillationLoss = TeacherTermLoss

LOSS_REGISTRY: dict[str, Callable[..., DistillationLoss]] = {
    "triplet": partial(build_kd_loss, "none"),
    **{name: partial(build_kd_loss, name) for name in KD_NAMES},
    "structural": StructuralDistillationLoss,
}


def build_loss(config: Mapping[str, Any]) -> DistillationLoss:
    """Build a loss from ``{"name": ..., **params}``; names are the keys of ``LOSS_REGISTRY``.

    ``triplet`` (the baseline, same as the ``none`` KD variant), the TSCM variants ``none``,
    ``soft``, ``cross_metric``, ``soft_cross_metric``, ``official``, ``rkd``, and StructVPR's
    ``structural``.

    Raises:
        ValueError: missing or unknown name, or parameters the loss does not take.
    """
    params = dict(config)
    name = params.pop("name", None)
    if name is None:
        raise ValueError(f"loss config: missing 'name'; known: {sorted(LOSS_REGISTRY)}")
    return build_named(LOSS_REGISTRY, name, params, "loss config")


__all__ = [
    "GROUP_NAMES",
    "KD_NAMES",
    "KD_VARIANTS",
    "LOSS_REGISTRY",
    "SAMPLE_WEIGHTINGS",
    "CrossMetricDistillationLoss",
    "DistillationLoss",
    "LossOutput",
    "PartitionWeighting",
    "RelationalDistillationLoss",
    "SampleWeighting",
    "StructuralDistillationLoss",
    "TeacherTermLoss",
    "TupleDescriptors",
    "UniformWeighting",
    "assign_groups",
    "build_kd_loss",
    "build_loss",
    "build_named",
    "build_sample_weighting",
    "compute_ranks",
    "cross_metric_distance",
    "descriptor_regression",
    "rkd_distance_loss",
    "similarity_distribution_kl",
    "triplet_margin_loss",
]

"""The KD variants of TSCM's ablation table, as named configurations of one factory.

=================  =========================================  ========================
name               loss                                       fixed settings
=================  =========================================  ========================
none               triplet only                               w_soft = w_cm = 0
soft               hard + soft                                w_cm = 0
cross_metric       hard + cross-metric                        w_soft = 0
soft_cross_metric  hard + soft + cross-metric (the paper)     form = paper
official           the official code's 0.5·(margin + D)²     form = official
rkd                hard + distance-wise RKD                   (RelationalDistillationLoss)
=================  =========================================  ========================
"""

from __future__ import annotations

from typing import Any

from vprdistill.losses.base import TeacherTermLoss, build_named
from vprdistill.losses.cross_metric import CrossMetricDistillationLoss
from vprdistill.losses.rkd import RelationalDistillationLoss

KD_VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"form": "paper", "w_soft": 0.0, "w_cm": 0.0},
    "soft": {"form": "paper", "w_cm": 0.0},
    "cross_metric": {"form": "paper", "w_soft": 0.0},
    "soft_cross_metric": {"form": "paper"},
    "official": {"form": "official"},
}
KD_NAMES: tuple[str, ...] = (*KD_VARIANTS, "rkd")
_KD_CLASSES = {**dict.fromkeys(KD_VARIANTS, CrossMetricDistillationLoss), "rkd": RelationalDistillationLoss}


def build_kd_loss(name: str, **params: Any) -> TeacherTermLoss:
    """Build a TSCM ablation variant, e.g. ``build_kd_loss("soft", margin=0.1, w_soft=0.5)``.

    ``params`` are the constructor arguments of :class:`CrossMetricDistillationLoss`
    (``margin``, ``w_hard``, ``w_soft``, ``w_cm``) or, for ``rkd``, of
    :class:`RelationalDistillationLoss` (``margin``, ``w_hard``, ``w_rkd``).

    Raises:
        ValueError: unknown name, unknown parameter, or a parameter that contradicts the
            variant (for example ``w_cm=1`` for ``soft``).
    """
    fixed = KD_VARIANTS.get(name, {})
    for key, value in params.items():
        if key in fixed and value != fixed[key]:
            raise ValueError(f"KD loss {name!r} fixes {key}={fixed[key]!r}, got {key}={value!r}; pick another variant")
    return build_named(_KD_CLASSES, name, {**params, **fixed}, "KD loss")

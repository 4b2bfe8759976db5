"""StructVPR stage-2 distillation: weighted structural knowledge from the seg-branch (METHODS §5).

The paper's exact loss is not available to this project; this is **our specification**::

    L_total = w_hard·triplet(student) + Σ_b weight_b·(w_kd·KL_b + w_regression·REG_b) / Σ_b weight_b
              (the weighted term is 0 when Σ_b weight_b = 0)
    KL_b    = KL(P_T || P_S),  P = softmax over the tuple's candidates (positive, then negatives)
              of cos(anchor, candidate) / τ
    REG_b   = ||S(a) − T(a)||² + ||S(p) − T(p)||² + mean_n ||S(n) − T(n)||²   (optional, same dims only)

``weight_b`` comes from a named sample weighting (:mod:`vprdistill.losses.weighting`),
computed from the ranks of the positive under each model and carrying no gradient.
Dividing by the weights' sum, not the batch size, keeps the distillation at the same
strength whatever the weighting: a partition that keeps half the tuples distils those
tuples as strongly as ``uniform`` distils all of them, so the two are compared at equal
strength and differ only in *which* tuples teach.
Because the KL compares similarity distributions, the seg-branch (teacher) may have a
different descriptor dimension from the RGB branch (student). The regression compares
descriptors directly: for a teacher of another dimension it reads ``projected_student``
(the student's tuples through a learned projection into the teacher's space), while the
KL and the ranks stay on the student's own descriptors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vprdistill.losses.base import TeacherTermLoss
from vprdistill.losses.regression import descriptor_regression
from vprdistill.losses.types import Terms, TupleDescriptors
from vprdistill.losses.weighting import SampleWeighting, build_sample_weighting, compute_ranks


def _similarity_logits(anchor: Tensor, candidates: Tensor, temperature: float, mask: Tensor | None) -> Tensor:
    logits = F.cosine_similarity(anchor.unsqueeze(1), candidates, dim=-1) / temperature
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits


def similarity_distribution_kl(
    student_anchor: Tensor,
    student_candidates: Tensor,
    teacher_anchor: Tensor,
    teacher_candidates: Tensor,
    temperature: float = 0.07,
    candidate_mask: Tensor | None = None,
) -> Tensor:
    """Per tuple ``KL(P_teacher || P_student)`` of the query-to-candidate similarity distributions (our specification).

    ``P = softmax_k(cos(anchor, candidate_k) / temperature)`` over the tuple's valid
    candidates. The teacher is the target and gets no gradient.

    Args:
        student_anchor: ``(B, Ds)`` student query descriptors.
        student_candidates: ``(B, K, Ds)`` student candidate descriptors, the positive first.
        teacher_anchor: ``(B, Dt)`` teacher query descriptors (Dt may differ from Ds).
        teacher_candidates: ``(B, K, Dt)`` teacher candidate descriptors, same order.
        temperature: softmax temperature τ > 0.
        candidate_mask: ``(B, K)`` bool, True for valid candidates; the positive (index 0) must be valid.

    Returns:
        ``(B,)`` KL divergences (≥ 0), unweighted.
    """
    if temperature <= 0:
        raise ValueError(f"similarity_distribution_kl: temperature must be > 0, got {temperature}")
    if student_candidates.dim() != 3 or teacher_candidates.dim() != 3:
        raise ValueError(
            "similarity_distribution_kl: candidates must be (B, K, D), got "
            f"{tuple(student_candidates.shape)} and {tuple(teacher_candidates.shape)}"
        )
    if student_candidates.shape[:2] != teacher_candidates.shape[:2]:
        raise ValueError(
            f"similarity_distribution_kl: student candidates {tuple(student_candidates.shape[:2])} and teacher "
            f"candidates {tuple(teacher_candidates.shape[:2])} must have the same (B, K)"
        )
    if candidate_mask is not None and not bool(candidate_mask[:, 0].all()):
        raise ValueError("similarity_distribution_kl: candidate_mask[:, 0] (the positive) must be True for every tuple")
    with torch.no_grad():
        teacher_logits = _similarity_logits(teacher_anchor, teacher_candidates, temperature, candidate_mask)
        teacher_probabilities = F.softmax(teacher_logits, dim=-1)
    student_log_probabilities = F.log_softmax(
        _similarity_logits(student_anchor, student_candidates, temperature, candidate_mask), dim=-1
    )
    if candidate_mask is not None:
        # Masked candidates have P_T = 0; a finite placeholder keeps 0·(−inf) out of kl_div.
        student_log_probabilities = student_log_probabilities.masked_fill(~candidate_mask, 0.0)
    return F.kl_div(student_log_probabilities, teacher_probabilities, reduction="none").sum(dim=-1)


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``Σ wᵢ·vᵢ / Σ wᵢ`` of ``(B,)`` values and ``(B,)`` non-negative weights; 0 when ``Σ wᵢ = 0``.

    The zero case keeps the graph (a zero that still depends on ``values``), so a batch
    the weighting leaves out entirely contributes no gradient rather than NaN.
    """
    total_weight = weights.sum()
    weighted_sum = (weights * values).sum()
    return torch.where(
        total_weight > 0, weighted_sum / total_weight.clamp_min(torch.finfo(values.dtype).tiny), 0.0 * weighted_sum
    )


def _build_weighting(weighting: str | Mapping[str, Any] | SampleWeighting) -> SampleWeighting:
    if isinstance(weighting, (str, Mapping)):
        params = {"name": weighting} if isinstance(weighting, str) else dict(weighting)
        if "name" not in params:
            raise ValueError(f"StructuralDistillationLoss.weighting: a mapping needs a 'name', got {sorted(params)}")
        return build_sample_weighting(params.pop("name"), **params)
    if callable(weighting):
        return weighting
    raise ValueError(
        f"StructuralDistillationLoss.weighting: expected a name, a mapping or a callable, got {weighting!r}"
    )


@dataclass
class StructuralDistillationLoss(TeacherTermLoss):
    """StructVPR stage 2 (our specification): triplet + per-sample weighted similarity-distribution KL.

    Call with ``(student, teacher)`` where the teacher is the frozen seg-branch. Terms:
    ``hard``, ``kl`` (unweighted batch mean), ``weighted_kl`` (``Σ w·KL / Σ w``), ``regression`` (when its
    weight is > 0), ``distillation`` (the weighted term added to the total), ``total``,
    and the weighting's statistics prefixed ``partition/``.

    Attributes:
        margin: triplet margin.
        w_hard: weight of the student's triplet loss.
        w_kd: weight of the KL term.
        temperature: softmax temperature τ of the similarity distributions.
        w_regression: weight of the optional descriptor regression (needs equal dimensions).
        weighting: sample weighting: a registered name (``"partition"``, ``"uniform"``), a mapping
            ``{"name": ..., **params}``, or a weighting object.
    """

    margin: float = 0.1
    w_hard: float = 1.0
    w_kd: float = 1.0
    temperature: float = 0.07
    w_regression: float = 0.0
    weighting: str | Mapping[str, Any] | SampleWeighting = "partition"
    _weighting: SampleWeighting = field(init=False, repr=False)
    teacher_weights: ClassVar[tuple[str, ...]] = ("w_kd", "w_regression")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"StructuralDistillationLoss.temperature: must be > 0, got {self.temperature}")
        self._weighting = _build_weighting(self.weighting)

    @property
    def compares_across_spaces(self) -> bool:
        """Only the optional regression compares descriptors directly; the KL compares similarities."""
        return self.w_regression > 0

    def _teacher_term(
        self, student: TupleDescriptors, teacher: TupleDescriptors, compared: TupleDescriptors
    ) -> tuple[Tensor, Terms]:
        """``Σ_b weight_b·(w_kd·KL_b + w_regression·REG_b) / Σ_b weight_b``; ``compared`` feeds the regression only."""
        if self.w_regression > 0 and teacher.dim != compared.dim:
            raise ValueError(
                f"StructuralDistillationLoss.w_regression={self.w_regression} needs equal descriptor "
                f"dimensions, got student {compared.dim} and teacher {teacher.dim}; set w_regression to 0 "
                "or give the teacher a projection of the student (projection: auto)"
            )
        student_candidates, mask = student.candidates()
        teacher_candidates, _ = teacher.candidates()
        kl = similarity_distribution_kl(
            student.anchor, student_candidates, teacher.anchor, teacher_candidates, self.temperature, mask
        )
        r_teacher = compute_ranks(teacher.anchor, teacher_candidates, mask)
        r_student = compute_ranks(student.anchor, student_candidates, mask)
        weights, stats = self._weighting(r_teacher, r_student)
        weights = weights.detach().to(dtype=kl.dtype, device=kl.device)
        per_sample = self.w_kd * kl
        terms: Terms = {"kl": kl.mean(), "weighted_kl": weighted_mean(kl, weights)}
        if self.w_regression > 0:
            regression = descriptor_regression(compared, teacher)
            terms["regression"] = regression.mean()
            per_sample = per_sample + self.w_regression * regression
        terms["distillation"] = distillation = weighted_mean(per_sample, weights)
        terms.update({f"partition/{key}": value for key, value in stats.items()})
        return distillation, terms

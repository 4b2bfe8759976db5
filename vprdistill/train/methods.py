"""What a method contributes to the one training loop: frozen teachers and the loss of a batch.

Methods are configs, not subclasses. Two names exist:

- ``triplet``: the student alone, triplet loss on GPS-labelled tuples
  (the baseline, and StructVPR's stage 1 when ``data.input: seg``).
- ``distill``: the student plus one or more frozen teachers, each with the
  loss that ties the student to it. TSCM is one RGB teacher with a
  cross-metric loss; StructVPR stage 2 is one segmentation teacher with the
  weighted structural loss; both at once is two teachers::

      method:
        name: distill
        teachers:
          - run: runs/tscm-teacher
            input: rgb
            loss: {name: soft_cross_metric}
          - run: runs/structvpr-seg
            input: seg
            weight: 1.0
            loss: {name: structural, weighting: {name: partition}}
        w_hard: 1.0

The method composes the loss, in the shape of pytorch-metric-learning's
``MultipleLosses``: the student's own triplet term, computed once, plus each
teacher's pure teacher term with its weight::

    total = w_hard·triplet(S; margin) + Σᵢ weightᵢ·KDᵢ(S, Tᵢ)

``method.w_hard`` and ``method.margin`` (default 0.1) set the triplet term and
``method.teachers[i].weight`` (default 1) each teacher's; a teacher's ``loss``
then gives only its teacher term (``w_soft``, ``w_cm``, ``w_kd``, ...). A config
of the earlier form, with ``w_hard`` inside the teachers' losses and no
``method.w_hard``, gives the same total: ``w_hard`` is the sum of the teachers'
``w_hard`` (each 1 unless given) and ``margin`` their common margin (the
teachers with ``w_hard > 0`` must agree on it). With ``method.w_hard`` or
``method.margin`` given, a teacher's loss may only say ``w_hard: 0``.
With two or more teachers, each teacher's terms are logged under its input kind
and position in the list (``rgb0/soft``, ``seg1/kl``); ``<teacher>/hard`` is the
one triplet value and ``<teacher>/total`` the teacher's weighted term plus its
share of the triplet term (its own ``w_hard`` in the earlier form, an equal
share of ``method.w_hard`` otherwise), so that ``total`` is their sum.

With place batches (``data.places``) the student's own term is the
multi-similarity loss and miner (``loss: {name: multi_similarity, ...}`` for
``triplet``; ``metric_loss`` for ``distill``, null for none), and the tuple
terms apply to in-batch tuples (``losses.metric.in_batch_tuples``).

The teacher spec (``run``, ``torch_hub``, ``hf_hub`` or ``onnx``; ``input``,
``loss``, ``weight``, ``image_size``, ``cache_dir``, ``mean``, ``std``,
``output``, ``projection``) is described in docs/RECIPES.md. A teacher is
re-run on each batch only when it reads exactly what the student reads and
augmentation makes each view unique; otherwise its descriptors come from its
cache of the un-augmented split. A teacher of another descriptor size gets a
learned projection ``normalize(W·s + b)``, D_s → D_t, for the terms that
compare descriptors directly (soft, cross-metric, official, structural
regression), trained with the student, kept in the loop state for resuming,
never saved with the student's weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.place_images import PlaceImages
from vprdistill.losses import build_loss
from vprdistill.losses.base import TeacherTermLoss, build_named
from vprdistill.losses.metric import MultiSimilarityLoss, in_batch_tuples
from vprdistill.losses.triplet import triplet_margin_loss
from vprdistill.losses.types import LossOutput, Terms, TupleDescriptors
from vprdistill.train.config import TrainConfig
from vprdistill.train.place_batches import PlaceBatch
from vprdistill.train.teacher import FrozenTeacher
from vprdistill.train.tuples import TupleBatch, gather_cached_descriptors, split_tuple_descriptors
from vprdistill.utils.logging import get_logger

logger = get_logger("method")

METRIC_LOSS = "multi_similarity"


def build_metric_loss(spec: dict[str, Any] | None, where: str) -> MultiSimilarityLoss | None:
    """The label-based loss of place batches from ``{name: multi_similarity, ...}``; None for null."""
    if spec is None:
        return None
    params = dict(spec)
    name = params.pop("name", None)
    if name != METRIC_LOSS:
        raise ValueError(f"{where}: the place-batch loss must be named {METRIC_LOSS!r}, got {name!r}")
    return build_named({METRIC_LOSS: MultiSimilarityLoss}, name, params, where)


METHOD_NAMES = ("triplet", "distill")
TEACHER_SOURCES = ("run", "torch_hub", "hf_hub", "onnx")
EXTERNAL_ONLY_KEYS = ("kwargs", "output", "mean", "std")
TEACHER_OPTIONS = ("input", "loss", "weight", "image_size", "cache_dir")
TEACHER_KEYS = (*TEACHER_SOURCES, *TEACHER_OPTIONS, *EXTERNAL_ONLY_KEYS, "projection")


class DescriptorProjection(nn.Module):
    """The student's descriptors carried into a teacher's space: ``(..., D_s) -> (..., D_t)``, unit L2 norm.

    ``normalize(W·s + b)``: a linear map learned with the student, so that losses comparing
    descriptors directly work with a teacher of another size. Used in training only.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(descriptors), p=2, dim=-1)


@dataclass
class TeacherSlot:
    """One frozen teacher, its teacher term and weight, and its cached descriptors."""

    name: str
    teacher: FrozenTeacher
    loss: TeacherTermLoss
    use_cache: bool
    projection: DescriptorProjection | None = None  # student → teacher space, for direct comparisons
    weight: float = 1.0  # of the teacher term in the method's sum
    hard_share: float = 0.0  # the part of the method's triplet term logged under this teacher
    queries: torch.Tensor | None = None  # (M, D) cached descriptors of the training queries
    database: torch.Tensor | None = None  # (N, D)
    places: torch.Tensor | None = None  # (N, D) cached descriptors of the place images (place batches)

    def teacher_term(self, student: TupleDescriptors, teacher: TupleDescriptors) -> tuple[torch.Tensor, Terms]:
        """The loss's teacher term (before ``weight``) through the slot's projection, if any; 0 if it has none."""
        if not self.loss.has_teacher_term:
            return student.anchor.new_zeros(()), {}
        projected = student.map(self.projection) if self.projection is not None else None
        return self.loss.teacher_term(student, teacher, projected)


def _number(value: Any, where: str, positive: bool = False) -> float:
    """A weight (>= 0) or margin (> 0) of the method config; ValueError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ValueError(f"{where}: expected a number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _teacher_source(spec: dict[str, Any], where: str) -> tuple[str, Any]:
    """The one source key of a teacher spec and its value; ValueError naming the field otherwise."""
    named = [key for key in TEACHER_SOURCES if key in spec]
    if not named:
        raise ValueError(
            f"{where}: missing 'run' (the teacher's run folder or checkpoint), or an external teacher: "
            "'torch_hub', 'hf_hub' or 'onnx'"
        )
    if len(named) > 1:
        raise ValueError(f"{where}: give one teacher source, got both {' and '.join(repr(k) for k in named)}")
    kind = named[0]
    value = spec[kind]
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{where}.{kind}: expected a non-empty string, got {value!r}")
    given = [key for key in EXTERNAL_ONLY_KEYS if key in spec] if kind == "run" else []
    if given:
        raise ValueError(f"{where}: {', '.join(given)} apply to external teachers (torch_hub, hf_hub, onnx), not 'run'")
    if "kwargs" in spec and not isinstance(spec["kwargs"], dict):
        raise ValueError(f"{where}.kwargs: expected a mapping, got {spec['kwargs']!r}")
    return kind, value


class TrainingMethod:
    """The loss side of a training run, built from ``config.method``."""

    def __init__(self, config: TrainConfig, device: torch.device, student_dim: int | None = None) -> None:
        """Build the method of ``config.method``.

        Args:
            student_dim: the student's descriptor size D_s; needed when a teacher gets a
                projection (its D_t differs, or ``projection: true``).
        """
        self.config, self.device, self.student_dim = config, device, student_dim
        spec = dict(config.method)
        self.name = spec.pop("name")
        if self.name not in METHOD_NAMES:
            raise ValueError(f"method.name must be one of {', '.join(METHOD_NAMES)}, got {self.name!r}")
        # Mining with the teacher reads the first teacher's cache, whatever the batches use.
        self.mines_with_teacher = config.mining.cache_model == "teacher"
        if self.mines_with_teacher and self.name != "distill":
            raise ValueError(
                f"mining.cache_model: teacher mines with the first teacher's descriptors, so it needs "
                f"method.name: distill (got {self.name!r}); use mining.cache_model: student"
            )
        self.teachers: list[TeacherSlot] = []
        # The projections of all slots, by slot name: what the optimizer trains and the loop state keeps.
        self.projections = nn.ModuleDict()
        self.place_batches = bool(config.data.places)
        self.num_negatives = config.mining.num_negatives
        self.metric_loss: MultiSimilarityLoss | None = None
        self.student_loss: Any = None
        # The student's own triplet term of ``distill`` (method.w_hard, method.margin). Its margin is
        # never mining.margin: the mining margin and the loss margin are separate settings.
        self.w_hard, self.margin = 0.0, 0.1
        if self.name == "triplet":
            self._build_student_loss(spec.pop("loss", None))
        else:
            self._build_distill(spec)
        if spec:
            raise ValueError(f"method '{self.name}': unknown key(s) {', '.join(sorted(spec))}")

    def _build_student_loss(self, loss_spec: dict[str, Any] | None) -> None:
        """``triplet``: the place-batch metric loss or a tuple loss of the student alone."""
        loss_spec = dict(loss_spec or {"name": METRIC_LOSS if self.place_batches else "triplet"})
        if loss_spec.get("name") != METRIC_LOSS:
            self.student_loss = build_loss(loss_spec)
            return
        if not self.place_batches:
            raise ValueError(
                f"method.loss: {METRIC_LOSS} needs place batches (data.places); mined tuples take a tuple "
                "loss such as triplet"
            )
        self.metric_loss = build_metric_loss(loss_spec, "method.loss")

    def _build_distill(self, spec: dict[str, Any]) -> None:
        """``distill``: the teachers, their teacher terms and the student's triplet term."""
        if "metric_loss" in spec and not self.place_batches:
            raise ValueError("method.metric_loss applies to place batches (data.places) only")
        metric_spec = spec.pop("metric_loss", {"name": METRIC_LOSS}) if self.place_batches else None
        self.metric_loss = build_metric_loss(metric_spec, "method.metric_loss")
        teacher_specs = spec.pop("teachers", None)
        if not teacher_specs or not isinstance(teacher_specs, (list, tuple)):
            raise ValueError(
                f"method 'distill' needs a non-empty 'teachers' list, got method.teachers={teacher_specs!r}"
            )
        hard = {key: spec.pop(key) for key in ("w_hard", "margin") if key in spec}
        for position, teacher_spec in enumerate(teacher_specs):
            where = f"method.teachers[{position}]"
            if not isinstance(teacher_spec, dict):
                # A config error, reported like the others (the CLI prints ValueErrors plainly).
                raise ValueError(  # noqa: TRY004
                    f"{where}: expected a mapping with 'run', 'input', 'loss', got {teacher_spec!r}"
                )
            # w_hard: 0 (no triplet term of the teacher's own) agrees with either form.
            loss_spec = teacher_spec.get("loss")
            if hard and isinstance(loss_spec, dict) and loss_spec.get("w_hard", 0) != 0:
                raise ValueError(
                    f"{where}.loss.w_hard: the student's triplet term is the method's (method.w_hard, "
                    f"method.margin, given here: {', '.join(sorted(hard))}); drop w_hard from the teacher's loss"
                )
            self.teachers.append(self._build_slot(position, dict(teacher_spec), where))
        self._set_hard_term(hard)

    def _set_hard_term(self, hard: dict[str, Any]) -> None:
        """``method.w_hard``/``method.margin``, or their translation from the teachers' own ``w_hard`` and margins.

        The earlier form put a triplet term in every teacher's loss: ``Σᵢ w_hardᵢ·triplet(S; marginᵢ)``,
        which is ``(Σᵢ w_hardᵢ)·triplet(S; margin)`` when the margins agree.
        """
        if hard:
            self.w_hard = _number(hard.get("w_hard", 1.0), "method.w_hard")
            self.margin = _number(hard.get("margin", 0.1), "method.margin", positive=True)
            for slot in self.teachers:
                slot.hard_share = self.w_hard / len(self.teachers)
            return
        for slot in self.teachers:
            slot.hard_share = slot.loss.w_hard
        self.w_hard = sum(slot.hard_share for slot in self.teachers)
        margins = sorted({slot.loss.margin for slot in self.teachers if slot.loss.w_hard > 0})
        if len(margins) > 1:
            raise ValueError(
                f"method.teachers: the teachers' losses add triplet terms (w_hard > 0) with different margins "
                f"{margins}; the method computes the student's triplet term once: give method.w_hard and "
                "method.margin, and drop w_hard from the teachers' losses"
            )
        self.margin = margins[0] if margins else self.teachers[0].loss.margin

    def _build_slot(self, position: int, teacher_spec: dict[str, Any], where: str) -> TeacherSlot:
        """One teacher of ``method.teachers``, its loss, weight and projection."""
        config = self.config
        # A misspelt key (say 'inputs: seg') would otherwise fall back to a default silently.
        unknown = sorted(set(teacher_spec) - set(TEACHER_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(TEACHER_KEYS)}")
        kind, location = _teacher_source(teacher_spec, where)
        input_kind = teacher_spec.get("input", "rgb")
        options = {
            "image_size": teacher_spec.get("image_size", config.data.image_size),
            "device": self.device,
            "batch_size": config.eval_batch_size,
            "num_workers": config.data.num_workers,
            "structural_source": config.data.structural_source,
            "cache_dir": teacher_spec.get("cache_dir"),
            "progress": config.progress,
        }
        if kind == "run":
            teacher = FrozenTeacher(location, input_kind, **options)
        else:
            if input_kind != "rgb":
                raise ValueError(f"{where}.input: an external teacher ({kind}) reads RGB images, got {input_kind!r}")
            external = {key: teacher_spec.get(key) for key in EXTERNAL_ONLY_KEYS}  # kwargs, output, mean, std
            try:
                teacher = FrozenTeacher.from_external(kind, location, **external, **options)
            except (FileNotFoundError, ValueError) as error:  # the same error, naming the teacher's field
                raise type(error)(f"{where}: {error}") from error
        loss = build_loss(dict(teacher_spec.get("loss", {"name": "soft_cross_metric"})))
        name = f"{input_kind}{position}"
        projection = self._projection(name, teacher, loss, teacher_spec.get("projection", "auto"), where)
        # The batch holds the student's inputs: a teacher that reads other files
        # (segmentation maps for an RGB student, or RGB for a seg student) or another
        # size cannot be run on it, so its descriptors come from the cache. A teacher
        # that reads the same inputs is re-run only when augmentation makes each view
        # unique; without augmentation the cache holds exactly what it would compute.
        reads_student_inputs = input_kind == config.data.input and teacher.image_size == tuple(
            int(s) for s in config.data.image_size
        )
        use_cache = not (config.data.augment and reads_student_inputs)
        weight = _number(teacher_spec.get("weight", 1.0), f"{where}.weight")
        return TeacherSlot(name, teacher, loss, use_cache, projection, weight)

    def _projection(
        self, name: str, teacher: FrozenTeacher, loss: Any, mode: Any, where: str
    ) -> DescriptorProjection | None:
        """The slot's student → teacher projection, or None (see the module docstring for ``projection``)."""
        if mode != "auto" and not isinstance(mode, bool):
            raise ValueError(f"{where}.projection: expected auto, true or false, got {mode!r}")
        teacher_dim, student_dim = teacher.descriptor_dim, self.student_dim
        if mode is False or not getattr(loss, "compares_across_spaces", False):
            if mode is True:
                raise ValueError(
                    f"{where}.projection: true, but its loss compares no descriptors across the two spaces "
                    "(relational terms read each model's own descriptors)"
                )
            return None
        if mode == "auto" and (student_dim is None or teacher_dim is None or teacher_dim == student_dim):
            return None
        if student_dim is None or teacher_dim is None:
            raise ValueError(
                f"{where}.projection: needs the student's and the teacher's descriptor sizes "
                f"(student {student_dim}, teacher {teacher_dim})"
            )
        projection = DescriptorProjection(int(student_dim), int(teacher_dim)).to(teacher.device)
        self.projections[name] = projection
        logger.info("teacher %s: a learned projection %d -> %d carries the student in", name, student_dim, teacher_dim)
        return projection

    def parameters(self) -> list[nn.Parameter]:
        """The method's own trainable parameters (the teachers' projections), for the student's optimizer."""
        return list(self.projections.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The projections' weights (``<slot>.linear.weight``, ...), kept in the loop state for resuming."""
        return {key: value.detach().cpu() for key, value in self.projections.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the projections saved by :meth:`state_dict` (strict: the same teachers and sizes)."""
        self.projections.load_state_dict(state, strict=True)

    def prepare(self, train_dataset: PlaceDataset | None, places: PlaceImages | None = None) -> None:
        """Compute (or read back) the teachers' descriptor caches of the training split, or of ``places`` (place batches).

        The first teacher's cache of the split is also built when ``mining.cache_model: teacher``,
        even if its batches are re-run for augmentation: mining reads un-augmented images.
        """
        for position, slot in enumerate(self.teachers):
            if places is not None:
                if slot.use_cache:
                    slot.places = slot.teacher.cached_place_descriptors(places.paths, places.seg_paths)
            elif slot.use_cache or (position == 0 and self.mines_with_teacher):
                slot.queries, slot.database = slot.teacher.cached_descriptors(train_dataset)

    def _compose(
        self, student: TupleDescriptors, teachers: Iterable[TupleDescriptors], terms: Terms, teacher_totals: bool
    ) -> torch.Tensor:
        """``w_hard·triplet(S) + Σᵢ weightᵢ·KDᵢ(S, Tᵢ)``, its parts logged in ``terms`` (see the module docstring)."""
        hard = triplet_margin_loss(
            student.anchor, student.positive, student.negatives, self.margin, student.negative_mask
        )
        total = self.w_hard * hard
        several = len(self.teachers) > 1
        if not several:
            terms["hard"] = hard
        for slot, teacher in zip(self.teachers, teachers):
            term, parts = slot.teacher_term(student, teacher)
            total = total + slot.weight * term
            if several:
                parts = {"hard": hard, **parts}
                if teacher_totals:
                    parts["total"] = slot.hard_share * hard.detach() + slot.weight * term.detach()
                parts = {f"{slot.name}/{key}": value for key, value in parts.items()}
            terms.update(parts)
        return total

    def place_loss(self, batch: PlaceBatch, student: torch.Tensor) -> LossOutput:
        """Loss of a place batch given the student's descriptors ``(P·K, D)`` of its images."""
        parts: list[torch.Tensor] = []
        terms: Terms = {}

        def add(output: LossOutput) -> None:
            parts.append(output.total)
            terms.update({key: value for key, value in output.terms.items() if key != "total"})

        if self.metric_loss is not None:
            add(self.metric_loss(student, batch.labels))
        if self.student_loss is not None or self.teachers:
            index = in_batch_tuples(student, batch.labels, self.num_negatives)
            tuples = _index_tuples(student, *index)
            if self.student_loss is not None:
                add(self.student_loss(tuples, None))
            else:
                teachers = (
                    _index_tuples(self._place_rows(slot, batch, student.device), *index) for slot in self.teachers
                )
                parts.append(self._compose(tuples, teachers, terms, teacher_totals=False))
        if not parts:
            raise ValueError("method: place batches need a loss (method.metric_loss or a teacher)")
        return LossOutput.from_tensors(sum(parts[1:], parts[0]), terms)

    @staticmethod
    def _place_rows(slot: TeacherSlot, batch: PlaceBatch, device: torch.device) -> torch.Tensor:
        """The teacher's descriptors ``(P·K, D)`` of a place batch: from its cache, or re-run on the batch."""
        if slot.use_cache:
            return slot.places[batch.image_index].to(device)
        return slot.teacher.describe(batch.images).to(device)

    def mining_descriptors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first teacher's cached descriptors: queries (M, D) and database (N, D), for ``mining.cache_model: teacher``."""
        if not self.teachers:
            raise ValueError("mining.cache_model: teacher needs method.name: distill with at least one teacher")
        if self.teachers[0].queries is None:
            raise RuntimeError("TrainingMethod.mining_descriptors: call prepare(train_dataset) first")
        return self.teachers[0].queries, self.teachers[0].database

    def loss(self, batch: TupleBatch, student: TupleDescriptors) -> LossOutput:
        """Loss of a batch given the student's descriptors of its tuples."""
        if self.student_loss is not None:
            return self.student_loss(student, None)
        teachers = (
            gather_cached_descriptors(slot.queries, slot.database, batch)
            if slot.use_cache
            else split_tuple_descriptors(slot.teacher.describe(batch.images), batch)
            for slot in self.teachers
        )
        terms: Terms = {}
        total = self._compose(student, teachers, terms, teacher_totals=True)
        return LossOutput.from_tensors(total, terms)


def _index_tuples(
    rows: torch.Tensor, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor
) -> TupleDescriptors:
    """In-batch tuples of one model's descriptors ``rows`` ``(B, D)`` from the index tensors of ``in_batch_tuples``."""
    return TupleDescriptors(rows[anchor], rows[positive], rows[negatives], mask)

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
            loss: {name: structural, w_hard: 0.0, weighting: {name: partition}}

The total loss is the sum of each teacher's loss (each loss carries its own
hard triplet weight ``w_hard``, so set it to 0 on all teachers but one). With
two or more teachers, each teacher's terms are logged under its input kind and
position in the list (``rgb0/soft``, ``seg1/kl``, ``rgb0/total``); ``total`` is
the sum.

With place batches (``data.places``: P places × K views with place labels,
GSV-Cities style) the student's own term is the multi-similarity loss and
miner (``loss: {name: multi_similarity, alpha, beta, base, epsilon}`` for
``triplet``; ``metric_loss`` for ``distill``, null for none), and every tuple
loss (each teacher's, or a tuple ``loss`` of ``triplet``) applies to in-batch
tuples: each image an anchor, its least similar view of the same place the
positive, the ``mining.num_negatives`` most similar images of other places the
negatives. A teacher's ``w_hard`` then adds an in-batch triplet term.

A teacher spec names the teacher with exactly one of ``run`` (a run folder or
checkpoint of this package), ``torch_hub`` (``"owner/repo:entry"`` or
``"DIR:entry"``, with optional ``kwargs``), ``hf_hub`` (a timm repo id or a
local folder with ``config.json`` + ``model.safetensors``, optional
``kwargs``) or ``onnx`` (a file); and takes ``input`` (``rgb`` or ``seg``;
external teachers are ``rgb``), ``loss``, ``image_size`` (default: the
student's), ``cache_dir``, and for external teachers ``mean`` and ``std``
(their input normalisation, default ImageNet's) and ``output`` (which element
of a tuple output is the descriptor). docs/RECIPES.md has the full reference.
A teacher is re-run on each batch only when it reads exactly what the student
reads (same input kind and image size) and augmentation makes each view
unique; otherwise its descriptors come from its cache of the un-augmented split.

A teacher whose descriptor size D_t differs from the student's D_s gets a
learned projection ``normalize(W·s + b)``, D_s → D_t, for the loss terms that
compare student and teacher descriptors directly (soft, cross-metric, official,
structural regression); relational terms (RKD distances, the structural KL of
similarities) and the student's own terms read the student's descriptors. The
projections are trained with the student (``TrainingMethod.parameters``), kept
in the run's loop state for resuming, and never saved with the student's
weights. ``projection: auto`` (the default) adds one when the sizes differ and
the loss needs it; ``true`` always (a teacher of the same size but another
space), ``false`` never.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.place_images import PlaceImages
from vprdistill.losses import build_loss
from vprdistill.losses.metric import MultiSimilarityLoss, in_batch_tuples
from vprdistill.losses.types import LossOutput, TupleDescriptors
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
    try:
        return MultiSimilarityLoss(**params)
    except TypeError as error:
        raise ValueError(f"{where}: bad parameters {sorted(params)}: {error}") from error


METHOD_NAMES = ("triplet", "distill")
TEACHER_SOURCES = ("run", "torch_hub", "hf_hub", "onnx")
EXTERNAL_ONLY_KEYS = ("kwargs", "output", "mean", "std")
TEACHER_KEYS = (*TEACHER_SOURCES, "input", "loss", "image_size", "cache_dir", *EXTERNAL_ONLY_KEYS, "projection")


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
    """One frozen teacher, the loss that ties the student to it, and its cached descriptors."""

    name: str
    teacher: FrozenTeacher
    loss: Any
    use_cache: bool
    projection: DescriptorProjection | None = None  # student → teacher space, for direct comparisons
    queries: torch.Tensor | None = None  # (M, D) cached descriptors of the training queries
    database: torch.Tensor | None = None  # (N, D)
    places: torch.Tensor | None = None  # (N, D) cached descriptors of the place images (place batches)

    def compare(self, student: TupleDescriptors, teacher: TupleDescriptors) -> LossOutput:
        """The slot's loss, with the student's tuples carried into the teacher's space where it has a projection."""
        if self.projection is None:
            return self.loss(student, teacher)
        return self.loss(student, teacher, projected_student=student.map(self.projection))


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
    if kind == "run":
        given = [key for key in EXTERNAL_ONLY_KEYS if key in spec]
        if given:
            raise ValueError(
                f"{where}: {', '.join(given)} apply to external teachers (torch_hub, hf_hub, onnx), not 'run'"
            )
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
        # Loss margins come from each loss spec (or the loss's documented default, 0.1), never
        # from mining.margin: the mining margin and the loss margin are separate settings.
        self.teachers: list[TeacherSlot] = []
        # The projections of all slots, by slot name: what the optimizer trains and the loop state keeps.
        self.projections = nn.ModuleDict()
        self.place_batches = bool(config.data.places)
        self.num_negatives = config.mining.num_negatives
        self.metric_loss: MultiSimilarityLoss | None = None
        if self.name == "triplet":
            loss_spec = dict(spec.pop("loss", {"name": METRIC_LOSS if self.place_batches else "triplet"}))
            if loss_spec.get("name") == METRIC_LOSS:
                if not self.place_batches:
                    raise ValueError(
                        f"method.loss: {METRIC_LOSS} needs place batches (data.places); mined tuples take a tuple "
                        "loss such as triplet"
                    )
                self.metric_loss = build_metric_loss(loss_spec, "method.loss")
                self.student_loss = None
            else:
                self.student_loss = build_loss(loss_spec)
        else:
            self.student_loss = None
            if "metric_loss" in spec and not self.place_batches:
                raise ValueError("method.metric_loss applies to place batches (data.places) only")
            metric_spec = spec.pop("metric_loss", {"name": METRIC_LOSS}) if self.place_batches else None
            self.metric_loss = build_metric_loss(metric_spec, "method.metric_loss")
            teacher_specs = spec.pop("teachers", None)
            if not teacher_specs or not isinstance(teacher_specs, (list, tuple)):
                raise ValueError(
                    f"method 'distill' needs a non-empty 'teachers' list, got method.teachers={teacher_specs!r}"
                )
            for position, teacher_spec in enumerate(teacher_specs):
                if not isinstance(teacher_spec, dict):
                    # A config error, reported like the others (the CLI prints ValueErrors plainly).
                    raise ValueError(  # noqa: TRY004
                        f"method.teachers[{position}]: expected a mapping with 'run', 'input', 'loss', "
                        f"got {teacher_spec!r}"
                    )
                teacher_spec = dict(teacher_spec)
                where = f"method.teachers[{position}]"
                # A misspelt key (say 'inputs: seg') would otherwise fall back to a default silently.
                unknown = sorted(set(teacher_spec) - set(TEACHER_KEYS))
                if unknown:
                    raise ValueError(
                        f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(TEACHER_KEYS)}"
                    )
                kind, location = _teacher_source(teacher_spec, where)
                input_kind = teacher_spec.get("input", "rgb")
                loss_spec = dict(teacher_spec.get("loss", {"name": "soft_cross_metric"}))
                options = {
                    "batch_size": config.eval_batch_size,
                    "num_workers": config.data.num_workers,
                    "cache_dir": teacher_spec.get("cache_dir"),
                    "progress": config.progress,
                }
                image_size = teacher_spec.get("image_size", config.data.image_size)
                if kind == "run":
                    teacher = FrozenTeacher(
                        location, input_kind=input_kind, image_size=image_size, device=device,
                        structural_source=config.data.structural_source, **options,
                    )  # fmt: skip
                else:
                    if input_kind != "rgb":
                        raise ValueError(
                            f"{where}.input: an external teacher ({kind}) reads RGB images, got {input_kind!r}"
                        )
                    try:
                        teacher = FrozenTeacher.from_external(
                            kind, location, image_size, device, kwargs=teacher_spec.get("kwargs"),
                            output=teacher_spec.get("output"), mean=teacher_spec.get("mean"),
                            std=teacher_spec.get("std"), **options,
                        )  # fmt: skip
                    except FileNotFoundError as error:
                        raise FileNotFoundError(f"{where}: {error}") from error
                    except ValueError as error:
                        raise ValueError(f"{where}: {error}") from error
                loss = build_loss(loss_spec)
                name = f"{input_kind}{position}"
                projection = self._projection(
                    name, teacher, loss, teacher_spec.get("projection", "auto"), student_dim, where
                )
                # The batch holds the student's inputs: a teacher that reads other files
                # (segmentation maps for an RGB student, or RGB for a seg student) or another
                # size cannot be run on it, so its descriptors come from the cache. A teacher
                # that reads the same inputs is re-run only when augmentation makes each view
                # unique; without augmentation the cache holds exactly what it would compute.
                reads_student_inputs = input_kind == config.data.input and teacher.image_size == tuple(
                    int(s) for s in config.data.image_size
                )
                use_cache = not (config.data.augment and reads_student_inputs)
                self.teachers.append(TeacherSlot(name, teacher, loss, use_cache, projection))
        if spec:
            raise ValueError(f"method '{self.name}': unknown key(s) {', '.join(sorted(spec))}")

    def _projection(
        self, name: str, teacher: FrozenTeacher, loss: Any, mode: Any, student_dim: int | None, where: str
    ) -> DescriptorProjection | None:
        """The slot's student → teacher projection, or None (see the module docstring for ``projection``)."""
        if mode != "auto" and not isinstance(mode, bool):
            raise ValueError(f"{where}.projection: expected auto, true or false, got {mode!r}")
        teacher_dim = teacher.descriptor_dim
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
        logger.info(
            "teacher %s: a learned projection %d -> %d carries the student into its space",
            name,
            student_dim,
            teacher_dim,
        )
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

    def prepare(self, train_dataset: PlaceDataset) -> None:
        """Compute (or read back) the teachers' descriptor caches of the training split.

        The first teacher's cache is also built when ``mining.cache_model: teacher``,
        even if its batches are re-run for augmentation: mining reads un-augmented images.
        """
        for position, slot in enumerate(self.teachers):
            if slot.use_cache or (position == 0 and self.mines_with_teacher):
                slot.queries, slot.database = slot.teacher.cached_descriptors(train_dataset)

    def prepare_places(self, places: PlaceImages) -> None:
        """Compute (or read back) the teachers' descriptor caches of the place images (place batches)."""
        for slot in self.teachers:
            if slot.use_cache:
                slot.places = slot.teacher.cached_place_descriptors(places.paths, places.seg_paths)

    def place_loss(self, batch: PlaceBatch, student: torch.Tensor) -> LossOutput:
        """Loss of a place batch given the student's descriptors ``(P·K, D)`` of its images."""
        total = None
        terms: dict[str, float] = {}
        if self.metric_loss is not None:
            output = self.metric_loss(student, batch.labels)
            total = output.total
            terms.update({key: value for key, value in output.terms.items() if key != "total"})
        tuple_losses = [(None, self.student_loss)] if self.student_loss is not None else []
        tuple_losses += [(slot, slot.loss) for slot in self.teachers]
        if tuple_losses:
            anchor, positive, negatives, mask = in_batch_tuples(student, batch.labels, self.num_negatives)
            student_tuples = _index_tuples(student, anchor, positive, negatives, mask)
            for slot, loss in tuple_losses:
                teacher = None
                if slot is not None:
                    if slot.use_cache:
                        rows = slot.places[batch.image_index].to(student.device)
                    else:
                        rows = slot.teacher.describe(batch.images).to(student.device)
                    teacher = _index_tuples(rows, anchor, positive, negatives, mask)
                output = slot.compare(student_tuples, teacher) if slot is not None else loss(student_tuples, teacher)
                total = output.total if total is None else total + output.total
                prefix = f"{slot.name}/" if slot is not None and len(self.teachers) > 1 else ""
                terms.update({f"{prefix}{key}": value for key, value in output.terms.items() if key != "total"})
        if total is None:
            raise ValueError("method: place batches need a loss (method.metric_loss or a teacher)")
        terms["total"] = float(total.detach())
        return LossOutput(total=total, terms=terms)

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
        total = None
        terms: dict[str, float] = {}
        for slot in self.teachers:
            if slot.use_cache:
                teacher = gather_cached_descriptors(slot.queries, slot.database, batch)
            else:
                teacher = split_tuple_descriptors(slot.teacher.describe(batch.images), batch)
            output = slot.compare(student, teacher)
            total = output.total if total is None else total + output.total
            prefix = f"{slot.name}/" if len(self.teachers) > 1 else ""
            terms.update({f"{prefix}{key}": value for key, value in output.terms.items()})
        terms["total"] = float(total.detach())
        return LossOutput(total=total, terms=terms)


def _index_tuples(
    rows: torch.Tensor, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor
) -> TupleDescriptors:
    """In-batch tuples of one model's descriptors ``rows`` ``(B, D)`` from index tensors."""
    return TupleDescriptors(anchor=rows[anchor], positive=rows[positive], negatives=rows[negatives], negative_mask=mask)

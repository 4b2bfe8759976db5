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
hard triplet weight ``w_hard``, so set it to 0 on all teachers but one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.losses import build_loss
from vprdistill.losses.types import LossOutput, TupleDescriptors
from vprdistill.train.config import TrainConfig
from vprdistill.train.teacher import FrozenTeacher
from vprdistill.train.tuples import TupleBatch, gather_cached_descriptors, split_tuple_descriptors

METHOD_NAMES = ("triplet", "distill")


@dataclass
class TeacherSlot:
    """One frozen teacher, the loss that ties the student to it, and its cached descriptors."""

    name: str
    teacher: FrozenTeacher
    loss: Any
    use_cache: bool
    queries: torch.Tensor | None = None  # (M, D) cached descriptors of the training queries
    database: torch.Tensor | None = None  # (N, D)


class TrainingMethod:
    """The loss side of a training run, built from ``config.method``."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        spec = dict(config.method)
        self.name = spec.pop("name")
        if self.name not in METHOD_NAMES:
            raise ValueError(f"method.name must be one of {', '.join(METHOD_NAMES)}, got {self.name!r}")
        margin = config.mining.margin
        self.teachers: list[TeacherSlot] = []
        if self.name == "triplet":
            loss_spec = dict(spec.pop("loss", {"name": "triplet"}))
            loss_spec.setdefault("margin", margin)
            self.student_loss = build_loss(loss_spec)
        else:
            self.student_loss = None
            teacher_specs = spec.pop("teachers", None)
            if not teacher_specs:
                raise ValueError("method 'distill' needs a non-empty 'teachers' list")
            for position, teacher_spec in enumerate(teacher_specs):
                teacher_spec = dict(teacher_spec)
                if "run" not in teacher_spec:
                    raise ValueError(f"method.teachers[{position}]: missing 'run' (the teacher's run folder or checkpoint)")
                input_kind = teacher_spec.get("input", "rgb")
                loss_spec = dict(teacher_spec.get("loss", {"name": "soft_cross_metric"}))
                loss_spec.setdefault("margin", margin)
                teacher = FrozenTeacher(
                    teacher_spec["run"],
                    input_kind=input_kind,
                    image_size=teacher_spec.get("image_size", config.data.image_size),
                    device=device,
                    batch_size=config.eval_batch_size,
                    num_workers=config.data.num_workers,
                    structural_source=config.data.structural_source,
                    cache_dir=teacher_spec.get("cache_dir"),
                    progress=config.progress,
                )
                # A segmentation teacher sees different inputs from the student, so its
                # descriptors always come from the cache; an RGB teacher is re-run on the
                # batch only when augmentation makes each view unique.
                use_cache = input_kind == "seg" or not config.data.augment
                self.teachers.append(
                    TeacherSlot(f"{input_kind}{position}", teacher, build_loss(loss_spec), use_cache)
                )
        if spec:
            raise ValueError(f"method '{self.name}': unknown key(s) {', '.join(sorted(spec))}")

    def prepare(self, train_dataset: PlaceDataset) -> None:
        """Compute (or read back) the teachers' descriptor caches of the training split."""
        for slot in self.teachers:
            if slot.use_cache:
                slot.queries, slot.database = slot.teacher.cached_descriptors(train_dataset)

    def mining_descriptors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first teacher's cached (queries, database) descriptors, for ``mining.cache_model: teacher``."""
        if not self.teachers or self.teachers[0].queries is None:
            raise ValueError("mining.cache_model: teacher needs a distillation method whose first teacher is cached")
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
            output = slot.loss(student, teacher)
            total = output.total if total is None else total + output.total
            prefix = f"{slot.name}/" if len(self.teachers) > 1 else ""
            terms.update({f"{prefix}{key}": value for key, value in output.terms.items()})
        terms["total"] = float(total.detach())
        return LossOutput(total=total, terms=terms)

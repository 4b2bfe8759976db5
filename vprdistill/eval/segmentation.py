"""Segmentation quality: confusion-matrix mIoU of predicted maps against ground truth, per condition.

Maps are Cityscapes trainIds (0 road ... 18 bicycle, 255 void). Pixels whose
*truth* is void (255) are ignored. A *predicted* id outside ``0..C-1`` (255 from
a model class with no Cityscapes counterpart) is an error of the truth class: it
counts towards that class's false negatives and no class's false positives.

Per class ``c``: ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``. A class absent from
both truth and prediction (``TP + FP + FN = 0``) has no IoU (NaN) and is left
out of the mean, so mIoU is the mean over the classes that occur.

:func:`evaluate_segmenter` runs a segmenter over one split's database and
queries and reports mIoU for each, and for the queries of each condition (the
folder format's ``note`` field: ``night-clear-summer``, ``day-fog-summer``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vprdistill.data.segmentation_labels import CITYSCAPES_TRAIN_ID_NAMES, VOID_ID

NUM_CLASSES = len(CITYSCAPES_TRAIN_ID_NAMES)


class ConfusionMatrix:
    """Pixel counts ``matrix[truth, prediction]`` ``(C, C)`` int64, plus truth pixels predicted outside ``0..C-1``.

    Args:
        num_classes: ``C``, the classes ``0..C-1``.
        ignore_index: truth id whose pixels are not counted (void).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = VOID_ID) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.unassigned = np.zeros(num_classes, dtype=np.int64)  # truth c, prediction not a class

    def update(self, prediction: np.ndarray, truth: np.ndarray, where: str = "maps") -> None:
        """Add one pair of maps of equal shape (any shape, e.g. ``(H, W)``) of integer class ids.

        ``where`` names the pair (e.g. the truth file) in errors: shapes that
        differ, or truth ids that are neither a class nor ``ignore_index``.
        """
        prediction = np.asarray(prediction)
        truth = np.asarray(truth)
        if prediction.shape != truth.shape:
            raise ValueError(f"{where}: prediction has shape {prediction.shape} but the truth {truth.shape}")
        for label, array in (("prediction", prediction), ("truth", truth)):
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{where}: {label} must hold integer class ids, got {array.dtype}")
        truth = truth.astype(np.int64, copy=False).reshape(-1)
        prediction = prediction.astype(np.int64, copy=False).reshape(-1)
        valid = truth != self.ignore_index
        truth, prediction = truth[valid], prediction[valid]
        bad = (truth < 0) | (truth >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"{where}: truth holds id {int(truth[bad][0])}, expected 0..{self.num_classes - 1} "
                f"or {self.ignore_index} (void)"
            )
        assigned = (prediction >= 0) & (prediction < self.num_classes)
        c = self.num_classes
        self.matrix += np.bincount(truth[assigned] * c + prediction[assigned], minlength=c * c).reshape(c, c)
        self.unassigned += np.bincount(truth[~assigned], minlength=c)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's counts (same ``num_classes``)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self.matrix += other.matrix
        self.unassigned += other.unassigned

    @property
    def pixels(self) -> int:
        """Counted (non-void truth) pixels."""
        return int(self.matrix.sum() + self.unassigned.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU ``(C,)`` float64; NaN for a class absent from truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        fn = self.matrix.sum(axis=1) - tp + self.unassigned
        fp = self.matrix.sum(axis=0) - tp
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in truth or prediction; NaN when no pixel was counted."""
        values = self.iou()
        present = ~np.isnan(values)
        return float(values[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels; NaN when none was counted."""
        total = self.pixels
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self, images: int, class_names: Sequence[str] = CITYSCAPES_TRAIN_ID_NAMES) -> dict[str, Any]:
        """JSON-ready ``{"images", "pixels", "miou", "pixel_accuracy", "iou": {class name: IoU or None}}``."""
        return {
            "images": images,
            "pixels": self.pixels,
            "miou": _finite_or_none(self.miou()),
            "pixel_accuracy": _finite_or_none(self.pixel_accuracy()),
            "iou": {
                (class_names[i] if i < len(class_names) else str(i)): _finite_or_none(value)
                for i, value in enumerate(self.iou())
            },
        }


def _finite_or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def miou(
    prediction: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES, ignore_index: int = VOID_ID
) -> float:
    """mIoU of one prediction against one truth of equal shape (see the module docstring)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(prediction, truth)
    return matrix.miou()


@dataclass
class SegmentationEvaluation:
    """mIoU of a segmenter on one split: the database, the queries, and the queries of each condition."""

    model: str
    dataset: str
    split: str
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # group name -> ConfusionMatrix.summary

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """A markdown table: group, images, mIoU, pixel accuracy, and mIoU relative to the database's."""
        reference = (self.groups.get("database") or {}).get("miou")
        lines = [
            "| group | images | mIoU | pixel acc. | mIoU / database |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, group in self.groups.items():
            value, accuracy = group["miou"], group["pixel_accuracy"]
            ratio = f"{value / reference:.2f}" if value is not None and reference else "-"
            lines.append(f"| {name} | {group['images']} | {_percent(value)} | {_percent(accuracy)} | {ratio} |")
        return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def evaluate_segmenter(
    segmenter: Any,
    dataset: Any,
    batch_size: int = 16,
    progress: bool = True,
    max_images: int | None = None,
) -> SegmentationEvaluation:
    """Compare ``segmenter``'s maps with a split's ground-truth maps.

    Args:
        segmenter: has ``segment(images: list[PIL.Image]) -> list[(H, W) uint8 trainId maps]``
            and ``name`` (a :class:`vprdistill.data.segmenter.Segmenter`).
        dataset: a ``PlaceDataset`` with segmentation maps (``database_seg_paths``/``query_seg_paths``)
            and, for per-condition results, ``query_notes``.
        batch_size: images per call of ``segmenter.segment``.
        max_images: at most this many images of the database and of each query condition
            (the first in path order); ``None``: all.

    Returns groups ``database``, ``queries`` and ``queries/<condition>`` (sorted),
    each a :meth:`ConfusionMatrix.summary`. Raises ``ValueError`` naming the
    dataset when it has no maps, or naming the map file that does not match its image.
    """
    from vprdistill.data.images import load_image, load_segmentation

    if not dataset.has_segmentation:
        raise ValueError(
            f"dataset {dataset.name!r} split {dataset.split!r} at {dataset.root} has no segmentation maps "
            "(ground truth under ROOT/segmentation/<split>/ is needed to measure mIoU)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    notes = dataset.query_notes or ["unknown"] * dataset.num_queries
    jobs: dict[str, list[tuple[Path, Path]]] = {
        "database": list(zip(dataset.database_paths, dataset.database_seg_paths)),
    }
    for condition in sorted(set(notes)):
        jobs[f"queries/{condition}"] = [
            (image, seg)
            for image, seg, note in zip(dataset.query_paths, dataset.query_seg_paths, notes)
            if note == condition
        ]
    if max_images is not None:
        jobs = {name: pairs[:max_images] for name, pairs in jobs.items()}
    matrices = {name: ConfusionMatrix() for name in jobs}
    total = sum(len(pairs) for pairs in jobs.values())
    with tqdm(total=total, desc="segmentation mIoU", unit="img", disable=not progress) as bar:
        for name, pairs in jobs.items():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                predictions = segmenter.segment([load_image(image) for image, _ in chunk])
                for (_, seg_path), prediction in zip(chunk, predictions):
                    matrices[name].update(prediction, load_segmentation(seg_path), where=str(seg_path))
                bar.update(len(chunk))
    queries, per_condition = ConfusionMatrix(), {}
    for name, matrix in matrices.items():
        if name.startswith("queries/"):
            queries.merge(matrix)
            per_condition[name] = matrix.summary(len(jobs[name]))
    groups = {
        "database": matrices["database"].summary(len(jobs["database"])),
        "queries": queries.summary(sum(len(p) for n, p in jobs.items() if n.startswith("queries/"))),
        **per_condition,
    }
    return SegmentationEvaluation(
        model=str(getattr(segmenter, "name", "")), dataset=str(dataset.root), split=dataset.split, groups=groups
    )

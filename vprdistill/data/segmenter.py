"""Segmentation maps for a folder-format dataset that has none (StructVPR's seg-branch input).

``ROOT/images/<split>/<database|queries>/<name>.jpg`` gets a mirrored
``ROOT/segmentation/<split>/<database|queries>/<name>.png``: a single-channel
PNG of Cityscapes trainIds (0 road ... 18 bicycle, 255 void), the label set
SynthCity writes too, so ``StructuralClassMap(source="cityscapes")`` reads both.

The maps come from a Hugging Face ``transformers`` semantic-segmentation model.
A model trained on another label set (ADE20K, Mapillary Vistas, ...) is mapped
to Cityscapes trainIds through its class *names*; names with no Cityscapes
counterpart become 255. Maps are written atomically and existing ones are kept,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from vprdistill.data.images import ImageLoadError, load_image
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.logging import get_logger

log = get_logger("data.segmenter")

DEFAULT_SEGMENTATION_MODEL = "nvidia/segformer-b0-finetuned-cityscapes-1024-1024"
VOID_ID = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SPACE = "cityscapes_train_id"

# Cityscapes trainIds 0..18, in id order.
CITYSCAPES_TRAIN_ID_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Our choice: label names of other label sets (ADE20K, Mapillary Vistas, the
# full Cityscapes labelIds) that mean a Cityscapes trainId class.
_NAME_SYNONYMS: dict[str, tuple[str, ...]] = {
    "road": ("street", "route", "highway", "bike lane", "service lane", "crosswalk plain", "crosswalk zebra",
             "lane marking", "lane marking general", "lane marking crosswalk", "manhole", "pothole", "catch basin"),
    "sidewalk": ("pavement", "pedestrian area", "curb", "curb cut", "footpath"),
    "building": ("edifice", "house", "skyscraper"),
    "wall": (),
    "fence": ("fencing", "guard rail", "railing", "rail"),
    "pole": ("utility pole", "streetlight", "street light", "street lamp", "lamppost"),
    "traffic light": ("traffic signal", "stoplight"),
    "traffic sign": ("signboard", "sign", "traffic sign front", "traffic sign back"),
    "vegetation": ("tree", "plant", "flora", "plant life", "palm", "palm tree", "bush", "hedge"),
    "terrain": ("grass", "earth", "ground", "soil", "sand", "field", "dirt track"),
    "sky": (),
    "person": ("pedestrian", "individual", "people"),
    "rider": ("bicyclist", "motorcyclist", "other rider"),
    "car": ("auto", "automobile", "motorcar", "van", "taxi"),
    "truck": ("motortruck", "lorry"),
    "bus": ("autobus", "coach"),
    "train": ("tram", "on rails", "railway car"),
    "motorcycle": ("motorbike", "minibike"),
    "bicycle": ("bike", "cycle"),
}  # fmt: skip

_NAME_TO_TRAIN_ID: dict[str, int] = {}
for _train_id, _name in enumerate(CITYSCAPES_TRAIN_ID_NAMES):
    for _alias in (_name, *_NAME_SYNONYMS[_name]):
        _NAME_TO_TRAIN_ID[_alias] = _train_id


class SegmentationModelError(RuntimeError):
    """The segmentation model cannot be loaded or does not fit (e.g. no named classes)."""


@dataclass
class SegmentationReport:
    """What one ``segment_dataset`` run did."""

    root: Path
    model: str
    written: int = 0
    skipped: int = 0
    failed: int = 0
    failed_paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    classes_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["root"] = str(self.root)
        record["failed_paths"] = [str(p) for p in self.failed_paths]
        record["classes_path"] = str(self.classes_path) if self.classes_path else None
        return record


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-()]", " ", name.lower()).split())


def label_to_cityscapes_train_id(label: str) -> int:
    """The Cityscapes trainId (0..18) a class name means, or 255 when none.

    Names are compared in lower case with ``_ - ( )`` read as spaces; a name
    listing alternatives (``"car, auto, automobile"``) matches if one does, and
    a hierarchical Mapillary name (``"object--vehicle--car"``) if one of its
    levels does, the most specific first.
    """
    levels = [level for level in str(label).split("--") if level.strip()]
    candidates = [str(label), *reversed(levels)]
    for candidate in candidates:
        for alias in [candidate, *re.split(r"[;,]", candidate)]:
            train_id = _NAME_TO_TRAIN_ID.get(_normalise(alias))
            if train_id is not None:
                return train_id
    return VOID_ID


def label_mapping(id2label: Mapping[int | str, str]) -> np.ndarray:
    """A lookup table ``(num_labels,)`` uint8: model class id -> Cityscapes trainId (255 when unknown).

    Raises ``SegmentationModelError`` when no class name maps at all (e.g. a
    config with generic ``LABEL_0`` names), since every map would be void.
    """
    if not id2label:
        raise SegmentationModelError("the segmentation model has no id2label: its class names are needed")
    ids = sorted(int(i) for i in id2label)
    table = np.full(ids[-1] + 1, VOID_ID, dtype=np.uint8)
    labels = {int(i): name for i, name in id2label.items()}
    for model_id in ids:
        table[model_id] = label_to_cityscapes_train_id(labels[model_id])
    if (table == VOID_ID).all():
        examples = ", ".join(str(labels[i]) for i in ids[:5])
        raise SegmentationModelError(
            f"none of the segmentation model's {len(ids)} class names ({examples}, ...) is a Cityscapes class; "
            "use a model whose config names its classes"
        )
    unknown = [labels[i] for i in ids if table[i] == VOID_ID]
    if unknown:
        log.info("model classes with no Cityscapes counterpart are written as %d: %s", VOID_ID, ", ".join(unknown))
    return table


def _looks_like_a_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a missing folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


class Segmenter:
    """A semantic-segmentation model whose output is in Cityscapes trainIds.

    Args:
        model_id_or_path: a local folder saved with ``save_pretrained`` (model and
            image processor), or a model id of the Hugging Face hub, looked up in the
            local cache first and downloaded only when the hub is not marked offline.
        device: where the network runs.
        image_size: ``(H, W)`` the image processor resizes to; ``None`` keeps the
            processor's own size.
    """

    def __init__(self, model_id_or_path: str | Path = DEFAULT_SEGMENTATION_MODEL, device: str | torch.device = "cpu",
                 image_size: Sequence[int] | None = None) -> None:  # fmt: skip
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self.name = str(model_id_or_path)
        self.device = torch.device(device)
        self.image_size = None if image_size is None else _image_size(image_size)
        source = Path(self.name).expanduser()
        if source.exists():
            if not (source / "config.json").is_file():
                raise FileNotFoundError(f"segmentation model folder {source} has no config.json (save it with save_pretrained)")
            name_or_path: str | Path = source
        elif _looks_like_a_path(self.name):
            raise FileNotFoundError(f"segmentation model folder {source} does not exist")
        else:
            name_or_path = self.name
        # The local copy (a folder, or the hub cache) is always tried first; a
        # download only when the model is not there and the hub is not offline.
        attempts = [True] if source.exists() or _hub_offline() else [True, False]
        for attempt, local_files_only in enumerate(attempts, start=1):
            try:
                self.processor = AutoImageProcessor.from_pretrained(name_or_path, local_files_only=local_files_only)
                self.model = AutoModelForSemanticSegmentation.from_pretrained(name_or_path, local_files_only=local_files_only)
                break
            except (OSError, ValueError) as error:
                if attempt < len(attempts):
                    continue
                raise SegmentationModelError(
                    f"cannot load segmentation model {self.name!r}: {error}. Without network access, fetch the model "
                    "(config.json, weights and preprocessor_config.json) on another machine, e.g. with the Hugging Face "
                    "CLI's download command or save_pretrained, copy the folder here and pass it: --model PATH"
                ) from error
        self.model.eval().to(self.device)
        self.lookup = torch.from_numpy(label_mapping(self.model.config.id2label)).to(self.device)
        self.model_labels = {int(i): str(n) for i, n in self.model.config.id2label.items()}

    @torch.inference_mode()
    def segment(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """RGB images -> their class-id maps ``(H, W)`` uint8 in Cityscapes trainIds, at each image's size.

        Logits are upsampled to the image size before the argmax (the image
        processor's own post-processing), then model classes are mapped to trainIds.
        """
        if not images:
            return []
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if self.image_size is not None:
            kwargs["size"] = {"height": self.image_size[0], "width": self.image_size[1]}
        inputs = self.processor(images=list(images), **kwargs)
        outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        class_maps = self.processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(image.height, image.width) for image in images]
        )
        return [self.lookup[class_map.long()].cpu().numpy() for class_map in class_maps]


def _image_size(size: Sequence[int] | int) -> tuple[int, int]:
    values = [size] if isinstance(size, int) else list(size)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(int(v) < 1 for v in values):
        raise ValueError(f"image size must be H or H W with positive values, got {size}")
    return int(values[0]), int(values[1])


def find_images(root: str | Path, splits: Sequence[str] | None = None) -> list[Path]:
    """Image files under ``ROOT/images/<split>/``, as paths relative to ``ROOT/images`` (sorted).

    ``splits=None`` takes every split folder present.
    """
    images_dir = Path(root) / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} does not exist: expected a folder-format dataset ROOT/images/<split>/...")
    if splits is None:
        splits = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    found: list[Path] = []
    for split in splits:
        split_dir = images_dir / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"split folder {split_dir} does not exist")
        found.extend(
            p.relative_to(images_dir)
            for p in split_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
    return sorted(found)


def segmentation_path(root: str | Path, image_relpath: str | Path) -> Path:
    """Where the map of ``ROOT/images/<image_relpath>`` goes: ``ROOT/segmentation/<same path>.png``."""
    return (Path(root) / "segmentation" / image_relpath).with_suffix(".png")


def write_class_map(path: str | Path, class_map: np.ndarray) -> None:
    """Write ``class_map (H, W)`` uint8 as a single-channel PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(class_map, dtype=np.uint8), mode="L").save(tmp, format="PNG")


def write_classes_file(root: str | Path, segmenter: Segmenter) -> Path:
    """Write ``ROOT/segmentation/classes.json``: the label set of the maps and the model that made them."""
    path = Path(root) / "segmentation" / "classes.json"
    atomic_write_json(
        path,
        {
            "label_space": LABEL_SPACE,
            "classes": [{"id": i, "name": name} for i, name in enumerate(CITYSCAPES_TRAIN_ID_NAMES)],
            "void_id": VOID_ID,
            "model": segmenter.name,
            "model_classes_to_ids": {
                name: int(segmenter.lookup[i]) for i, name in sorted(segmenter.model_labels.items())
            },
            "image_size": list(segmenter.image_size) if segmenter.image_size else None,
        },
    )
    return path


def _warn_if_model_changed(classes_path: Path, model: str, kept: int) -> None:
    if kept == 0 or not classes_path.is_file():
        return
    try:
        previous = json.loads(classes_path.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous and previous != model:
        log.warning(
            "%d existing maps were made by %s, new ones by %s; pass --overwrite to redo them all with one model",
            kept, previous, model,
        )


def segment_dataset(
    root: str | Path,
    model_id_or_path: str | Path = DEFAULT_SEGMENTATION_MODEL,
    batch_size: int = 8,
    splits: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    skip_bad_images: bool = False,
    progress: bool = True,
    image_size: Sequence[int] | None = None,
) -> SegmentationReport:
    """Write a Cityscapes-trainId segmentation map for every image of a folder-format dataset.

    Existing maps are kept (counted as skipped) unless ``overwrite``. An
    unreadable image raises ``ImageLoadError`` naming it, or with
    ``skip_bad_images`` is logged and counted as failed. Also writes
    ``ROOT/segmentation/classes.json``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    root = Path(root)
    start = time.perf_counter()
    report = SegmentationReport(root=root, model=str(model_id_or_path))
    images = find_images(root, splits)
    todo = [p for p in images if overwrite or not segmentation_path(root, p).is_file()]
    report.skipped = len(images) - len(todo)
    classes_path = root / "segmentation" / "classes.json"
    if not todo and classes_path.is_file():
        report.classes_path = classes_path
        report.seconds = time.perf_counter() - start
        return report
    _warn_if_model_changed(classes_path, str(model_id_or_path), report.skipped)
    segmenter = Segmenter(model_id_or_path, device=device, image_size=image_size)
    report.classes_path = write_classes_file(root, segmenter)
    log.info("segmenting %d images of %s (%d already done) with %s", len(todo), root, report.skipped, segmenter.name)

    bar = tqdm(total=len(todo), desc="segmenting", unit="img", disable=not progress)
    batch: list[tuple[Path, Image.Image]] = []

    def flush() -> None:
        for (relpath, _), class_map in zip(batch, segmenter.segment([image for _, image in batch])):
            write_class_map(segmentation_path(root, relpath), class_map)
            report.written += 1
        bar.update(len(batch))
        batch.clear()

    try:
        for relpath in todo:
            try:
                batch.append((relpath, load_image(root / "images" / relpath)))
            except ImageLoadError as error:
                if not skip_bad_images:
                    raise
                log.warning("skipping unreadable image: %s", error)
                report.failed += 1
                report.failed_paths.append(root / "images" / relpath)
                bar.update(1)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vprdistill.data.images import ImageLoadError, load_image
from vprdistill.data.segmentation_labels import CITYSCAPES_TRAIN_ID_NAMES, LABEL_SPACE, VOID_ID, label_mapping
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.device import resolve_device
from vprdistill.utils.logging import get_logger

log = get_logger("data.segmenter")

DEFAULT_SEGMENTATION_MODEL = "nvidia/segformer-b0-finetuned-cityscapes-1024-1024"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def _looks_like_a_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a missing folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "").lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in {"1", "true", "yes", "on"} for flag in flags)


def load_segmentation_model(model_id_or_path: str | Path) -> tuple[Any, torch.nn.Module]:
    """Load ``(image processor, model)`` from a ``save_pretrained`` folder or a hub model id.

    The local copy (the folder, or the hub cache) is always tried first; a
    download is tried only when the model is not there and neither
    ``HF_HUB_OFFLINE`` nor ``TRANSFORMERS_OFFLINE`` is set. Raises
    ``FileNotFoundError`` for a missing or incomplete folder and
    ``SegmentationModelError`` (saying how to provide a local copy) otherwise.
    """
    name = str(model_id_or_path)
    folder = Path(name).expanduser()
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"segmentation model folder {folder} has no config.json (save it with save_pretrained)")
        source: str | Path = folder
    elif _looks_like_a_path(name):
        raise FileNotFoundError(f"segmentation model folder {folder} does not exist")
    else:
        source = name
    try:
        return _from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        if folder.exists() or _hub_offline():
            raise _unavailable(name, error) from error
    try:
        return _from_pretrained(source, local_files_only=False)
    except (OSError, ValueError) as error:
        raise _unavailable(name, error) from error


def _from_pretrained(source: str | Path, local_files_only: bool) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModelForSemanticSegmentation.from_pretrained(source, local_files_only=local_files_only)
    return processor, model


def _unavailable(name: str, error: Exception) -> SegmentationModelError:
    return SegmentationModelError(
        f"cannot load segmentation model {name!r}: {error}. Without network access, fetch the model "
        "(config.json, weights and preprocessor_config.json) on another machine, e.g. with the Hugging Face "
        "CLI's download command or save_pretrained, copy the folder here and pass it: --model PATH"
    )


class Segmenter:
    """A semantic-segmentation model whose output is in Cityscapes trainIds.

    Args:
        model_id_or_path: a local folder saved with ``save_pretrained`` (model and
            image processor) or a hub model id (see ``load_segmentation_model``).
        device: where the network runs (``auto``, ``cpu``, ``cuda``, ... or a ``torch.device``).
        image_size: ``(H, W)`` the image processor resizes to; ``None`` keeps the
            processor's own size.
    """

    def __init__(
        self,
        model_id_or_path: str | Path = DEFAULT_SEGMENTATION_MODEL,
        device: str | torch.device = "cpu",
        image_size: Sequence[int] | None = None,
    ) -> None:
        self.name = str(model_id_or_path)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.image_size = None if image_size is None else _image_size(image_size)
        self.processor, self.model = load_segmentation_model(model_id_or_path)
        self.model.eval().to(self.device)
        id2label = self.model.config.id2label
        try:
            lookup = label_mapping(id2label)
        except ValueError as error:
            raise SegmentationModelError(f"segmentation model {self.name!r}: {error}") from error
        self.lookup = torch.from_numpy(lookup).to(self.device)
        self.model_labels = {int(i): str(label) for i, label in id2label.items()}

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
    class_map = np.ascontiguousarray(class_map, dtype=np.uint8)
    if class_map.ndim != 2:
        raise ValueError(f"a class map must have shape (H, W), got {class_map.shape} for {path}")
    with atomic_path(path) as tmp:
        Image.fromarray(class_map).save(tmp, format="PNG")  # a 2-D uint8 array is a mode "L" image


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


class _ImageFiles(Dataset):
    """Decoded images for a DataLoader; an unreadable one comes back as its error, not raised in a worker."""

    def __init__(self, images_dir: Path, relpaths: Sequence[Path]) -> None:
        self.images_dir = images_dir
        self.relpaths = list(relpaths)

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, index: int) -> tuple[Path, Image.Image | None, ImageLoadError | None]:
        relpath = self.relpaths[index]
        try:
            return relpath, load_image(self.images_dir / relpath), None
        except ImageLoadError as error:
            return relpath, None, error


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
    num_workers: int = 0,
) -> SegmentationReport:
    """Write a Cityscapes-trainId segmentation map for every image of a folder-format dataset.

    Existing maps are kept (counted as skipped) unless ``overwrite``. An
    unreadable image raises ``ImageLoadError`` naming it, or with
    ``skip_bad_images`` is logged and counted as failed. ``num_workers``
    processes decode images while the network runs. Also writes
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

    loader = DataLoader(
        _ImageFiles(root / "images", todo), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )
    with tqdm(total=len(todo), desc="segmenting", unit="img", disable=not progress) as bar:
        for items in loader:
            batch = []
            for relpath, image, error in items:
                if error is None:
                    batch.append((relpath, image))
                    continue
                if not skip_bad_images:
                    raise error
                log.warning("skipping unreadable image: %s", error)
                report.failed += 1
                report.failed_paths.append(root / "images" / relpath)
            for (relpath, _), class_map in zip(batch, segmenter.segment([image for _, image in batch])):
                write_class_map(segmentation_path(root, relpath), class_map)
                report.written += 1
            bar.update(len(items))
    report.seconds = time.perf_counter() - start
    return report

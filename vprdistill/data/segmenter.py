"""Segmentation maps for a dataset that has none (StructVPR's seg-branch input).

Folder format: ``ROOT/images/<split>/<database|queries>/<name>.jpg`` gets a
mirrored ``ROOT/segmentation/<split>/<database|queries>/<name>.png``. NetVLAD
``.mat`` datasets (Pittsburgh): the image listed as ``<path>.jpg`` in a
``<name>_<split>.mat`` file gets ``IMAGE_ROOT/segmentation/<whichSet>/database/<path>.png``
(queries: ``.../queries/<path>.png``, the path relative to ``queries_real``), the
tree ``vprdistill.data.readers`` looks in for both formats. Each map is a
single-channel PNG of Cityscapes trainIds (0 road ... 18 bicycle, 255 void), the
label set SynthCity writes too, so ``StructuralClassMap(source="cityscapes")``
reads both. ``maps_dir`` writes the same tree under another folder name instead
of ``segmentation`` (e.g. ``segmentation-predicted``), so predicted maps can sit
beside ground-truth ones; the reader opens them with ``segmentation_dir``.

The network sees each image resized so that its shorter side has a given
length (by default the image processor's own size), keeping the aspect ratio;
the logits are upsampled back to the image's own size.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vprdistill.data.images import ImageLoadError, load_image
from vprdistill.data.place_images import PLACE_MAPS_DIR, check_place_maps_dir, is_place_images_root, open_place_images
from vprdistill.data.readers import (
    DEFAULT_SEGMENTATION_DIR,
    check_segmentation_dir,
    glob_mat_files,
    list_images,
    open_dataset,
)
from vprdistill.data.segmentation_labels import (
    CITYSCAPES_TRAIN_ID_NAMES,
    DEFAULT_SEGMENTATION_MODEL,
    LABEL_SPACE,
    VOID_ID,
    label_mapping,
)
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.device import resolve_device
from vprdistill.utils.extras import require
from vprdistill.utils.logging import get_logger

log = get_logger("data.segmenter")


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
        return json.loads(json.dumps(asdict(self), default=str))  # paths as text


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
            raise FileNotFoundError(
                f"segmentation model folder {folder} has no config.json (save it with save_pretrained)"
            )
        source: str | Path = folder
    elif _looks_like_a_path(name):
        raise FileNotFoundError(f"segmentation model folder {folder} does not exist")
    else:
        source = name
    transformers = require("transformers", "segment", "a segmentation model")
    for local_files_only in (True, False):
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
            model = transformers.AutoModelForSemanticSegmentation.from_pretrained(
                source, local_files_only=local_files_only
            )
            return processor, model
        except (OSError, ValueError) as error:
            # A download is the second try, for a hub id while downloads are allowed.
            if not local_files_only or folder.exists() or _hub_offline():
                raise _unavailable(name, error) from error
    raise AssertionError("unreachable: the second try returns or raises")


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
        image_size: the network input size. One value ``S`` (an int or ``[S]``): each
            image is resized so that its shorter side is ``S``, keeping its aspect
            ratio. ``(H, W)``: every image is resized to exactly that. ``None``: the
            shorter side becomes the processor's own size (its ``shortest_edge``, else
            the smaller of its height and width).
    """

    def __init__(
        self,
        model_id_or_path: str | Path = DEFAULT_SEGMENTATION_MODEL,
        device: str | torch.device = "cpu",
        image_size: Sequence[int] | None = None,
    ) -> None:
        self.name = str(model_id_or_path)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.processor, self.model = load_segmentation_model(model_id_or_path)
        # Exactly (H, W), or None when the shorter side is resized to ``shorter_side``.
        self.image_size, self.shorter_side = _network_size(image_size, self.processor, self.name)
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

        Each image is resized to :meth:`input_size` (images of one input size go
        through the network together), logits are upsampled to the image size
        before the argmax (the image processor's own post-processing), then model
        classes are mapped to trainIds.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.input_size(image.height, image.width), []).append(index)
        results: list[np.ndarray | None] = [None] * len(images)
        for (height, width), indices in groups.items():
            group = [images[i] for i in indices]
            inputs = self.processor(images=group, size={"height": height, "width": width}, return_tensors="pt")
            outputs = self.model(pixel_values=inputs["pixel_values"].to(self.device))
            class_maps = self.processor.post_process_semantic_segmentation(
                outputs, target_sizes=[(image.height, image.width) for image in group]
            )
            for index, class_map in zip(indices, class_maps):
                results[index] = self.lookup[class_map.long()].cpu().numpy()
        return [r for r in results if r is not None]

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input ``(H, W)`` for an image of ``height × width`` pixels."""
        if self.image_size is not None:
            return self.image_size
        return shorter_side_size(height, width, self.shorter_side)


def shorter_side_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """``(H, W)`` with the shorter side ``shorter_side`` and the aspect ratio of ``height × width`` kept.

    The longer side is rounded to the nearest pixel, e.g. 480 × 640 with 1024 → (1024, 1365).
    """
    if min(height, width) < 1 or shorter_side < 1:
        raise ValueError(f"sizes must be positive, got {height}x{width} and shorter side {shorter_side}")
    scale = shorter_side / min(height, width)
    if height <= width:
        return shorter_side, max(1, round(width * scale))
    return max(1, round(height * scale)), shorter_side


def _network_size(size: Sequence[int] | int | None, processor: Any, model: str) -> tuple[tuple[int, int] | None, int]:
    """``(exact (H, W) or None, shorter side)`` from the requested size and the processor's."""
    if size is not None:
        values = [size] if isinstance(size, int) else [int(v) for v in size]
        if len(values) not in (1, 2) or any(v < 1 for v in values):
            raise ValueError(f"image size must be S (shorter side) or H W, with positive values, got {size}")
        if len(values) == 2:
            return (values[0], values[1]), min(values)
        return None, values[0]
    own = getattr(processor, "size", None) or {}
    shortest = own.get("shortest_edge") or (own.get("height") and own.get("width") and min(own["height"], own["width"]))
    if shortest:
        return None, int(shortest)
    raise SegmentationModelError(
        f"segmentation model {model!r}: its image processor states no size ({own!r}); pass --image-size"
    )


def find_images(root: str | Path, splits: Sequence[str] | None = None) -> list[Path]:
    """Image files under ``ROOT/images/<split>/``, as paths relative to ``ROOT/images`` (sorted).

    ``splits=None`` takes every split folder present.
    """
    images_dir = Path(root) / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"{images_dir} does not exist: expected a folder-format dataset ROOT/images/<split>/..."
        )
    if splits is None:
        splits = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    found: list[Path] = []
    for split in splits:
        split_dir = images_dir / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"split folder {split_dir} does not exist")
        found.extend(Path(split) / image for image in list_images(split_dir))
    return sorted(found)


def find_mat_files(root: str | Path, splits: Sequence[str] | None = None, name: str | None = None) -> list[Path]:
    """NetVLAD ``<name>_<split>.mat`` files in ``root`` or ``root/datasets`` (sorted).

    ``splits=None`` takes every split, ``name=None`` every set (e.g. both
    ``pitts30k`` and ``pitts250k``). Raises ``FileNotFoundError`` when none matches.
    """
    root = Path(root)
    patterns = [f"{name or '*'}_{split}.mat" for split in splits] if splits else [f"{name or '*'}_*.mat"]
    found = glob_mat_files(root, *patterns)
    if not found:
        raise FileNotFoundError(f"no NetVLAD structure file {' or '.join(patterns)} in {root} or {root / 'datasets'}")
    return found


def mat_segmentation_paths(dataset: Any, maps_dir: str = DEFAULT_SEGMENTATION_DIR) -> tuple[list[Path], list[Path]]:
    """Where the maps of a ``.mat`` split's images go: (database maps, query maps).

    ``IMAGE_ROOT/<maps_dir>/<split>/database/<path>.png`` for the database image
    ``IMAGE_ROOT/<path>.jpg`` and ``.../queries/<path>.png`` for the query
    ``IMAGE_ROOT/queries_real/<path>.jpg``, the tree the dataset reader looks in.
    """
    split_dir = Path(dataset.root) / check_segmentation_dir(maps_dir) / dataset.split
    maps = []
    for label, images, base in (
        ("database", dataset.database_paths, Path(dataset.root)),
        ("queries", dataset.query_paths, Path(dataset.root) / "queries_real"),
    ):
        try:
            maps.append([split_dir / label / Path(image).relative_to(base).with_suffix(".png") for image in images])
        except ValueError as error:
            raise ValueError(
                f"dataset {dataset.root} split {dataset.split!r}: a {label} image lies outside {base}: {error}"
            ) from error
    return maps[0], maps[1]


def segmentation_path(root: str | Path, image_relpath: str | Path, maps_dir: str = DEFAULT_SEGMENTATION_DIR) -> Path:
    """Where the map of ``ROOT/images/<image_relpath>`` goes: ``ROOT/<maps_dir>/<same path>.png``."""
    return (Path(root) / check_segmentation_dir(maps_dir) / image_relpath).with_suffix(".png")


def write_class_map(path: str | Path, class_map: np.ndarray) -> None:
    """Write ``class_map (H, W)`` uint8 as a single-channel PNG, atomically."""
    class_map = np.ascontiguousarray(class_map, dtype=np.uint8)
    if class_map.ndim != 2:
        raise ValueError(f"a class map must have shape (H, W), got {class_map.shape} for {path}")
    with atomic_path(path) as tmp:
        Image.fromarray(class_map).save(tmp, format="PNG")  # a 2-D uint8 array is a mode "L" image


def write_classes_file(root: str | Path, segmenter: Segmenter, maps_dir: str = DEFAULT_SEGMENTATION_DIR) -> Path:
    """Write ``ROOT/<maps_dir>/classes.json``: the label set of the maps and the model that made them."""
    path = Path(root) / check_segmentation_dir(maps_dir) / "classes.json"
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
            "shorter_side": None if segmenter.image_size else segmenter.shorter_side,
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
            kept,
            previous,
            model,
        )


@dataclass(frozen=True)
class _Job:
    """One image to segment and where its map goes."""

    image: Path
    map_path: Path


def _load_jobs(jobs: list[_Job]) -> list[tuple[_Job, Image.Image | None, ImageLoadError | None]]:
    """A batch's decoded images (the DataLoader's collate step, run in its workers); an unreadable
    one comes back as its error, not raised in a worker."""
    items: list[tuple[_Job, Image.Image | None, ImageLoadError | None]] = []
    for job in jobs:
        try:
            items.append((job, load_image(job.image), None))
        except ImageLoadError as error:
            items.append((job, None, error))
    return items


def _mat_jobs(
    path: Path, splits: Sequence[str] | None, name: str | None, skip_bad_images: bool, maps_dir: str
) -> tuple[list[_Job], list[Path]]:
    """Jobs of every image listed by the ``.mat`` file(s) at ``path``, and the image roots they write to."""
    # A folder is the image root of its .mat files, as when a training config names the folder.
    files, image_root = ([path], None) if path.is_file() else (find_mat_files(path, splits, name), path)
    jobs: dict[Path, _Job] = {}  # by map: sets that share a split (pitts30k, pitts250k) share maps
    roots: list[Path] = []
    for mat_file in files:
        dataset = open_dataset(
            mat_file, split=None, reader="mat", skip_bad_images=skip_bad_images, image_root=image_root
        )
        if splits and dataset.split not in splits:
            continue
        database_maps, query_maps = mat_segmentation_paths(dataset, maps_dir)
        for image, map_path in zip([*dataset.database_paths, *dataset.query_paths], [*database_maps, *query_maps]):
            jobs.setdefault(map_path, _Job(Path(image), map_path))
        if Path(dataset.root) not in roots:
            roots.append(Path(dataset.root))
    return sorted(jobs.values(), key=lambda job: job.map_path), roots


def segment_dataset(
    root: str | Path,
    model_id_or_path: str | Path = DEFAULT_SEGMENTATION_MODEL,
    batch_size: int = 8,
    splits: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    skip_bad_images: bool = False,
    progress: bool = True,
    image_size: Sequence[int] | int | None = None,
    num_workers: int = 0,
    name: str | None = None,
    maps_dir: str = DEFAULT_SEGMENTATION_DIR,
) -> SegmentationReport:
    """Write a Cityscapes-trainId segmentation map for every image of a dataset.

    ``root`` is a folder-format root (``ROOT/images/<split>/...``), a NetVLAD
    ``.mat`` file, a folder holding ``<name>_<split>.mat`` files (in it or in
    ``datasets/``; ``name`` picks one set, e.g. ``pitts30k``), or a GSV-Cities
    place set (``Dataframes/`` + ``Images/<city>/``; maps go to
    ``Segmentation/<city>/<image stem>.png``, or ``<maps_dir>/<city>/``). ``splits`` limits
    the splits (``None``: all). ``image_size`` is the network input (see
    :class:`Segmenter`: one value is the shorter side, aspect ratio kept).

    Existing maps are kept (counted as skipped) unless ``overwrite``. An
    unreadable image raises ``ImageLoadError`` naming it, or with
    ``skip_bad_images`` is logged and counted as failed (for ``.mat`` files,
    listed images that are missing are left out by the reader, with a warning).
    ``num_workers`` processes decode images while the network runs. Also writes
    ``<maps_dir>/classes.json`` next to the maps. ``maps_dir`` (one folder name in
    the root, default ``segmentation``) is where the map tree goes, e.g.
    ``segmentation-predicted`` to keep ground-truth maps untouched.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    root = Path(root)
    start = time.perf_counter()
    report = SegmentationReport(root=root, model=str(model_id_or_path))
    if not root.exists():
        raise FileNotFoundError(f"dataset path {root} does not exist")
    if is_place_images_root(root):
        # A place set's maps sit in Segmentation/<city>/ unless another folder is named.
        if splits or name is not None:
            raise ValueError("splits and name apply to datasets with splits; a place set (GSV-Cities layout) has none")
        maps_dir = check_place_maps_dir(PLACE_MAPS_DIR if maps_dir == DEFAULT_SEGMENTATION_DIR else maps_dir)
        paths = open_place_images(root, min_views=1).paths  # maps: <maps_dir>/<city>/<image stem>.png
        jobs = [_Job(path, root / maps_dir / path.parent.name / (path.stem + ".png")) for path in paths]
        image_roots = [root]
    elif root.is_file() or not (root / "images").is_dir():
        maps_dir = check_segmentation_dir(maps_dir)
        if root.is_file() and root.suffix.lower() != ".mat":
            raise FileNotFoundError(f"{root} is a file but not a NetVLAD .mat structure file")
        if root.is_dir() and not glob_mat_files(root, "*.mat"):
            raise FileNotFoundError(
                f"{root} holds neither images/ (folder format ROOT/images/<split>/...) nor NetVLAD .mat files"
            )
        jobs, image_roots = _mat_jobs(root, splits, name, skip_bad_images, maps_dir)
    else:
        if name is not None:
            raise ValueError("name picks a set of .mat files; a folder-format dataset has one set")
        maps_dir = check_segmentation_dir(maps_dir)
        jobs = [_Job(root / "images" / r, segmentation_path(root, r, maps_dir)) for r in find_images(root, splits)]
        image_roots = [root]
    todo = [job for job in jobs if overwrite or not job.map_path.is_file()]
    report.skipped = len(jobs) - len(todo)
    classes_paths = [image_root / maps_dir / "classes.json" for image_root in image_roots]
    report.classes_path = classes_paths[0] if classes_paths else None
    if not todo and all(path.is_file() for path in classes_paths):
        report.seconds = time.perf_counter() - start
        return report
    for path in classes_paths:
        _warn_if_model_changed(path, str(model_id_or_path), report.skipped)
    segmenter = Segmenter(model_id_or_path, device=device, image_size=image_size)
    for image_root in image_roots:
        write_classes_file(image_root, segmenter, maps_dir)
    log.info("segmenting %d images of %s (%d already done) with %s", len(todo), root, report.skipped, segmenter.name)

    loader = DataLoader(todo, batch_size=batch_size, num_workers=num_workers, collate_fn=_load_jobs)
    with tqdm(total=len(todo), desc="segmenting", unit="img", disable=not progress) as bar:
        for items in loader:
            batch = []
            for job, image, error in items:
                if error is None:
                    batch.append((job, image))
                    continue
                if not skip_bad_images:
                    raise error
                log.warning("skipping unreadable image: %s", error)
                report.failed += 1
                report.failed_paths.append(job.image)
            for (job, _), class_map in zip(batch, segmenter.segment([image for _, image in batch])):
                write_class_map(job.map_path, class_map)
                report.written += 1
            bar.update(len(items))
    report.seconds = time.perf_counter() - start
    return report

"""Datasets of geotagged images: `PlaceDataset`, `PlaceImages`, readers, image loading, transforms.

Names are imported on first use, so ``import vprdistill.data`` stays cheap and
torch is loaded only by the pieces that need it. The SynthCity generator is the
separate package ``vprdistill.data.synth``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vprdistill.data.images import ImageLoadError, load_image, load_segmentation, verify_image
    from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
    from vprdistill.data.place_images import PlaceImages, is_place_images_root, open_place_images
    from vprdistill.data.readers import (
        PlaceFilename,
        find_mat_file,
        open_dataset,
        parse_place_filename,
        read_folder_dataset,
        read_mat_dataset,
    )
    from vprdistill.data.structural import DEFAULT_STRUCTURAL_CLASSES, StructuralClassMap
    from vprdistill.data.torch_datasets import ImagePathDataset, SegmentationPathDataset
    from vprdistill.data.transforms import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        SegmentationTransform,
        build_segmentation_transform,
        build_transform,
    )

_EXPORTS = {
    "ImageLoadError": "images",
    "load_image": "images",
    "load_segmentation": "images",
    "verify_image": "images",
    "DatasetFormatError": "place_dataset",
    "PlaceDataset": "place_dataset",
    "PlaceImages": "place_images",
    "is_place_images_root": "place_images",
    "open_place_images": "place_images",
    "PlaceFilename": "readers",
    "find_mat_file": "readers",
    "open_dataset": "readers",
    "parse_place_filename": "readers",
    "read_folder_dataset": "readers",
    "read_mat_dataset": "readers",
    "DEFAULT_STRUCTURAL_CLASSES": "structural",
    "StructuralClassMap": "structural",
    "ImagePathDataset": "torch_datasets",
    "SegmentationPathDataset": "torch_datasets",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "SegmentationTransform": "transforms",
    "build_segmentation_transform": "transforms",
    "build_transform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

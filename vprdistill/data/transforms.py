"""Image → tensor pipelines: RGB photos (ImageNet-normalised) and one-hot segmentation maps.

torchvision is imported when a pipeline is built, so that reading datasets does
not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vprdistill.data.structural import StructuralClassMap, as_class_ids

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_size_hw(image_size: Sequence[int] | int) -> tuple[int, int]:
    """``224`` or ``[224]`` → ``(224, 224)``; ``(H, W)`` is checked and returned."""
    size = (image_size,) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def build_transform(
    image_size: tuple[int, int] | int, augment: bool = False, augment_ops: int = 0
) -> Callable[[Image.Image], torch.Tensor]:
    """A PIL RGB image → ``(3, H, W)`` float32 tensor normalised with ImageNet statistics.

    ``augment`` (training only, when a config asks) replaces the resize with a
    random crop of 80-100 % of the area and adds mild colour jitter; with it,
    ``augment_ops`` > 0 adds torchvision's RandAugment with that many operations
    per image (the GSV-Cities recipe of MixVPR and SALAD uses 3).
    """
    import torch
    from torchvision.transforms import v2

    size = image_size_hw(image_size)
    if augment:
        geometry = [
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
        if augment_ops:
            geometry.append(v2.RandAugment(num_ops=augment_ops, interpolation=v2.InterpolationMode.BILINEAR))
    else:
        geometry = [v2.Resize(size, antialias=True)]
    return v2.Compose(
        [
            *geometry,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )


class SegmentationTransform:
    """A class-id map ``(H, W)`` uint8 → one-hot ``(C, H, W)`` float32 at ``image_size``.

    Resizing uses nearest neighbour, since interpolated class ids would be
    meaningless. A class (not a closure) so that data-loader workers can pickle it.
    """

    def __init__(self, image_size: tuple[int, int] | int, class_map: StructuralClassMap) -> None:
        self.size = image_size_hw(image_size)
        self.class_map = class_map

    def __call__(self, ids: np.ndarray | Image.Image) -> torch.Tensor:
        image = ids if isinstance(ids, Image.Image) else Image.fromarray(as_class_ids(ids, map_2d=True))
        if image.mode not in ("L", "P"):
            raise ValueError(f"expected a single-channel class-id map, got a {image.mode} image")
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.NEAREST)
        return self.class_map.one_hot(np.asarray(image))


def build_segmentation_transform(
    image_size: tuple[int, int] | int,
    num_classes: int | None = None,
    class_map: StructuralClassMap | None = None,
) -> SegmentationTransform:
    """A class-id map → one-hot ``(C, H, W)`` tensor of structural classes.

    ``class_map`` maps the source ids (default: the package's Cityscapes-trainId
    mapping). With only ``num_classes``, the maps already hold structural
    indices ``0..C-1``. When both are given they must agree.
    """
    if class_map is None:
        class_map = StructuralClassMap.from_yaml() if num_classes is None else StructuralClassMap.identity(num_classes)
    if num_classes is not None and num_classes != class_map.num_classes:
        raise ValueError(f"num_classes={num_classes} but the class map has {class_map.num_classes} classes")
    return SegmentationTransform(image_size, class_map)

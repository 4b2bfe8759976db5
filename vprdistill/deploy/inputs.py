"""Turning what a caller hands the localizer (paths, PIL images, arrays, bytes) into RGB images.

``ImageLoadError`` (a ``ValueError``) is re-exported for the service, which sees images only through here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from vprdistill.data.images import ImageLoadError, load_image

__all__ = ["ImageLoadError", "ImageInput", "as_image_list", "decode_image_bytes", "source_name", "to_rgb_image"]

ImageInput = str | Path | Image.Image | np.ndarray | bytes

# 40 megapixels: above any camera a localisation query comes from, well below
# what would let a small compressed upload expand into gigabytes of pixels.
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image_bytes(data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, ...) to upright RGB; ``ImageLoadError`` naming ``name`` otherwise."""
    if not data:
        raise ImageLoadError(f"cannot decode image {name}: it is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise ImageLoadError(
                    f"image {name} is {width}×{height} pixels, above the limit of {max_pixels:,} pixels"
                )
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many unrelated types for bytes that are not an image
        raise ImageLoadError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc


def array_to_image(array: np.ndarray) -> Image.Image:
    """`(H, W)` or `(H, W, 3)` uint8 (or float in [0, 1]) array → RGB image."""
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError("a float image array must hold values in [0, 1]")
        array = np.rint(array * 255.0)
    elif array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"an integer image array must hold values in 0..255, got dtype {array.dtype}")
    array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def to_rgb_image(item: ImageInput) -> Image.Image:
    """One input → RGB PIL image (paths go through ``vprdistill.data.load_image``)."""
    if isinstance(item, Image.Image):
        return item if item.mode == "RGB" else item.convert("RGB")
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, (bytes, bytearray)):
        return decode_image_bytes(bytes(item))
    if isinstance(item, np.ndarray):
        return array_to_image(item)
    raise TypeError(f"cannot read an image from {type(item).__name__}; pass a path, PIL image, array or bytes")


def as_image_list(image_or_batch: Any) -> list[ImageInput]:
    """A list/tuple or a `(B, H, W, C)` array is a batch of images; anything else is one image."""
    if isinstance(image_or_batch, (list, tuple)):
        return list(image_or_batch)
    if isinstance(image_or_batch, np.ndarray) and image_or_batch.ndim == 4:
        return list(image_or_batch)
    return [image_or_batch]


def source_name(item: ImageInput) -> str | None:
    """A name for the results of ``item``: its path, or the file name a PIL image was read from."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, Image.Image):
        return getattr(item, "filename", None) or None
    return None


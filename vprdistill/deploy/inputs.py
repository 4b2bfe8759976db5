"""Turning what a caller hands the localizer (paths, PIL images, arrays, bytes) into RGB images.

``ImageLoadError`` (a ``ValueError``) is re-exported for the service, which sees images only through here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from vprdistill.data.images import ImageLoadError, load_image, open_photo

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageInput",
    "ImageLoadError",
    "ImageTooLargeError",
    "as_image_list",
    "check_image_header",
    "decode_image_bytes",
    "decode_image_file",
    "source_name",
    "to_rgb_image",
]

ImageInput = str | Path | Image.Image | np.ndarray | bytes

# 16 megapixels: a 12 MP phone photo (4032×3024), a 16 MP camera (4608×3456) and
# a 4K video frame fit. The network sees far less (the index's image size, such
# as 480×640 = 0.3 MP: every photo is resized to it), so larger photos add no
# information, only decode memory: 4 bytes a pixel as PIL holds RGB, 64 MB here.
DEFAULT_MAX_PIXELS = 16_000_000


class ImageTooLargeError(ImageLoadError):
    """An image whose header announces more pixels than the limit (refused before any pixel is decoded)."""


def _open_checked(file: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Open ``file`` lazily (header only) and refuse it when empty, of another format or too large."""
    file.seek(0, io.SEEK_END)
    if file.tell() == 0:
        raise ImageLoadError(f"cannot decode image {name}: it is empty")
    file.seek(0)
    try:
        image = open_photo(file)
    except Image.DecompressionBombError as exc:  # Pillow's own limit (179 MP): ours is lower unless raised past it
        raise ImageTooLargeError(f"image {name} is too large: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(f"image {name} is {width}×{height} pixels, above the limit of {max_pixels:,} pixels")
    return image


def check_image_header(file: BinaryIO, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header of an encoded image, without decoding it.

    Raises ``ImageTooLargeError`` above ``max_pixels`` and ``ImageLoadError`` (naming ``name``)
    for a file that is empty or not a JPEG, PNG, WebP, BMP or TIFF image.
    """
    try:
        with _open_checked(file, name, max_pixels) as image:
            return image.size
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many unrelated types for bytes that are not an image
        raise ImageLoadError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc


def decode_image_file(file: BinaryIO, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an encoded image from a binary file to upright RGB; errors as ``check_image_header``.

    Memory: the decoded image (4 bytes a pixel), plus one more copy while a
    non-RGB image (grey, palette, CMYK, alpha) is converted or an EXIF rotation applied.
    """
    try:
        # Not closed: the caller owns ``file``, and closing a PIL image frees its pixels.
        image = _open_checked(file, name, max_pixels)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many unrelated types for bytes that are not an image
        raise ImageLoadError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc


def decode_image_bytes(data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, WebP, BMP, TIFF) to upright RGB; see ``decode_image_file``."""
    return decode_image_file(io.BytesIO(data), name, max_pixels)


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

"""Turning what a caller hands the localizer (paths, PIL images, arrays, bytes) into RGB images.

Every input goes through one decoder, ``vprdistill.data.images.to_upright_rgb``
(EXIF rotation, alpha on white, 16-bit scaled), so a photo gives the same pixels
as a path, as bytes, as a service upload, as a PIL image or as the array of its
pixels. Files, bytes and PIL images say their own channel order; arrays do not,
and are read as RGB unless ``channel_order="BGR"`` says otherwise (OpenCV and
ROS ``cv_bridge`` frames).

``ImageLoadError`` (a ``ValueError``) is re-exported for the service, which sees images only through here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from vprdistill.data.images import ImageLoadError, load_image, open_photo, scale_to_8bit, to_upright_rgb

__all__ = [
    "CHANNEL_ORDERS",
    "DEFAULT_MAX_PIXELS",
    "ImageInput",
    "ImageLoadError",
    "ImageTooLargeError",
    "array_to_image",
    "as_image_list",
    "check_channel_order",
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

# The channel orders an array may come in. "RGBA" and "BGRA" are accepted as the names of
# 4-channel arrays; the fourth channel is alpha whichever name is given.
CHANNEL_ORDERS = ("RGB", "BGR", "RGBA", "BGRA")


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
    """Decode an encoded image from a binary file to upright 8-bit RGB; errors as ``check_image_header``.

    The pixels are those ``load_image`` gives for the same file (both go through
    ``vprdistill.data.images.to_upright_rgb``). Memory: the decoded image (4 bytes
    a pixel), plus one more copy while a non-RGB image (grey, palette, CMYK,
    alpha, 16-bit) is converted or an EXIF rotation applied.
    """
    try:
        # Not closed: the caller owns ``file``, and closing a PIL image frees its pixels.
        image = _open_checked(file, name, max_pixels)
        return to_upright_rgb(image, in_place=True)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many unrelated types for bytes that are not an image
        raise ImageLoadError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc


def decode_image_bytes(data: bytes, name: str = "upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an encoded image (JPEG, PNG, WebP, BMP, TIFF) to upright RGB; see ``decode_image_file``."""
    return decode_image_file(io.BytesIO(data), name, max_pixels)


def check_channel_order(channel_order: str) -> bool:
    """Whether arrays in ``channel_order`` (one of ``CHANNEL_ORDERS``) are blue first; ``ValueError`` otherwise."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    return channel_order.startswith("BGR")


def array_to_image(array: np.ndarray, channel_order: str = "RGB") -> Image.Image:
    """An image array → upright 8-bit RGB image, as ``to_upright_rgb`` decodes the same pixels from a file.

    ``array``: `(H, W)`, `(H, W, 1)` (grey), `(H, W, 3)` (colour) or `(H, W, 4)`
    (colour + alpha, composited on white). Values: uint8; other integers in
    0..65535, read as 16-bit (÷ 257) when any is above 255, as 8-bit otherwise;
    floats in [0, 1] (× 255). ``channel_order``: ``"RGB"`` (the default) or
    ``"BGR"`` (OpenCV, ROS ``cv_bridge``); a 4-channel array is RGBA or BGRA,
    and ``"RGBA"``/``"BGRA"`` name the same orders. It does not matter for grey
    arrays. Raises ``ValueError`` naming the shape, values or channel order.
    """
    blue_first = check_channel_order(channel_order)
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = _array_to_8bit(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if blue_first and array.ndim == 3:
        array = array[:, :, [2, 1, 0, 3][: array.shape[2]]]
    # C order: Image.fromarray copies a strided array through ``tobytes`` anyway.
    return to_upright_rgb(Image.fromarray(np.ascontiguousarray(array)), in_place=True)


def _array_to_8bit(array: np.ndarray) -> np.ndarray:
    """Check an image array's values and scale them to uint8 (``vprdistill.data.images.scale_to_8bit``)."""
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise ValueError("a float image array must hold finite values in [0, 1]")
    elif np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(
                f"an integer image array must hold values in 0..255 (8-bit) or 0..65535 (16-bit), "
                f"got {array.min()}..{array.max()} ({array.dtype})"
            )
    else:
        raise ValueError(f"an image array must hold integers or floats, got dtype {array.dtype}")
    return scale_to_8bit(array)


def to_rgb_image(item: ImageInput, channel_order: str = "RGB") -> Image.Image:
    """One input → upright 8-bit RGB PIL image, the same pixels whichever form a photo arrives in.

    Paths go through ``vprdistill.data.load_image``, bytes through
    ``decode_image_bytes``, PIL images through ``to_upright_rgb`` (their EXIF
    rotation applied, alpha on white; the image handed in is not changed),
    arrays through ``array_to_image`` with ``channel_order``, which only arrays
    need (a file or PIL image says its own order) but is checked for every input.
    """
    blue_first = check_channel_order(channel_order)
    if isinstance(item, Image.Image):
        return to_upright_rgb(item)
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, (bytes, bytearray)):
        return decode_image_bytes(bytes(item))
    if isinstance(item, np.ndarray):
        return array_to_image(item, "BGR" if blue_first else "RGB")
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

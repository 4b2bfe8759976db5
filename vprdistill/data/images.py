"""Reading images and segmentation maps from disk, with errors that name the file.

Photos arrive in every form a camera or a web crawl produces (grayscale,
16-bit, CMYK, palette, transparency, EXIF rotation); ``load_image`` turns each
into the upright 8-bit RGB image a network expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Modes with an alpha channel; transparent pixels are composited on white
# (the usual background of cut-out photos) rather than on whatever colour the
# hidden pixels happen to hold.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SEGMENTATION_MODES = {"L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}

# The formats photos come in. Pillow knows some forty more, some decoded by
# external programs (EPS runs Ghostscript): none of them is opened, so a
# hostile file cannot reach those decoders.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
PHOTO_FORMATS_TEXT = "JPEG, PNG, WebP, BMP or TIFF"


class ImageLoadError(ValueError):
    """An image or segmentation map is missing, corrupt or of an unusable form."""


def open_photo(source: str | Path | BinaryIO) -> Image.Image:
    """``Image.open`` limited to ``PHOTO_FORMATS`` (lazy: only the header is read)."""
    try:
        return Image.open(source, formats=PHOTO_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnidentifiedImageError(f"not a {PHOTO_FORMATS_TEXT} image") from exc


def load_image(path: str | Path) -> Image.Image:
    """Load ``path`` as an upright 8-bit RGB image (EXIF orientation applied).

    Raises ``ImageLoadError`` naming the file and the reason when it is missing or
    cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"cannot load image {path}: file not found")
    try:
        with open_photo(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except Exception as exc:  # PIL's decoders raise many unrelated types for a broken file
        raise ImageLoadError(f"cannot load image {path}: {type(exc).__name__}: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_MODES:
        image = Image.fromarray(_to_8bit(np.asarray(image)), mode="L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer / float) single-channel image to uint8.

    PIL's own conversion clips at 255 instead of scaling, which turns most
    16-bit photos white. Values above 255 are read as 16-bit; floats in [0, 1]
    as normalised intensities.
    """
    is_float = np.issubdtype(values.dtype, np.floating)
    values = values.astype(np.float64)
    if values.size and values.max() > 255:
        values = values / 257.0
    elif values.size and is_float and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def load_segmentation(path: str | Path) -> np.ndarray:
    """Load a segmentation map: a single-channel PNG of class ids → ``(H, W)`` uint8.

    Palette PNGs are read as their palette indices (the class ids), not their
    colours. Raises ``ImageLoadError`` naming the file for a missing or corrupt
    file, a non-PNG (lossy compression changes class ids), a multi-channel image,
    or ids above 255.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"cannot load segmentation map {path}: file not found")
    try:
        with open_photo(path) as image:
            image.load()
            image_format, mode, bands = image.format, image.mode, len(image.getbands())
            ids = np.asarray(image)
    except Exception as exc:
        raise ImageLoadError(f"cannot load segmentation map {path}: {type(exc).__name__}: {exc}") from exc
    if image_format != "PNG":
        raise ImageLoadError(f"segmentation map {path} is {image_format}, expected a PNG of class ids")
    if mode not in _SEGMENTATION_MODES:
        raise ImageLoadError(
            f"segmentation map {path} has mode {mode} ({bands} channels), expected a single-channel PNG of class ids"
        )
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ImageLoadError(f"segmentation map {path} holds class ids up to {ids.max()}, expected at most 255")
    return ids.astype(np.uint8)


def verify_image(path: str | Path) -> str | None:
    """Why ``path`` is not a readable image, or ``None`` when it is.

    Cheaper than a full load: PIL's structural check (PNG checksums included),
    then a JPEG decode at 1/8 scale, which still reads every compressed byte and
    so catches truncated files.
    """
    path = Path(path)
    if not path.is_file():
        return "file not found"
    try:
        with open_photo(path) as image:
            image.verify()
        with open_photo(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

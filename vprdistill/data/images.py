"""Reading images and segmentation maps from disk, with errors that name the file.

Photos arrive in every form a camera or a web crawl produces (grayscale,
16-bit, CMYK, palette, transparency, EXIF rotation); ``load_image`` turns each
into the upright 8-bit RGB image a network expects, through ``to_upright_rgb``,
the decoder the service and the localizer use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from vprdistill.utils.logging import get_logger

log = get_logger("data.images")

# Modes with an alpha channel; transparent pixels are composited on white
# (the usual background of cut-out photos) rather than on whatever colour the
# hidden pixels happen to hold.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SEGMENTATION_MODES = {"L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"}
# Scaling and compositing go a block of rows of about this many pixels at a time: the temporary
# arrays stay a few MB however large the photo, and decoding adds one full-size copy at most.
_BLOCK_PIXELS = 1 << 18

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
    """Load ``path`` as an upright 8-bit RGB image (``to_upright_rgb``: EXIF orientation, alpha, 16-bit).

    Raises ``ImageLoadError`` naming the file and the reason when it is missing or
    cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"cannot load image {path}: file not found")
    try:
        with open_photo(path) as opened:
            image = to_upright_rgb(opened, in_place=True)
            # Leaving the ``with`` closes ``opened``, which frees its pixels: an image that was already
            # upright RGB is copied out first.
            return image.copy() if image is opened else image
    except Exception as exc:  # PIL's decoders raise many unrelated types for a broken file
        raise ImageLoadError(f"cannot load image {path}: {type(exc).__name__}: {exc}") from exc


def to_upright_rgb(image: Image.Image, *, in_place: bool = False) -> Image.Image:
    """The one decoder of every entry point: an opened PIL image → upright 8-bit RGB.

    In order: the pixels are loaded; the EXIF (or XMP) orientation is applied;
    16-bit, 32-bit integer and float single-channel images are scaled to 8 bits
    (``scale_to_8bit``); images with an alpha channel or a transparent colour
    (RGBA, LA, PA, palette or grey with ``transparency``) are composited on
    white, ``(c·a + 255·(255 - a)) / 255`` rounded; grey, palette, CMYK and
    the rest are converted by PIL. ``load_image``, ``decode_image_file`` (the
    service's uploads and encoded bytes) and ``to_rgb_image`` (PIL images and
    arrays) all go through here, so one photo gives the same pixels whichever
    way it arrives.

    ``in_place=False`` leaves ``image`` as it is (it is returned itself when
    already upright RGB). ``in_place=True`` applies the rotation to ``image``
    itself, saving a copy of the pixels, for a caller that opened it and drops
    it afterwards.

    Memory: besides ``image``, at most one more full-size image of 4 bytes a
    pixel (the rotated or converted copy) and blocks of about 256 K pixels at a
    time, so the service's bound of 8 bytes a pixel holds for every mode.
    """
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation, 1) not in (None, 1):
        if in_place:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_BIT_MODES:
        return _high_bit_to_rgb(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _row_blocks(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes of whole rows, about ``_BLOCK_PIXELS`` pixels each, covering an image of ``size``."""
    width, height = size
    step = max(1, _BLOCK_PIXELS // max(1, width))
    return [(0, top, width, min(top + step, height)) for top in range(0, height, step)]


def _high_bit_to_rgb(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image → grey RGB, scaled by ``scale_to_8bit``'s rule.

    Written into the RGB image a block at a time: a full-size grey copy on top
    of a 4-byte source and the RGB answer would pass 8 bytes a pixel.
    """
    low, high = image.getextrema()
    scale = _scale_for(low, high, is_float=image.mode == "F")
    rgb = Image.new("RGB", image.size)
    for box in _row_blocks(image.size):
        grey = Image.fromarray(_apply_scale(np.asarray(image.crop(box)), scale))
        rgb.paste(grey.convert("RGB"), box[:2])
    return rgb


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Any image with alpha or a transparent colour → RGB composited on white, exactly
    ``round((c·a + 255·(255 - a)) / 255)``; converted a block of rows at a time, so no
    full-size RGBA copy is made (a palette image would otherwise need one)."""
    rgb = Image.new("RGB", image.size, (255, 255, 255))
    for box in _row_blocks(image.size):
        block = image.crop(box).convert("RGBA")  # crop keeps the palette and the transparency
        rgb.paste(block, box[:2], block)  # the block's alpha as the mask: a blend over white
    return rgb


def scale_to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer / float) image array, any shape, to uint8.

    PIL's own conversion clips at 255 instead of scaling, which turns most
    16-bit photos white. When the largest value is above 255 every value is
    read as 16-bit (divided by 257: 65535 → 255); floats all in [0, 1] as
    normalised intensities (× 255); anything else is kept; then rounded and
    clipped to 0..255. Computed a block of rows at a time: a full float64 copy
    of a large photo would take 8 bytes a value.
    """
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=np.uint8)
    if values.size == 0:
        return out
    scale = _scale_for(values.min(), values.max(), is_float=np.issubdtype(values.dtype, np.floating))
    rows = max(1, _BLOCK_PIXELS // max(1, values[:1].size))
    for top in range(0, len(values), rows):
        out[top : top + rows] = _apply_scale(values[top : top + rows], scale)
    return out


def _scale_for(low: float, high: float, is_float: bool) -> tuple[float, float]:
    """``(multiplier, divisor)`` of ``scale_to_8bit``'s rule for values in ``[low, high]``."""
    if high > 255:
        return 1.0, 257.0
    if is_float and low >= 0.0 and high <= 1.0:
        return 255.0, 1.0
    return 1.0, 1.0


def _apply_scale(values: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    multiplier, divisor = scale
    return np.clip(np.rint(values.astype(np.float64) * multiplier / divisor), 0, 255).astype(np.uint8)


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


def readable_indices(paths: Sequence[Path], label: str, where: str) -> list[int]:
    """Indices of the ``paths`` that :func:`verify_image` accepts, in order.

    Each other one is logged as a warning naming it and why, then their count;
    ``label`` (e.g. ``database``) and ``where`` (the dataset) word the messages.
    """
    keep = []
    for index, path in enumerate(tqdm(paths, desc=f"checking {where} {label}", unit="img", leave=False, disable=None)):
        reason = verify_image(path)
        if reason is None:
            keep.append(index)
        else:
            log.warning("skipping unreadable %s image %s: %s", label, path, reason)
    if len(keep) < len(paths):
        log.warning("skipped %d of %d %s images of %s", len(paths) - len(keep), len(paths), label, where)
    return keep

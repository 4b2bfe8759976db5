"""A picture of a dataset: sample images over their coloured class maps, with the condition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vprdistill.data.synth.classes import colorize
from vprdistill.data.synth.traversal import ImageSpec

LABEL_HEIGHT = 14


def pick_samples(database: list[ImageSpec], queries: list[ImageSpec], count: int = 12) -> list[ImageSpec]:
    """One database image, then the first query of each condition, then more queries, up to ``count``."""
    samples = [database[len(database) // 2]] if database else []
    seen: set[str] = set()
    for spec in queries:
        if spec.condition not in seen:
            seen.add(spec.condition)
            samples.append(spec)
    samples += [q for q in queries if q not in samples][: max(0, count - len(samples))]
    return samples[:count]


def make_contact_sheet(items: list[tuple[Path, Path, str]], out_path: Path, columns: int = 6, cell: int = 128) -> Path:
    """Grid of (image, class map, label) triples: image on top, colourised map below, label under both."""
    rows = (len(items) + columns - 1) // columns
    height = 2 * cell + LABEL_HEIGHT
    sheet = Image.new("RGB", (columns * cell, rows * height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=10)
    for i, (image_path, seg_path, label) in enumerate(items):
        x, y = (i % columns) * cell, (i // columns) * height
        with Image.open(image_path) as image:
            sheet.paste(image.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        with Image.open(seg_path) as seg:
            coloured = Image.fromarray(colorize(np.asarray(seg)))
        sheet.paste(coloured.resize((cell, cell), Image.NEAREST), (x, y + cell))
        draw.text((x + 3, y + 2 * cell + 1), label, fill=(0, 0, 0), font=font)
    sheet.save(out_path, format="PNG", optimize=True)
    return out_path

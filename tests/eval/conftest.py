"""A tiny folder-format dataset: coloured-noise places whose queries are near-copies of their database image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

IMAGE_SIDE = 48
NUM_DATABASE = 8
# (database image it copies, note); None: a query far from every database image.
QUERIES = [(0, "day"), (2, "day"), (3, "night"), (5, "night"), (6, ""), (None, "day")]
EAST0, NORTH0, SPACING_M = 500000.0, 4000000.0, 100.0


def place_name(east: float, north: float, note: str) -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@@@@@@@@@@{note}@.jpg"


def noise_image(rng: np.random.Generator) -> np.ndarray:
    """Smooth coloured noise (survives JPEG), (H, W, 3) float in [0, 255]."""
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float64)


def save_jpeg(values: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).save(path, quality=95)


def save_class_map(rng: np.random.Generator, path: Path) -> None:
    """Blocks of Cityscapes trainIds 0..18 as a single-channel PNG."""
    ids = rng.integers(0, 19, (6, 6)).astype(np.uint8)
    Image.fromarray(ids, mode="L").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.NEAREST).save(path)


@pytest.fixture(scope="session")
def tiny_places(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/images/test/{database,queries} with 8 database images 100 m apart and 6 queries.

    Query i lies 4 m from, and looks like, database image ``QUERIES[i][0]`` (the
    last query lies 5 km away: it has no positive). Notes give conditions
    day / night / none. Segmentation maps mirror the tree.
    """
    root = tmp_path_factory.mktemp("tiny_places")
    rng = np.random.default_rng(0)
    folders = {}
    for kind in ("images", "segmentation"):
        for subset in ("database", "queries"):
            folders[kind, subset] = root / kind / "test" / subset
            folders[kind, subset].mkdir(parents=True)
    places = [noise_image(rng) for _ in range(NUM_DATABASE)]
    for index, image in enumerate(places):
        name = place_name(EAST0 + SPACING_M * index, NORTH0, "")
        save_jpeg(image, folders["images", "database"] / name)
        save_class_map(rng, folders["segmentation", "database"] / Path(name).with_suffix(".png"))
    for source, note in QUERIES:
        if source is None:
            east, image = EAST0 - 5000.0, noise_image(rng)
        else:
            east, image = (
                EAST0 + SPACING_M * source + 4.0,
                0.9 * places[source] + rng.normal(0, 4, places[source].shape),
            )
        name = place_name(east, NORTH0 + 1.0, note)
        save_jpeg(image, folders["images", "queries"] / name)
        save_class_map(rng, folders["segmentation", "queries"] / Path(name).with_suffix(".png"))
    return root

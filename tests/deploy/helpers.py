"""Tiny on-disk fixtures shared by the deployment and service tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SIDE = 64
SPACING_M = 50.0  # database images 50 m apart: each query has exactly one positive within 25 m


def place_name(east: float, north: float, note: str = "") -> str:
    return f"@{east:.2f}@{north:.2f}@17@T@@@@@@@@@@{note}@.jpg"


def pattern_image(rng: np.random.Generator, side: int = IMAGE_SIDE) -> np.ndarray:
    """A distinct picture: a random 4×4 colour layout blown up to ``side`` pixels, plus noise. `(H, W, 3)` uint8."""
    layout = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((side, side), Image.BILINEAR)
    noisy = np.asarray(layout, dtype=np.float32) + rng.normal(0, 8, (side, side, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def near_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same picture with a little sensor noise (saved again as JPEG by the caller)."""
    return np.clip(image.astype(np.float32) + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def write_split(root: Path, split: str, num_database: int, query_rows: list[int], seed: int) -> list[Path]:
    """Database images along a street (east = i·50 m) and queries that are near-copies of ``query_rows``."""
    rng = np.random.default_rng(seed)
    database_dir = root / "images" / split / "database"
    query_dir = root / "images" / split / "queries"
    database_dir.mkdir(parents=True)
    query_dir.mkdir(parents=True)
    pictures, paths = [], []
    for i in range(num_database):
        picture = pattern_image(rng)
        pictures.append(picture)
        path = database_dir / place_name(1000.0 + SPACING_M * i, 5000.0)
        Image.fromarray(picture).save(path, quality=95)
        paths.append(path)
    for i in query_rows:
        name = place_name(1000.0 + SPACING_M * i + 1.0, 5000.0 + 1.0, note=f"q{i}")
        Image.fromarray(near_copy(pictures[i], rng)).save(query_dir / name, quality=90)
    return paths


def make_dataset(root: Path) -> Path:
    """test: 12 database images, queries copying rows 1, 4, 7, 10; val: 16 database images, every one copied."""
    write_split(root, "test", 12, [1, 4, 7, 10], seed=1)
    write_split(root, "val", 16, list(range(16)), seed=2)
    return root


def save_tiny_model(folder: Path, preset: str = "resnet18-gem", seed: int = 0) -> Path:
    """A randomly initialised real model saved as safetensors + JSON; returns the stem."""
    from vprdistill.models.checkpoint import save_model
    from vprdistill.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model(preset).eval()
    stem = folder / f"{preset}-seed{seed}"
    save_model(model, stem)
    return stem

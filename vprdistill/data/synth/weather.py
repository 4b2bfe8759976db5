"""Image-space weather: haze and fog, wet-road reflections, rain streaks, snowflakes, sensor noise."""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth.frame import SURFACE_GROUND, SURFACE_SKY, Frame
from vprdistill.data.synth.lighting import Lighting


def add_reflections(colour: np.ndarray, frame: Frame, horizon: float, strength: float) -> np.ndarray:
    """Mirror what stands above the horizon into wet ground below it (the classic screen-space trick)."""
    size = frame.size
    rows = np.arange(size)
    mirror = np.clip(np.round(2 * horizon - rows - 1).astype(np.int64), 0, size - 1)
    reflected = colour[mirror]
    blurred = (reflected + np.roll(reflected, 1, axis=1) + np.roll(reflected, -1, axis=1)) / 3.0
    below = (rows[:, None] + 0.5 > horizon) & (frame.kind == SURFACE_GROUND)
    weight = strength * frame.wet * below
    return colour + blurred * weight[..., None] * 0.45


def add_haze(colour: np.ndarray, frame: Frame, lighting: Lighting) -> np.ndarray:
    """Fade surfaces towards the haze colour with distance (fog is the same with a short visibility)."""
    solid = frame.kind != SURFACE_SKY
    amount = np.where(solid, 1.0 - np.exp(-np.minimum(frame.depth, 1e4) / lighting.visibility_m), 0.0)
    return colour + (lighting.haze - colour) * amount[..., None]


def add_rain(colour: np.ndarray, rng: np.random.Generator, brightness: float) -> np.ndarray:
    """Slanted streaks of falling rain."""
    size = colour.shape[0]
    count = int(size * size / 110)
    length = max(3, size // 14)
    x0 = rng.uniform(-size * 0.1, size, count)
    y0 = rng.uniform(-length, size, count)
    slant = rng.uniform(0.12, 0.22)
    alpha = rng.uniform(0.08, 0.22, count) * brightness
    steps = np.arange(length)
    ys = (y0[:, None] + steps[None]).astype(np.int64)
    xs = (x0[:, None] + slant * steps[None]).astype(np.int64)
    inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
    flat = colour.reshape(-1, 3)
    index = (ys * size + xs)[inside]
    weights = np.broadcast_to(alpha[:, None], ys.shape)[inside]
    add = np.zeros(size * size, np.float32)
    np.add.at(add, index, weights)
    flat += add[:, None] * np.array([0.85, 0.87, 0.9], np.float32)
    return colour


def add_snowfall(colour: np.ndarray, rng: np.random.Generator, brightness: float) -> np.ndarray:
    """Flakes: soft white dots, larger ones (nearer) rarer."""
    size = colour.shape[0]
    count = int(size * size / 45)
    ys = rng.integers(0, size, count)
    xs = rng.integers(0, size, count)
    alpha = rng.uniform(0.35, 0.9, count) * brightness
    big = rng.random(count) < 0.2
    flake = np.array([0.95, 0.96, 0.98], np.float32)
    for dy, dx, use in ((0, 0, np.ones(count, bool)), (0, 1, big), (1, 0, big), (1, 1, big)):
        y, x = np.clip(ys + dy, 0, size - 1)[use], np.clip(xs + dx, 0, size - 1)[use]
        a = alpha[use][:, None]
        colour[y, x] = colour[y, x] * (1 - a) + flake * a
    return colour


def finish(colour: np.ndarray, rng: np.random.Generator, lighting: Lighting) -> np.ndarray:
    """Exposure, vignetting and sensor noise; returns ``uint8 (H, W, 3)``."""
    size = colour.shape[0]
    coords = (np.arange(size) + 0.5) / size - 0.5
    vignette = 1.0 - 0.35 * (coords[:, None] ** 2 + coords[None, :] ** 2)
    colour = colour * (lighting.exposure * vignette)[..., None]
    colour = colour / (1.0 + 0.25 * np.maximum(colour - 0.8, 0.0))  # soft shoulder for lamps and highlights
    colour = colour + rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(lighting.noise_sigma)
    return (np.clip(colour, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

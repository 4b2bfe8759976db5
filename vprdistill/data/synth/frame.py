"""The buffers one image is rendered into, before lighting turns them into colour."""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import classes as C


class Frame:
    """Per-pixel surface attributes ``(H, W, ...)``; ``flat`` views index pixels ``y·W + x``."""

    def __init__(self, size: int) -> None:
        shape = (size, size)
        self.size = size
        self.albedo = np.zeros(shape + (3,), np.float32)
        self.emissive = np.zeros(shape + (3,), np.float32)
        self.cls = np.full(shape, C.VOID, np.uint8)
        self.depth = np.full(shape, np.inf, np.float32)
        self.world = np.zeros(shape + (3,), np.float32)  # x, y, z of the surface, metres
        self.sun = np.zeros(shape, np.float32)  # cosine between surface normal and the sun, before the sun's colour
        self.wet = np.zeros(shape, np.float32)  # how mirror-like in rain
        self.normal = np.zeros(shape + (2,), np.float32)  # horizontal normal of walls; zero for ground and sprites
        self.kind = np.zeros(shape, np.uint8)  # SURFACE_* below

    def flat(self, name: str) -> np.ndarray:
        array = getattr(self, name)
        return array.reshape((self.size * self.size,) + array.shape[2:])


SURFACE_SKY, SURFACE_GROUND, SURFACE_WALL, SURFACE_SPRITE = 0, 1, 2, 3

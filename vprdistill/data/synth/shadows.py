"""Sun shadows of buildings, from a 1 m height raster of the city.

For a sun direction, ``obstruction[p]`` is the highest sun ray blocked above
ground cell ``p``: max over k of ``height(p + k·sun) − k·tan(elevation)``. A
point at height ``z`` is in shadow when ``z`` is below it. The map is built
once per process and sun (a pure function of the world, so identical in
every worker) and then costs one bilinear lookup per pixel.
"""

from __future__ import annotations

import math

import numpy as np

from vprdistill.data.synth.world import World

CELL_M = 1.0
MAX_REACH_M = 120.0


class ShadowMap:
    def __init__(self, world: World, azimuth_deg: float, elevation_deg: float) -> None:
        width = int(math.ceil(world.streets_x[-1] / CELL_M)) + 2
        height = int(math.ceil(world.streets_y[-1] / CELL_M)) + 2
        heights = np.zeros((height, width), np.float32)
        for x0, y0, x1, y1, h in world.footprints:
            c0, c1 = int(round(x0 / CELL_M)), int(round(x1 / CELL_M))
            r0, r1 = int(round(y0 / CELL_M)), int(round(y1 / CELL_M))
            block = heights[r0:r1, c0:c1]
            np.maximum(block, h, out=block)
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        step_x, step_y, drop = math.sin(az), math.cos(az), math.tan(el) * CELL_M
        reach = int(min(MAX_REACH_M, float(heights.max()) / max(drop, 1e-3)) / CELL_M)
        obstruction = heights.copy()
        for k in range(1, reach + 1):
            dx, dy = int(round(k * step_x)), int(round(k * step_y))
            if abs(dx) >= width or abs(dy) >= height:
                break
            source = heights[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
            target = obstruction[max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)]
            np.maximum(target, source - np.float32(k * drop), out=target)
        self.obstruction = obstruction

    def lit(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Share of sunlight reaching points ``(n,)`` in ``[0, 1]`` (soft over half a metre)."""
        rows, cols = self.obstruction.shape
        fx = np.clip(np.asarray(x, np.float32) / CELL_M - 0.5, 0, cols - 1.001)
        fy = np.clip(np.asarray(y, np.float32) / CELL_M - 0.5, 0, rows - 1.001)
        c, r = fx.astype(np.int64), fy.astype(np.int64)
        tx, ty = fx - c, fy - r
        o = self.obstruction
        top = o[r, c] * (1 - tx) + o[r, c + 1] * tx
        bottom = o[r + 1, c] * (1 - tx) + o[r + 1, c + 1] * tx
        blocked = top * (1 - ty) + bottom * ty
        return np.clip((z - blocked) / 0.5 + 0.5, 0.0, 1.0).astype(np.float32)


def shadow_map(world: World, azimuth_deg: float, elevation_deg: float) -> ShadowMap:
    """The shadow map of ``world`` for one sun, built on first use and kept with the world."""
    key = (round(azimuth_deg, 3), round(elevation_deg, 3))
    if key not in world.shadow_cache:
        world.shadow_cache[key] = ShadowMap(world, azimuth_deg, elevation_deg)
    return world.shadow_cache[key]

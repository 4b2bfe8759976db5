"""What lies on the ground at a world point: road, markings, sidewalk, lawn.

Evaluated analytically from the street grid (no raster), so any resolution
and any city size cost the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth.filters import band, pulse
from vprdistill.data.synth.noise import cell_rand, value_noise
from vprdistill.data.synth.world import GROUND_GRASS, World

ASPHALT = np.array([0.30, 0.30, 0.31], np.float32)
CONCRETE = np.array([0.62, 0.61, 0.58], np.float32)
KERB = np.array([0.72, 0.71, 0.68], np.float32)
WHITE_PAINT = np.array([0.88, 0.88, 0.86], np.float32)
YELLOW_PAINT = np.array([0.90, 0.74, 0.20], np.float32)
GRASS = {"summer": (0.30, 0.44, 0.18), "autumn": (0.44, 0.42, 0.20), "winter": (0.42, 0.40, 0.30)}
SNOW = np.array([0.90, 0.92, 0.95], np.float32)
SLUSH = np.array([0.62, 0.62, 0.64], np.float32)


@dataclass
class GroundSample:
    cls: np.ndarray  # (n,) uint8
    albedo: np.ndarray  # (n, 3) float32
    wet: np.ndarray  # (n,) how mirror-like the surface gets in rain, 0..1


def _nearest_street(value: np.ndarray, centres: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(centres, value), 1, len(centres) - 1)
    return np.where(value - centres[i - 1] < centres[i] - value, i - 1, i)


def _markings(offset: np.ndarray, along: np.ndarray, half: np.ndarray, avenue: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of white and yellow paint across a street at signed ``offset`` from its centre line."""
    a = np.abs(offset)
    dashes = pulse(along, 9.0, 3.0, fp)
    yellow = np.where(avenue, band(a, 0.08, 0.23, fp), band(a, -0.08, 0.08, fp) * dashes)
    white = np.where(avenue, band(a, 3.18, 3.32, fp) * dashes + band(a, half - 2.45, half - 2.3, fp), 0.0)
    return white.astype(np.float32), yellow.astype(np.float32)


def sample_ground(world: World, x: np.ndarray, y: np.ndarray, fp: np.ndarray, season: str, snowy: bool) -> GroundSample:
    """Ground class and colour at world points ``(n,)``; ``fp`` is each pixel's footprint in metres."""
    ix = _nearest_street(x, world.streets_x)
    iy = _nearest_street(y, world.streets_y)
    off_x, off_y = x - world.streets_x[ix], y - world.streets_y[iy]
    ax, ay = np.abs(off_x), np.abs(off_y)
    half_x, half_y = world.half_x[ix], world.half_y[iy]
    walk_x, walk_y = world.walk_x[ix], world.walk_y[iy]
    on_x, on_y = ax < half_x, ay < half_y
    road = on_x | on_y
    sidewalk = ~road & ((ax < half_x + walk_x) | (ay < half_y + walk_y))

    n = len(x)
    cls = np.full(n, C.SIDEWALK, np.uint8)
    albedo = np.empty((n, 3), np.float32)
    wet = np.zeros(n, np.float32)

    # Asphalt: large patches and fine grain; the grain fades where a pixel covers many grains.
    patches = value_noise(x / 6.0, y / 6.0, 11)
    grain = (cell_rand(x, y, 0.35, 12) - 0.5) * np.clip(1.0 - fp / 0.8, 0.0, 1.0)
    tone = 0.88 + 0.18 * patches + 0.12 * grain
    asphalt = ASPHALT * tone[:, None]
    # Lane markings on each street's own stretch, crosswalk stripes where it meets the cross street.
    w_ns, y_ns = _markings(off_x, y, half_x, world.avenue_x[ix], fp)
    w_ew, y_ew = _markings(off_y, x, half_y, world.avenue_y[iy], fp)
    ns_only, ew_only = on_x & ~on_y, on_y & ~on_x
    zebra_ns = pulse(off_x, 1.0, 0.5, fp) * band(ay, half_y + walk_y * 0.2, half_y + walk_y * 0.2 + 3.0, fp)
    zebra_ew = pulse(off_y, 1.0, 0.5, fp) * band(ax, half_x + walk_x * 0.2, half_x + walk_x * 0.2 + 3.0, fp)
    ns_far = ay > half_y + walk_y * 0.2 + 3.2
    ew_far = ax > half_x + walk_x * 0.2 + 3.2
    white = np.where(ns_only, np.where(ns_far, w_ns, zebra_ns), 0.0) + np.where(ew_only, np.where(ew_far, w_ew, zebra_ew), 0.0)
    yellow = np.where(ns_only & ns_far, y_ns, 0.0) + np.where(ew_only & ew_far, y_ew, 0.0)
    paint_white, paint_yellow = np.clip(white, 0, 1)[:, None], np.clip(yellow, 0, 1)[:, None]
    road_colour = asphalt * (1 - paint_white - paint_yellow) + WHITE_PAINT * paint_white + YELLOW_PAINT * paint_yellow

    # Sidewalk: slabs with seams and a lighter kerb stone along the road.
    from_kerb = np.minimum(np.where(ax >= half_x, ax - half_x, np.inf), np.where(ay >= half_y, ay - half_y, np.inf))
    seams = np.maximum(pulse(x, 1.5, 0.05, fp), pulse(y, 1.5, 0.05, fp))
    slab = CONCRETE * (0.94 + 0.1 * cell_rand(x, y, 1.5, 13) - 0.18 * seams)[:, None]
    walk_colour = np.where((from_kerb < 0.25)[:, None], KERB, slab)

    # Inside a block: lawn or paving, by block.
    col = np.clip(np.searchsorted(world.streets_x, x) - 1, 0, world.block_ground.shape[1] - 1)
    row = np.clip(np.searchsorted(world.streets_y, y) - 1, 0, world.block_ground.shape[0] - 1)
    lawn = ~road & ~sidewalk & (world.block_ground[row, col] == GROUND_GRASS)
    grass = np.asarray(GRASS[season], np.float32) * (0.8 + 0.35 * value_noise(x / 2.0, y / 2.0, 14))[:, None]

    albedo[:] = np.where(sidewalk[:, None] | ~lawn[:, None], walk_colour, grass)
    albedo[road] = road_colour[road]
    cls[road] = C.ROAD
    cls[lawn] = C.TERRAIN
    wet[road] = 1.0
    wet[sidewalk] = 0.5

    if snowy:
        drift = value_noise(x / 3.0, y / 3.0, 15)
        snow = SNOW * (0.93 + 0.07 * drift)[:, None]
        # Slush on the road, with darker tyre tracks along each lane.
        lane_pos = np.where(on_x & ~on_y, ax, np.where(on_y & ~on_x, ay, 0.0))
        tracks = pulse(lane_pos + 0.25, 1.6, 0.5, fp) * (lane_pos > 0.3)
        slush = SLUSH * (0.9 + 0.2 * drift)[:, None]
        slush = slush * (1 - 0.55 * tracks)[:, None] + ASPHALT * 0.9 * (0.55 * tracks)[:, None]
        albedo = np.where(road[:, None], slush, snow)
    return GroundSample(cls, albedo.astype(np.float32), wet)

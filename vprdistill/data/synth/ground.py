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


def _markings(
    offset: np.ndarray, along: np.ndarray, half: np.ndarray, avenue: np.ndarray, fp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of white and yellow paint across a street at signed ``offset`` from its centre line."""
    a = np.abs(offset)
    dashes = pulse(along, 9.0, 3.0, fp)
    yellow = np.where(avenue, band(a, 0.08, 0.23, fp), band(a, -0.08, 0.08, fp) * dashes)
    white = np.where(avenue, band(a, 3.18, 3.32, fp) * dashes + band(a, half - 2.45, half - 2.3, fp), 0.0)
    return white.astype(np.float32), yellow.astype(np.float32)


def _road_colour(x, y, fp, off_x, off_y, half_x, half_y, walk_x, walk_y, avenue_x, avenue_y) -> np.ndarray:
    """Asphalt with lane markings and zebra crossings, for road points only ``(n, 3)``."""
    ax, ay = np.abs(off_x), np.abs(off_y)
    # Large patches and fine grain; the grain fades where a pixel covers many grains.
    patches = value_noise(x / 6.0, y / 6.0, 11)
    grain = (cell_rand(x, y, 0.35, 12) - 0.5) * np.clip(1.0 - fp / 0.8, 0.0, 1.0)
    asphalt = ASPHALT * (0.88 + 0.18 * patches + 0.12 * grain)[:, None]
    # Each street paints its own stretch; crossings lie where it meets the cross street.
    on_x, on_y = ax < half_x, ay < half_y
    ns_only, ew_only = on_x & ~on_y, on_y & ~on_x
    w_ns, y_ns = _markings(off_x, y, half_x, avenue_x, fp)
    w_ew, y_ew = _markings(off_y, x, half_y, avenue_y, fp)
    zebra_ns = pulse(off_x, 1.0, 0.5, fp) * band(ay, half_y + walk_y * 0.2, half_y + walk_y * 0.2 + 3.0, fp)
    zebra_ew = pulse(off_y, 1.0, 0.5, fp) * band(ax, half_x + walk_x * 0.2, half_x + walk_x * 0.2 + 3.0, fp)
    ns_far = ay > half_y + walk_y * 0.2 + 3.2
    ew_far = ax > half_x + walk_x * 0.2 + 3.2
    white = np.where(ns_only, np.where(ns_far, w_ns, zebra_ns), 0.0) + np.where(
        ew_only, np.where(ew_far, w_ew, zebra_ew), 0.0
    )
    yellow = np.where(ns_only & ns_far, y_ns, 0.0) + np.where(ew_only & ew_far, y_ew, 0.0)
    white, yellow = np.clip(white, 0, 1)[:, None], np.clip(yellow, 0, 1)[:, None]
    return asphalt * (1 - white - yellow) + WHITE_PAINT * white + YELLOW_PAINT * yellow


def _slush_colour(x, y, fp, off_x, off_y, half_x, half_y) -> np.ndarray:
    """Snowy road: slush with darker tyre tracks along each lane ``(n, 3)``."""
    ax, ay = np.abs(off_x), np.abs(off_y)
    on_x, on_y = ax < half_x, ay < half_y
    lane_pos = np.where(on_x & ~on_y, ax, np.where(on_y & ~on_x, ay, 0.0))
    tracks = (pulse(lane_pos + 0.25, 1.6, 0.5, fp) * (lane_pos > 0.3))[:, None]
    slush = SLUSH * (0.9 + 0.2 * value_noise(x / 3.0, y / 3.0, 15))[:, None]
    return slush * (1 - 0.55 * tracks) + ASPHALT * 0.9 * (0.55 * tracks)


def _slab_colour(x, y, fp, from_kerb) -> np.ndarray:
    """Sidewalk slabs with seams, and a lighter kerb stone along the road ``(n, 3)``."""
    seams = np.maximum(pulse(x, 1.5, 0.05, fp), pulse(y, 1.5, 0.05, fp))
    slab = CONCRETE * (0.94 + 0.1 * cell_rand(x, y, 1.5, 13) - 0.18 * seams)[:, None]
    return np.where((from_kerb < 0.25)[:, None], KERB, slab)


def sample_ground(world: World, x: np.ndarray, y: np.ndarray, fp: np.ndarray, season: str, snowy: bool) -> GroundSample:
    """Ground class and colour at world points ``(n,)``; ``fp`` is each pixel's footprint in metres."""
    ix = _nearest_street(x, world.streets_x)
    iy = _nearest_street(y, world.streets_y)
    off_x, off_y = x - world.streets_x[ix], y - world.streets_y[iy]
    ax, ay = np.abs(off_x), np.abs(off_y)
    half_x, half_y = world.half_x[ix], world.half_y[iy]
    walk_x, walk_y = world.walk_x[ix], world.walk_y[iy]
    road = (ax < half_x) | (ay < half_y)
    sidewalk = ~road & ((ax < half_x + walk_x) | (ay < half_y + walk_y))
    # Inside a block: lawn or paving, by block.
    col = np.clip(np.searchsorted(world.streets_x, x) - 1, 0, world.block_ground.shape[1] - 1)
    row = np.clip(np.searchsorted(world.streets_y, y) - 1, 0, world.block_ground.shape[0] - 1)
    lawn = ~road & ~sidewalk & (world.block_ground[row, col] == GROUND_GRASS)
    paved = ~road & ~lawn

    cls = np.full(len(x), C.SIDEWALK, np.uint8)
    cls[road] = C.ROAD
    cls[lawn] = C.TERRAIN
    wet = np.where(road, np.float32(1.0), np.where(sidewalk, np.float32(0.5), np.float32(0.0)))
    albedo = np.empty((len(x), 3), np.float32)
    # Each material is evaluated on its own pixels only.
    r, p, g = np.nonzero(road)[0], np.nonzero(paved)[0], np.nonzero(lawn)[0]
    if snowy:
        albedo[r] = _slush_colour(x[r], y[r], fp[r], off_x[r], off_y[r], half_x[r], half_y[r])
        rest = np.nonzero(~road)[0]
        albedo[rest] = SNOW * (0.93 + 0.07 * value_noise(x[rest] / 3.0, y[rest] / 3.0, 15))[:, None]
        return GroundSample(cls, albedo, wet)
    albedo[r] = _road_colour(
        x[r],
        y[r],
        fp[r],
        off_x[r],
        off_y[r],
        half_x[r],
        half_y[r],
        walk_x[r],
        walk_y[r],
        world.avenue_x[ix[r]],
        world.avenue_y[iy[r]],
    )
    from_kerb = np.minimum(
        np.where(ax[p] >= half_x[p], ax[p] - half_x[p], np.inf), np.where(ay[p] >= half_y[p], ay[p] - half_y[p], np.inf)
    )
    albedo[p] = _slab_colour(x[p], y[p], fp[p], from_kerb)
    albedo[g] = np.asarray(GRASS[season], np.float32) * (0.8 + 0.35 * value_noise(x[g] / 2.0, y[g] / 2.0, 14))[:, None]
    return GroundSample(cls, albedo, wet)

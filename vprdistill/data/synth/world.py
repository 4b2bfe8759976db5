"""The procedural city: streets, blocks, buildings, street furniture, parking.

Everything here is static and a pure function of the seed and the layout
parameters; it is built once and shared by every worker. Local coordinates
are metres east (x) and north (y) of ``origin``; UTM = origin + local.

The city is one irregular grid of blocks, cut along east into the train, val
and test regions with a gap of unsampled blocks between them, and a border of
unsampled blocks around everything so that no camera looks out of the city.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.blocks import CityBuilder, fill_block, fill_park
from vprdistill.data.synth.config import SPLITS, SynthConfig
from vprdistill.data.synth.furniture import street_furniture
from vprdistill.data.synth.styles import NUM_PARAMS, P

# Around Pittsburgh (UTM zone 17T), as Pitts30k/250k.
UTM_ORIGIN = (584000.0, 4476000.0)
UTM_ZONE_NUMBER, UTM_ZONE_LETTER = 17, "T"
BORDER_BLOCKS = 1

GROUND_PAVED, GROUND_GRASS = 0, 1


@dataclass(frozen=True)
class Region:
    """The part of the city where one split's cameras stand (local metres)."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float
    street_cols: tuple[int, ...]  # indices into streets_x sampled in this region
    street_rows: tuple[int, ...]  # indices into streets_y sampled in this region


@dataclass
class World:
    """Static city geometry; arrays are documented by the column constants of ``geometry``."""

    seed: int
    streets_x: np.ndarray  # (nx,) centre lines of north-south streets
    streets_y: np.ndarray  # (ny,) centre lines of east-west streets
    half_x: np.ndarray  # road half-widths (kerb to centre line)
    half_y: np.ndarray
    walk_x: np.ndarray  # sidewalk widths
    walk_y: np.ndarray
    avenue_x: np.ndarray  # bool: four-lane street
    avenue_y: np.ndarray
    block_ground: np.ndarray  # (rows, cols) GROUND_PAVED | GROUND_GRASS
    segments: np.ndarray  # (S, 15)
    buildings: np.ndarray  # (B, NUM_PARAMS) float32
    props: np.ndarray  # (N, 8)
    slots: np.ndarray  # (K, 4) parking slots: x, y, car axis (0 along x, 1 along y), street side (±1)
    footprints: np.ndarray  # (B, 5) x0, y0, x1, y1, height of each building box (for shadows)
    regions: dict[str, Region]
    shadow_cache: dict = field(default_factory=dict, repr=False, compare=False)  # see shadows.shadow_map

    def __post_init__(self) -> None:
        mid = 0.5 * (self.segments[:, [G.SX0, G.SY0]] + self.segments[:, [G.SX1, G.SY1]])
        self._segment_tree = cKDTree(mid)
        self._segment_reach = float(self.segments[:, G.SLEN].max()) / 2
        self._prop_tree = cKDTree(self.props[:, [G.PX, G.PY]])
        self._slot_tree = cKDTree(self.slots[:, :2])
        lamps = self.props[self.props[:, G.PKIND] == G.PROP_LAMP]
        self.lamps = np.column_stack([lamps[:, G.PX], lamps[:, G.PY], lamps[:, G.PHEIGHT] - 0.3])
        self._lamp_tree = cKDTree(self.lamps[:, :2])

    def segments_near(self, x: float, y: float, radius: float) -> np.ndarray:
        """Segments that may lie within ``radius`` of ``(x, y)``: ``(S', 15)``."""
        index = self._segment_tree.query_ball_point((x, y), radius + self._segment_reach)
        return self.segments[np.sort(np.asarray(index, dtype=np.int64))]

    def props_near(self, x: float, y: float, radius: float) -> np.ndarray:
        index = self._prop_tree.query_ball_point((x, y), radius)
        return self.props[np.sort(np.asarray(index, dtype=np.int64))]

    def slots_near(self, x: float, y: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Parking slots near ``(x, y)`` and their global ids (ids seed their occupancy)."""
        index = np.sort(np.asarray(self._slot_tree.query_ball_point((x, y), radius), dtype=np.int64))
        return self.slots[index], index

    def lamps_near(self, x: float, y: float, radius: float) -> np.ndarray:
        """Street-lamp heads ``(L, 3)`` (x, y, z) near ``(x, y)``."""
        index = np.sort(np.asarray(self._lamp_tree.query_ball_point((x, y), radius), dtype=np.int64))
        return self.lamps[index]

    def to_utm(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(x) + UTM_ORIGIN[0], np.asarray(y) + UTM_ORIGIN[1]


def _street_widths(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    avenue = rng.random(count) < 0.3
    half = np.where(avenue, rng.uniform(8.5, 9.5, count), rng.uniform(5.0, 6.0, count))
    walk = np.where(avenue, rng.uniform(3.5, 5.0, count), rng.uniform(2.5, 3.8, count))
    return half, walk, avenue


def _centres(first: float, half: np.ndarray, walk: np.ndarray, interior: np.ndarray) -> np.ndarray:
    centres = [first]
    for i, size in enumerate(interior):
        centres.append(centres[-1] + half[i] + walk[i] + size + walk[i + 1] + half[i + 1])
    return np.asarray(centres)


def build_world(config: SynthConfig) -> World:
    """Generate the whole city for ``config`` (deterministic in ``config.seed`` and the layout fields)."""
    rng = np.random.default_rng([config.seed, 0x5C17])
    # Along east: a border, the train, val and test regions with a gap between each two, a border.
    ncols = 2 * BORDER_BLOCKS + 2 * config.gap_blocks + sum(config.blocks(split) for split in SPLITS)
    nrows = config.north_blocks + 2 * BORDER_BLOCKS
    lo, hi = config.block_size_m
    half_x, walk_x, avenue_x = _street_widths(rng, ncols + 1)
    half_y, walk_y, avenue_y = _street_widths(rng, nrows + 1)
    streets_x = _centres(0.0, half_x, walk_x, rng.uniform(lo, hi, ncols))
    streets_y = _centres(0.0, half_y, walk_y, rng.uniform(lo * 0.85, hi * 0.85, nrows))
    centre = np.array([streets_x.mean(), streets_y.mean()])
    radius = 0.5 * max(streets_x[-1] - streets_x[0], streets_y[-1] - streets_y[0])

    b = CityBuilder(rng)
    block_ground = np.zeros((nrows, ncols), dtype=np.int8)
    for r in range(nrows):
        for c in range(ncols):
            rect = (
                streets_x[c] + half_x[c] + walk_x[c],
                streets_y[r] + half_y[r] + walk_y[r],
                streets_x[c + 1] - half_x[c + 1] - walk_x[c + 1],
                streets_y[r + 1] - half_y[r + 1] - walk_y[r + 1],
            )
            mid = np.array([(rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2])
            tall = float(np.exp(-((np.linalg.norm(mid - centre) / (0.45 * radius)) ** 2)))
            if rng.random() < config.park_rate:
                block_ground[r, c] = GROUND_GRASS
                fill_park(b, rect)
                continue
            near_avenue = avenue_x[c] or avenue_x[c + 1] or avenue_y[r] or avenue_y[r + 1]
            if rng.random() < tall * 0.8 and tall > 0.5:
                district = "downtown"
            elif near_avenue or rng.random() < 0.3:
                district = "commercial"
            else:
                district = "residential"
                block_ground[r, c] = GROUND_GRASS
            fill_block(b, rect, district, tall, landmark=rng.random() < config.landmark_rate)

    street_furniture(b, {"x": (streets_x, half_x, walk_x, avenue_x), "y": (streets_y, half_y, walk_y, avenue_y)})

    regions = {}
    col = BORDER_BLOCKS
    row0, row1 = BORDER_BLOCKS, BORDER_BLOCKS + config.north_blocks
    for split in SPLITS:
        c0, c1 = col, col + config.blocks(split)
        regions[split] = Region(
            float(streets_x[c0]),
            float(streets_x[c1]),
            float(streets_y[row0]),
            float(streets_y[row1]),
            tuple(range(c0, c1 + 1)),
            tuple(range(row0, row1 + 1)),
        )
        col = c1 + config.gap_blocks

    return World(
        seed=config.seed,
        streets_x=streets_x,
        streets_y=streets_y,
        half_x=half_x,
        half_y=half_y,
        walk_x=walk_x,
        walk_y=walk_y,
        avenue_x=avenue_x,
        avenue_y=avenue_y,
        block_ground=block_ground,
        segments=np.concatenate(b.segments, axis=0),
        buildings=np.stack(b.buildings).astype(np.float32) if b.buildings else np.zeros((0, NUM_PARAMS), np.float32),
        props=np.stack(b.props),
        slots=np.asarray(b.slots, dtype=np.float64),
        regions=regions,
        footprints=np.array(
            [
                (*rect, b.buildings[i][P["height"]] + 0.5 * b.buildings[i][P["roof_extra"]])
                for i, (rect, _, _) in enumerate(b.footprints)
            ],
            dtype=np.float32,
        ).reshape(-1, 5),
    )

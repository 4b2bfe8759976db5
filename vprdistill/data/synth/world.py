"""The procedural city: streets, blocks, buildings, street furniture, parking.

Everything here is static and a pure function of the seed and the layout
parameters; it is built once and shared by every worker. Local coordinates
are metres east (x) and north (y) of ``origin``; UTM = origin + local.

The city is one irregular grid of blocks, cut along east into the train, val
and test regions with a gap of unsampled blocks between them, and a border of
unsampled blocks around everything so that no camera looks out of the city.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.config import SPLITS, SynthConfig
from vprdistill.data.synth.styles import (
    CHURCH, CLOCK, MURAL, NUM_PARAMS, TEMPLATES, TOWER, P, copy_design, pick_template, sample_design, sample_landmark,
)

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
    slots: np.ndarray  # (K, 4) parking slots: x, y, axis (0 along x, 1 along y), heading of the kerb side
    regions: dict[str, Region]

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


class _Builder:
    """Accumulates buildings, segments and props while blocks are filled."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buildings: list[np.ndarray] = []
        self.footprints: list[tuple[tuple[float, float, float, float], str, int]] = []
        self.segments: list[np.ndarray] = []
        self.props: list[np.ndarray] = []
        self.slots: list[tuple[float, float, float, float]] = []

    def add_box(self, rect: tuple[float, float, float, float], front: str, design: np.ndarray, profile: int | None = None) -> int:
        """Add a building box; ``profile`` defaults to a gable roof when the design has a roof height."""
        owner = len(self.buildings)
        self.buildings.append(design)
        self.footprints.append((rect, front, len(self.segments)))
        self.segments.append(self._box(rect, front, design, profile, owner))
        return owner

    def replace_design(self, owner: int, design: np.ndarray, profile: int | None = None) -> None:
        rect, front, index = self.footprints[owner]
        self.buildings[owner] = design
        self.segments[index] = self._box(rect, front, design, profile, owner)

    @staticmethod
    def _box(rect, front: str, design: np.ndarray, profile: int | None, owner: int) -> np.ndarray:
        extra = float(design[P["roof_extra"]])
        if profile is None:
            profile = G.PROFILE_GABLE if extra > 0 else G.PROFILE_FLAT
        # A church nave shows its gable on the front and back only.
        side_profile = G.PROFILE_FLAT if int(design[P["landmark"]]) == CHURCH and profile == G.PROFILE_GABLE else None
        return G.box_segments(rect, front, float(design[P["height"]]), owner, G.KIND_BUILDING,
                              profile=profile, extra=extra, side_profile=side_profile)

    def add_wall(self, x0: float, y0: float, x1: float, y1: float, face: str, kind: int, height: float) -> None:
        self.segments.append(G.face_segment(x0, y0, x1, y1, face, height, -1, kind, G.ROLE_FRONT)[None])


def _footprint(axis: int, a0: float, a1: float, c0: float, c1: float) -> tuple[float, float, float, float]:
    """Rectangle from an interval along the street and one across it (``axis`` 0: street runs along x)."""
    lo, hi = min(c0, c1), max(c0, c1)
    return (a0, lo, a1, hi) if axis == 0 else (lo, a0, hi, a1)


def _fill_row(b: _Builder, district: str, tall: float, along: tuple[float, float], front_at: float,
              inward: float, depth: float, face: str, axis: int) -> list[tuple]:
    """Fill one side of a block with runs of buildings; returns ``(owner, rect, face, width, depth)`` of each."""
    rng = b.rng
    start, end = along
    placed = []
    pos = start
    while end - pos > 3.0:
        if rng.random() < 0.06 and end - pos > 12.0:
            # An alley or a yard, closed to the street by a fence or a low wall.
            gap = rng.uniform(3.0, 6.0)
            kind, height = (G.KIND_FENCE, 1.9) if rng.random() < 0.5 else (G.KIND_WALL, 1.2)
            b.add_wall(*_footprint(axis, pos, pos + gap, front_at, front_at), face, kind, height)
            pos += gap
            continue
        template = pick_template(rng, district)
        design = sample_design(rng, template, tall)
        setback = 0.0 if rng.random() < 0.75 else rng.uniform(0.8, 3.0)
        for copy in range(int(rng.integers(template.run[0], template.run[1] + 1))):
            width = rng.uniform(*template.width)
            if end - (pos + width) < 4.0:
                width = end - pos
            if width < 3.0:
                break
            rect = _footprint(axis, pos, pos + width, front_at + inward * setback, front_at + inward * depth)
            owner = b.add_box(rect, face, design if copy == 0 else copy_design(rng, design))
            placed.append((owner, rect, face, width, depth - setback))
            pos += width
            if pos >= end - 1e-6:
                break
    return placed


def _tower_rect(rect: tuple[float, float, float, float], face: str, side: float, behind: float, centred: bool):
    """A square of ``side`` metres whose front is ``behind`` metres behind the facade ``face`` of ``rect``."""
    x0, y0, x1, y1 = rect
    if face in "SN":
        a0 = (x0 + x1 - side) / 2 if centred else x0
        front = y0 + behind if face == "S" else y1 - behind
        c0, c1 = (front, front + side) if face == "S" else (front - side, front)
        return (a0, c0, a0 + side, c1)
    a0 = (y0 + y1 - side) / 2 if centred else y0
    front = x0 + behind if face == "W" else x1 - behind
    c0, c1 = (front, front + side) if face == "W" else (front - side, front)
    return (c0, a0, c1, a0 + side)


def _place_landmark(b: _Builder, placed: list[tuple]) -> None:
    """Turn the widest building of a block into a landmark (one or two boxes)."""
    rng = b.rng
    owner, rect, face, width, depth = max(placed, key=lambda item: item[3])
    if width < 10.0 or depth < 8.0:
        return
    kind = int(rng.choice([TOWER, MURAL, CLOCK, CHURCH]))
    if kind == CLOCK:
        b.replace_design(owner, sample_design(rng, TEMPLATES["stone_civic"], 0.0))
        side = min(9.0, width - 2.0, depth - 2.0)
        b.add_box(_tower_rect(rect, face, side, behind=1.0, centred=True), face, sample_landmark(rng, CLOCK))
    elif kind == CHURCH:
        nave = sample_landmark(rng, CHURCH)
        b.replace_design(owner, nave)
        tower = sample_landmark(rng, CHURCH)
        tower[P["height"]] = nave[P["height"]] + rng.uniform(8.0, 14.0)
        tower[P["roof_extra"]] = rng.uniform(8.0, 12.0)
        tower[P["wall"]:P["wall"] + 3] = nave[P["wall"]:P["wall"] + 3]
        tower[P["door_u"]] = -1.0  # the door is the nave's
        # The bell tower stands at a front corner, half a metre proud of the facade.
        b.add_box(_tower_rect(rect, face, 6.0, behind=-0.5, centred=False), face, tower, profile=G.PROFILE_SPIRE)
    else:
        design = sample_landmark(rng, kind)
        b.replace_design(owner, design, profile=G.PROFILE_SPIRE if design[P["roof_extra"]] > 0 else G.PROFILE_FLAT)


def _fill_block(b: _Builder, rect: tuple[float, float, float, float], district: str, tall: float, landmark: bool) -> None:
    x0, y0, x1, y1 = rect
    rng = b.rng
    width, height = x1 - x0, y1 - y0
    depth_s = min(rng.uniform(12.0, 20.0), height / 2 - 2.0)
    depth_n = min(rng.uniform(12.0, 20.0), height / 2 - 2.0)
    depth_w = min(rng.uniform(12.0, 20.0), width / 2 - 2.0)
    depth_e = min(rng.uniform(12.0, 20.0), width / 2 - 2.0)
    placed = []
    placed += _fill_row(b, district, tall, (x0, x1), y0, +1.0, depth_s, "S", axis=0)
    placed += _fill_row(b, district, tall, (x0, x1), y1, -1.0, depth_n, "N", axis=0)
    placed += _fill_row(b, district, tall, (y0 + depth_s, y1 - depth_n), x0, +1.0, depth_w, "W", axis=1)
    placed += _fill_row(b, district, tall, (y0 + depth_s, y1 - depth_n), x1, -1.0, depth_e, "E", axis=1)
    if landmark and placed:
        _place_landmark(b, placed)


def _fill_park(b: _Builder, rect: tuple[float, float, float, float]) -> None:
    """Lawn with trees inside a low hedge or wall that opens in the middle of each side."""
    x0, y0, x1, y1 = rect
    rng = b.rng
    kind, height = (G.KIND_HEDGE, 1.1) if rng.random() < 0.6 else (G.KIND_WALL, 0.9)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    for face, pieces in (
        ("S", ((x0, y0, xm - 2.0, y0), (xm + 2.0, y0, x1, y0))),
        ("N", ((x0, y1, xm - 2.0, y1), (xm + 2.0, y1, x1, y1))),
        ("W", ((x0, y0, x0, ym - 2.0), (x0, ym + 2.0, x0, y1))),
        ("E", ((x1, y0, x1, ym - 2.0), (x1, ym + 2.0, x1, y1))),
    ):
        for piece in pieces:
            b.add_wall(*piece, face, kind, height)
    for gx in np.arange(x0 + 6.0, x1 - 4.0, 11.0):
        for gy in np.arange(y0 + 6.0, y1 - 4.0, 11.0):
            if rng.random() < 0.75:
                b.props.append(_tree(rng, gx + rng.uniform(-3, 3), gy + rng.uniform(-3, 3), big=True))


def _tree(rng: np.random.Generator, x: float, y: float, big: bool = False) -> np.ndarray:
    height = rng.uniform(7.0, 11.0) if big else rng.uniform(5.5, 8.5)
    return G.prop_row(x, y, G.PROP_TREE, height * rng.uniform(0.5, 0.75), height, int(rng.integers(1 << 20)))


# Right-hand traffic. For a street side (+1: east of a north-south street, north
# of an east-west one): the compass heading its signs face (towards the drivers
# using that side), and whether those drivers approach the block's high end.
_SIGN_FACING = {("ns", 1.0): 180.0, ("ns", -1.0): 0.0, ("ew", 1.0): 90.0, ("ew", -1.0): 270.0}
_APPROACH_HIGH_END = {("ns", 1.0): True, ("ns", -1.0): False, ("ew", 1.0): False, ("ew", -1.0): True}


def _street_side(b: _Builder, orient: str, centre: float, half: float, avenue: bool, lo: float, hi: float,
                 side: float, lamp_side: bool) -> None:
    """Trees, lamps, signs and parking slots along one side of one block of street."""
    rng = b.rng

    def at(along: float, lateral: float) -> tuple[float, float]:
        offset = centre + side * lateral
        return (offset, along) if orient == "ns" else (along, offset)

    if rng.random() < 0.55:
        for along in np.arange(lo + 5.0, hi - 3.0, rng.uniform(8.0, 12.0)):
            b.props.append(_tree(rng, *at(along + rng.uniform(-0.5, 0.5), half + 0.9)))
    if lamp_side:
        for along in np.arange(lo + 6.0, hi - 3.0, 27.0):
            b.props.append(G.prop_row(*at(along, half + 0.35), G.PROP_LAMP, 2.4, 7.5, int(rng.integers(1 << 20))))
    facing = _SIGN_FACING[(orient, side)]
    if rng.random() < 0.5:
        b.props.append(G.prop_row(*at(rng.uniform(lo + 4.0, hi - 4.0), half + 0.5), G.PROP_SIGN, 0.8, 2.9,
                                  int(rng.integers(1 << 20)), facing))
    if not avenue and rng.random() < 0.5:
        end = hi - 1.0 if _APPROACH_HIGH_END[(orient, side)] else lo + 1.0
        b.props.append(G.prop_row(*at(end, half + 0.5), G.PROP_SIGN, 0.8, 2.7, 0, facing, extra=1.0))  # a stop sign
    for along in np.arange(lo + 3.5, hi - 3.0, 6.2):
        if rng.random() < 0.9:
            b.slots.append((*at(along, half - 1.15), 1.0 if orient == "ns" else 0.0, side))


def _street_furniture(b: _Builder, streets: dict) -> None:
    """Furnish every street side between intersections; traffic lights where an avenue crosses."""
    for orient, key, cross_key in (("ns", "x", "y"), ("ew", "y", "x")):
        centres, halves, walks, avenues = streets[key]
        cross, cross_half, cross_walk, _ = streets[cross_key]
        for i, centre in enumerate(centres):
            for j in range(len(cross) - 1):
                lo = cross[j] + cross_half[j] + cross_walk[j]
                hi = cross[j + 1] - cross_half[j + 1] - cross_walk[j + 1]
                for side in (-1.0, 1.0):
                    lamp_side = (i + j + int(side > 0)) % 2 == 0
                    _street_side(b, orient, centre, halves[i], bool(avenues[i]), lo, hi, side, lamp_side)
    xs, xh, _, xa = streets["x"]
    ys, yh, _, ya = streets["y"]
    for i, sx in enumerate(xs):
        for j, sy in enumerate(ys):
            if xa[i] or ya[j]:
                # One light per approach, on the near-right corner, facing the approaching drivers.
                for dx, dy, facing in ((1, -1, 180.0), (-1, 1, 0.0), (-1, -1, 270.0), (1, 1, 90.0)):
                    b.props.append(G.prop_row(sx + dx * (xh[i] + 0.6), sy + dy * (yh[j] + 0.6), G.PROP_TRAFFIC_LIGHT,
                                              0.7, 5.2, int(b.rng.integers(1 << 20)), facing))


def build_world(config: SynthConfig) -> World:
    """Generate the whole city for ``config`` (deterministic in ``config.seed`` and the layout fields)."""
    rng = np.random.default_rng([config.seed, 0x5C17])
    counts = [BORDER_BLOCKS, config.train_blocks, config.gap_blocks, config.val_blocks, config.gap_blocks, config.test_blocks, BORDER_BLOCKS]
    ncols, nrows = sum(counts), config.north_blocks + 2 * BORDER_BLOCKS
    lo, hi = config.block_size_m
    half_x, walk_x, avenue_x = _street_widths(rng, ncols + 1)
    half_y, walk_y, avenue_y = _street_widths(rng, nrows + 1)
    streets_x = _centres(0.0, half_x, walk_x, rng.uniform(lo, hi, ncols))
    streets_y = _centres(0.0, half_y, walk_y, rng.uniform(lo * 0.85, hi * 0.85, nrows))
    centre = np.array([streets_x.mean(), streets_y.mean()])
    radius = 0.5 * max(streets_x[-1] - streets_x[0], streets_y[-1] - streets_y[0])

    b = _Builder(rng)
    block_ground = np.zeros((nrows, ncols), dtype=np.int8)
    for r in range(nrows):
        for c in range(ncols):
            rect = (streets_x[c] + half_x[c] + walk_x[c], streets_y[r] + half_y[r] + walk_y[r],
                    streets_x[c + 1] - half_x[c + 1] - walk_x[c + 1], streets_y[r + 1] - half_y[r + 1] - walk_y[r + 1])
            mid = np.array([(rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2])
            tall = float(np.exp(-(np.linalg.norm(mid - centre) / (0.45 * radius)) ** 2))
            if rng.random() < config.park_rate:
                block_ground[r, c] = GROUND_GRASS
                _fill_park(b, rect)
                continue
            near_avenue = avenue_x[c] or avenue_x[c + 1] or avenue_y[r] or avenue_y[r + 1]
            if rng.random() < tall * 0.8 and tall > 0.5:
                district = "downtown"
            elif near_avenue or rng.random() < 0.3:
                district = "commercial"
            else:
                district = "residential"
                block_ground[r, c] = GROUND_GRASS
            _fill_block(b, rect, district, tall, landmark=rng.random() < config.landmark_rate)

    _street_furniture(b, {"x": (streets_x, half_x, walk_x, avenue_x), "y": (streets_y, half_y, walk_y, avenue_y)})

    regions = {}
    col = BORDER_BLOCKS
    row0, row1 = BORDER_BLOCKS, BORDER_BLOCKS + config.north_blocks
    for split in SPLITS:
        c0, c1 = col, col + config.blocks(split)
        regions[split] = Region(float(streets_x[c0]), float(streets_x[c1]), float(streets_y[row0]), float(streets_y[row1]),
                                tuple(range(c0, c1 + 1)), tuple(range(row0, row1 + 1)))
        col = c1 + config.gap_blocks

    return World(
        seed=config.seed, streets_x=streets_x, streets_y=streets_y, half_x=half_x, half_y=half_y,
        walk_x=walk_x, walk_y=walk_y, avenue_x=avenue_x, avenue_y=avenue_y, block_ground=block_ground,
        segments=np.concatenate(b.segments, axis=0),
        buildings=np.stack(b.buildings).astype(np.float32) if b.buildings else np.zeros((0, NUM_PARAMS), np.float32),
        props=np.stack(b.props), slots=np.asarray(b.slots, dtype=np.float64), regions=regions,
    )

"""Filling the city blocks: rows of buildings, landmarks, parks.

Each block's perimeter is lined with buildings facing the streets, in runs of
near-identical copies of one facade design; a park block gets a lawn, trees
and a low hedge or wall instead.
"""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.styles import (
    CHURCH,
    CLOCK,
    MURAL,
    TEMPLATES,
    TOWER,
    P,
    copy_design,
    pick_template,
    sample_design,
    sample_landmark,
)


class CityBuilder:
    """Accumulates buildings, segments and props while blocks are filled."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buildings: list[np.ndarray] = []
        self.footprints: list[tuple[tuple[float, float, float, float], str, int]] = []
        self.segments: list[np.ndarray] = []
        self.props: list[np.ndarray] = []
        self.slots: list[tuple[float, float, float, float]] = []

    def add_box(
        self, rect: tuple[float, float, float, float], front: str, design: np.ndarray, profile: int | None = None
    ) -> int:
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
        return G.box_segments(
            rect,
            front,
            float(design[P["height"]]),
            owner,
            G.KIND_BUILDING,
            profile=profile,
            extra=extra,
            side_profile=side_profile,
        )

    def add_wall(self, x0: float, y0: float, x1: float, y1: float, face: str, kind: int, height: float) -> None:
        # One face of a flat box: its front, so the face the street sees.
        faces = G.box_segments((x0, y0, x1, y1), face, height, -1, kind)
        self.segments.append(faces[G.FACE_ORDER.index(face)][None])


def _footprint(axis: int, a0: float, a1: float, c0: float, c1: float) -> tuple[float, float, float, float]:
    """Rectangle from an interval along the street and one across it (``axis`` 0: street runs along x)."""
    lo, hi = min(c0, c1), max(c0, c1)
    return (a0, lo, a1, hi) if axis == 0 else (lo, a0, hi, a1)


def _fill_row(
    b: CityBuilder,
    district: str,
    tall: float,
    along: tuple[float, float],
    front_at: float,
    inward: float,
    depth: float,
    face: str,
    axis: int,
) -> list[tuple]:
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


def _place_landmark(b: CityBuilder, placed: list[tuple]) -> None:
    """Turn the widest building of a block into a landmark (one or two boxes)."""
    rng = b.rng
    owner, rect, face, width, depth = max(placed, key=lambda item: item[3])
    if width < 10.0 or depth < 8.0:
        return
    kind = int(rng.choice([TOWER, MURAL, CLOCK, CHURCH]))
    if kind == CLOCK:
        base = sample_design(rng, TEMPLATES["stone_civic"], 0.0)
        # A low civic hall, so that the tower rises well clear of it.
        base[P["height"]] = base[P["ground"]] + base[P["storey"]] * rng.integers(1, 3) + base[P["parapet"]]
        b.replace_design(owner, base)
        side = min(9.0, width - 2.0, depth - 2.0)
        b.add_box(_tower_rect(rect, face, side, behind=1.0, centred=True), face, sample_landmark(rng, CLOCK))
    elif kind == CHURCH:
        nave = sample_landmark(rng, CHURCH)
        b.replace_design(owner, nave)
        tower = sample_landmark(rng, CHURCH)
        tower[P["height"]] = nave[P["height"]] + rng.uniform(8.0, 14.0)
        tower[P["roof_extra"]] = rng.uniform(8.0, 12.0)
        tower[P["wall"] : P["wall"] + 3] = nave[P["wall"] : P["wall"] + 3]
        tower[P["door_u"]] = -1.0  # the door is the nave's
        # The bell tower stands at a front corner, half a metre proud of the facade.
        b.add_box(_tower_rect(rect, face, 6.0, behind=-0.5, centred=False), face, tower, profile=G.PROFILE_SPIRE)
    else:
        design = sample_landmark(rng, kind)
        b.replace_design(owner, design, profile=G.PROFILE_SPIRE if design[P["roof_extra"]] > 0 else G.PROFILE_FLAT)


def fill_block(
    b: CityBuilder, rect: tuple[float, float, float, float], district: str, tall: float, landmark: bool
) -> None:
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


def fill_park(b: CityBuilder, rect: tuple[float, float, float, float]) -> None:
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
                b.props.append(make_tree(rng, gx + rng.uniform(-3, 3), gy + rng.uniform(-3, 3), big=True))


def make_tree(rng: np.random.Generator, x: float, y: float, big: bool = False) -> np.ndarray:
    height = rng.uniform(7.0, 11.0) if big else rng.uniform(5.5, 8.5)
    return G.prop_row(x, y, G.PROP_TREE, height * rng.uniform(0.5, 0.75), height, int(rng.integers(1 << 20)))

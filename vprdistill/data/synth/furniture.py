"""Street furniture: trees, lamps, signs and parking slots along the streets, traffic lights."""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.blocks import CityBuilder, make_tree

# Right-hand traffic. For a street side (+1: east of a north-south street, north
# of an east-west one): the compass heading its signs face (towards the drivers
# using that side), and whether those drivers approach the block's high end.
_SIGN_FACING = {("ns", 1.0): 180.0, ("ns", -1.0): 0.0, ("ew", 1.0): 90.0, ("ew", -1.0): 270.0}
_APPROACH_HIGH_END = {("ns", 1.0): True, ("ns", -1.0): False, ("ew", 1.0): False, ("ew", -1.0): True}


def _street_side(
    b: CityBuilder,
    orient: str,
    centre: float,
    half: float,
    avenue: bool,
    lo: float,
    hi: float,
    side: float,
    lamp_side: bool,
) -> None:
    """Trees, lamps, signs and parking slots along one side of one block of street."""
    rng = b.rng

    def at(along: float, lateral: float) -> tuple[float, float]:
        offset = centre + side * lateral
        return (offset, along) if orient == "ns" else (along, offset)

    def add_prop(along: float, lateral: float, *row, **options) -> None:
        b.props.append(G.prop_row(*at(along, lateral), *row, **options))

    if rng.random() < 0.55:
        for along in np.arange(lo + 5.0, hi - 3.0, rng.uniform(8.0, 12.0)):
            b.props.append(make_tree(rng, *at(along + rng.uniform(-0.5, 0.5), half + 0.9)))
    if lamp_side:
        for along in np.arange(lo + 6.0, hi - 3.0, 27.0):
            add_prop(along, half + 0.35, G.PROP_LAMP, 2.4, 7.5, int(rng.integers(1 << 20)))
    facing = _SIGN_FACING[(orient, side)]
    if rng.random() < 0.5:
        add_prop(rng.uniform(lo + 4.0, hi - 4.0), half + 0.5, G.PROP_SIGN, 0.8, 2.9, int(rng.integers(1 << 20)), facing)
    if not avenue and rng.random() < 0.5:
        end = hi - 1.0 if _APPROACH_HIGH_END[(orient, side)] else lo + 1.0
        add_prop(end, half + 0.5, G.PROP_SIGN, 0.8, 2.7, 0, facing, extra=1.0)  # a stop sign
    for along in np.arange(lo + 3.5, hi - 3.0, 6.2):
        if rng.random() < 0.9:
            b.slots.append((*at(along, half - 1.15), 1.0 if orient == "ns" else 0.0, side))


def street_furniture(b: CityBuilder, streets: dict) -> None:
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
                    x, y = sx + dx * (xh[i] + 0.6), sy + dy * (yh[j] + 0.6)
                    variant = int(b.rng.integers(1 << 20))
                    b.props.append(G.prop_row(x, y, G.PROP_TRAFFIC_LIGHT, 0.7, 5.2, variant, facing))

"""Objects that change between traversals: parked and moving vehicles, pedestrians.

Parked cars follow a traversal seed (the whole database traversal of a split
shares one, so neighbouring database images agree) hashed with each parking
slot's id; every query draws its own. Moving vehicles and pedestrians come
from the image's own random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.camera import View
from vprdistill.data.synth.noise import rand01
from vprdistill.data.synth.world import World

# Vehicle parameter row: colour (3), class id, lights on, body kind.
VRGB, VCLASS, VLIGHTS, VBODY = 0, 3, 4, 5
VEHICLE_COLUMNS = 6
BODY_CAR, BODY_VAN, BODY_TRUCK, BODY_BUS = range(4)

CAR_COLOURS = (
    (0.85, 0.85, 0.86), (0.08, 0.08, 0.09), (0.50, 0.52, 0.55), (0.70, 0.71, 0.73), (0.55, 0.08, 0.08),
    (0.10, 0.18, 0.40), (0.20, 0.30, 0.22), (0.60, 0.50, 0.35), (0.80, 0.70, 0.20), (0.30, 0.10, 0.15),
)  # fmt: skip
BUS_COLOURS = ((0.85, 0.70, 0.10), (0.15, 0.35, 0.65), (0.75, 0.15, 0.12), (0.90, 0.90, 0.88))
PARKED_SHARE = 0.55
# (length, width, body height, cabin height, cabin start, cabin end) per body kind;
# the cabin is given as fractions of the length from the rear.
BODIES = {
    BODY_CAR: (4.5, 1.8, 0.95, 1.45, 0.24, 0.72),
    BODY_VAN: (4.9, 1.95, 1.05, 1.85, 0.12, 0.92),
    BODY_TRUCK: (7.5, 2.4, 3.2, 3.2, 0.0, 1.0),
    BODY_BUS: (12.0, 2.55, 3.1, 3.1, 0.0, 1.0),
}


@dataclass
class DynamicObjects:
    segments: np.ndarray  # (S, 15) vehicle faces, owners index ``vehicles``
    vehicles: np.ndarray  # (V, VEHICLE_COLUMNS)
    props: np.ndarray  # (N, 8) pedestrians


def _vehicle_boxes(
    x: np.ndarray, y: np.ndarray, along_x: np.ndarray, forward: np.ndarray, body: np.ndarray
) -> np.ndarray:
    """Faces of ``V`` vehicles ``(4·V, 15)``; the owner of each face is its vehicle's index."""
    dims = np.array([BODIES[k] for k in range(len(BODIES))])[body]  # (V, 6)
    length, width, body_h, cabin_h, pa, pb = dims.T
    hx = np.where(along_x, length, width) / 2
    hy = np.where(along_x, width, length) / 2
    rects = np.stack([x - hx, y - hy, x + hx, y + hy], axis=1)
    fronts = np.where(along_x, np.where(forward > 0, "E", "W"), np.where(forward > 0, "N", "S"))
    segs = G.box_segments(
        rects,
        list(fronts),
        cabin_h,
        np.arange(len(x)),
        G.KIND_VEHICLE,
        profile=G.PROFILE_CABIN,
        pa=pa,
        pb=pb,
        extra=body_h,
    )
    # Short faces see the cabin almost all across. On a long face the cabin (given from the
    # rear) runs the other way when the face's u grows towards the rear.
    long_face = segs[:, G.SROLE] == G.ROLE_SIDE
    segs[~long_face, G.SPA], segs[~long_face, G.SPB] = 0.1, 0.9
    along = np.repeat(along_x, 4)
    delta = np.where(along, segs[:, G.SX1] - segs[:, G.SX0], segs[:, G.SY1] - segs[:, G.SY0])
    flip = long_face & (delta * np.repeat(forward, 4) < 0)
    segs[flip, G.SPA], segs[flip, G.SPB] = 1.0 - segs[flip, G.SPB], 1.0 - segs[flip, G.SPA]
    return segs


def _pick_body(r: float) -> int:
    return BODY_CAR if r < 0.72 else BODY_VAN if r < 0.92 else BODY_TRUCK


def place_dynamic(
    world: World, view: View, traversal_seed: int, rng: np.random.Generator, radius: float = 80.0
) -> DynamicObjects:
    """Vehicles and pedestrians around ``view`` for one image."""
    placed, people = [], []  # (x, y, along_x, forward, body, r, g, b, moving)

    def add_vehicle(x, y, along_x, forward, body, colour, moving):
        placed.append((x, y, float(along_x), forward, body, *colour, float(moving)))

    slots, ids = world.slots_near(view.x, view.y, radius)
    if len(slots):
        occupied = rand01(ids, 1, traversal_seed) < PARKED_SHARE
        kind_r = rand01(ids, 2, traversal_seed)
        colour_i = (rand01(ids, 3, traversal_seed) * len(CAR_COLOURS)).astype(np.int64)
        keep = occupied & (np.hypot(slots[:, 0] - view.x, slots[:, 1] - view.y) > 3.5)
        # Parked with the traffic of their side (right-hand traffic, as the moving cars below).
        forward = np.where(slots[:, 2] > 0.5, slots[:, 3], -slots[:, 3])
        for slot, fwd, kr, ci in zip(slots[keep], forward[keep], kind_r[keep], colour_i[keep]):
            add_vehicle(slot[0], slot[1], slot[2] < 0.5, fwd, _pick_body(kr), CAR_COLOURS[ci], False)

    # Moving traffic on the nearest north-south and east-west streets, never on the camera.
    for along_x, centres, _halves, avenues, across, along in (
        (False, world.streets_x, world.half_x, world.avenue_x, view.x, view.y),
        (True, world.streets_y, world.half_y, world.avenue_y, view.y, view.x),
    ):
        i = int(np.argmin(np.abs(centres - across)))
        lanes = np.array([-4.9, -1.6, 1.6, 4.9]) if avenues[i] else np.array([-1.6, 1.6])
        for _ in range(rng.poisson(1.6)):
            lane = float(rng.choice(lanes))
            position = along + rng.uniform(-70.0, 70.0)
            if abs(position - along) < 9.0:
                continue
            x, y = (position, centres[i] + lane) if along_x else (centres[i] + lane, position)
            # Right-hand traffic: the +lateral lanes drive towards −along on east-west streets, +along on north-south ones.
            forward = (1.0 if lane > 0 else -1.0) * (-1.0 if along_x else 1.0)
            r = rng.random()
            body = BODY_BUS if r < 0.07 else _pick_body(rng.random())
            colour = (
                BUS_COLOURS[rng.integers(len(BUS_COLOURS))]
                if body == BODY_BUS
                else CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
            )
            add_vehicle(x, y, along_x, forward, body, colour, True)

    # Pedestrians on the sidewalks of the two nearest streets.
    for _ in range(rng.poisson(6.0)):
        ns = rng.random() < 0.5
        centres, halves, walks = (
            (world.streets_x, world.half_x, world.walk_x) if ns else (world.streets_y, world.half_y, world.walk_y)
        )
        across, along = (view.x, view.y) if ns else (view.y, view.x)
        i = int(np.argmin(np.abs(centres - across)))
        lateral = rng.choice([-1.0, 1.0]) * (halves[i] + rng.uniform(0.4, max(walks[i] - 0.3, 0.5)))
        position = along + rng.uniform(-45.0, 45.0)
        x, y = (centres[i] + lateral, position) if ns else (position, centres[i] + lateral)
        height = rng.uniform(1.55, 1.9)
        people.append(G.prop_row(x, y, G.PROP_PERSON, 0.62, height, int(rng.integers(1 << 20))))

    table = np.asarray(placed, np.float64).reshape(-1, 9)
    body = table[:, 4].astype(np.int64)
    vehicles = np.zeros((len(table), VEHICLE_COLUMNS))
    vehicles[:, VRGB : VRGB + 3] = table[:, 5:8]
    vehicles[:, VCLASS] = np.select([body == BODY_TRUCK, body == BODY_BUS], [C.TRUCK, C.BUS], C.CAR)
    vehicles[:, VLIGHTS] = table[:, 8]
    vehicles[:, VBODY] = body
    segments = (
        _vehicle_boxes(table[:, 0], table[:, 1], table[:, 2] > 0.5, table[:, 3], body)
        if len(table)
        else np.zeros((0, G.SEGMENT_COLUMNS))
    )
    return DynamicObjects(
        segments=segments, vehicles=vehicles, props=np.stack(people) if people else np.zeros((0, G.PROP_COLUMNS))
    )

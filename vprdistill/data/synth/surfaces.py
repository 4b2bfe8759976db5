"""Materials of the wall-like things that are not buildings: vehicles, low walls, fences, hedges."""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.dynamic import BODIES, BODY_BUS, BODY_TRUCK, VBODY, VCLASS, VLIGHTS, VRGB
from vprdistill.data.synth.filters import band, mix, pulse
from vprdistill.data.synth.noise import cell_rand, value_noise
from vprdistill.data.synth.raycast import WallPixels

CONCRETE_WALL = np.array([0.60, 0.58, 0.55], np.float32)
FENCE_WOOD = np.array([0.46, 0.34, 0.23], np.float32)
HEDGE = {"summer": (0.16, 0.30, 0.10), "autumn": (0.30, 0.30, 0.10), "winter": (0.22, 0.24, 0.14)}
TYRE = np.array([0.05, 0.05, 0.05], np.float32)
CAR_GLASS = np.array([0.10, 0.12, 0.15], np.float32)
HEADLIGHT = np.array([0.95, 0.95, 0.88], np.float32)
TAILLIGHT = np.array([0.65, 0.04, 0.04], np.float32)
SNOW_COVER = np.array([0.92, 0.93, 0.96], np.float32)


def shade_static_walls(
    kind: np.ndarray, u: np.ndarray, z: np.ndarray, fp: np.ndarray, season: str
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and albedo of low walls, fences and hedges."""
    n = len(u)
    cls = np.select([kind == G.KIND_WALL, kind == G.KIND_FENCE], [C.WALL, C.FENCE], C.VEGETATION).astype(np.uint8)
    wall = CONCRETE_WALL * (0.92 + 0.1 * cell_rand(u, z, 0.6, 51) - 0.12 * pulse(u, 2.0, 0.05, fp))[:, None]
    wall = np.where((z > 0.75)[:, None] & (kind == G.KIND_WALL)[:, None], CONCRETE_WALL * 1.1, wall)
    boards = FENCE_WOOD * (0.9 + 0.15 * cell_rand(u, np.zeros(n), 0.15, 52) - 0.3 * pulse(u, 0.15, 0.025, fp))[:, None]
    leaves = value_noise(u / 0.35, z / 0.35, 53)
    hedge = np.asarray(HEDGE[season], np.float32) * (0.65 + 0.7 * leaves)[:, None]
    albedo = np.select([(kind == G.KIND_WALL)[:, None], (kind == G.KIND_FENCE)[:, None]], [wall, boards], hedge)
    return cls, albedo.astype(np.float32)


def shade_vehicles(
    vehicles: np.ndarray, walls: WallPixels, fp: np.ndarray, lights: float, snowy: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class ids, albedo and emitted light of the vehicle pixels ``walls`` (``fp (n,)``: their footprints, m).

    A pixel of a face turned away from the camera is the roof, seen past the
    near side.
    """
    seg, u, z = walls.segment, walls.u, walls.z
    role, length = seg[:, G.SROLE].astype(np.int64), seg[:, G.SLEN]
    v = vehicles[seg[:, G.SOWNER].astype(np.int64)]
    n = len(u)
    cls = v[:, VCLASS].astype(np.uint8)
    body_kind = v[:, VBODY].astype(np.int64)
    paint = v[:, VRGB : VRGB + 3].astype(np.float32)
    moving = v[:, VLIGHTS] > 0.5
    body_h = np.array([BODIES[k][2] for k in range(len(BODIES))], np.float32)[body_kind]
    x = u / np.maximum(length, 1e-3)
    side = role == G.ROLE_SIDE
    big = (body_kind == BODY_BUS) | (body_kind == BODY_TRUCK)

    shine = 1.0 + 0.25 * band(z, body_h - 0.22, body_h - 0.1, fp) - 0.15 * band(z, 0.0, 0.4, fp)
    albedo = paint * shine[:, None]
    # Cabin glass with pillars; for buses a band of windows, for trucks a cab at the front.
    cabin = (z > body_h) & ~big
    pillars = (
        band(x, 0.0, 0.04, fp / np.maximum(length, 1e-3))
        + band(x, 0.96, 1.0, fp / np.maximum(length, 1e-3))
        + side * band(x, 0.48, 0.52, fp / np.maximum(length, 1e-3))
    )
    albedo = np.where(cabin[:, None], mix(CAR_GLASS, paint * 0.9, np.clip(pillars, 0, 1)), albedo)
    bus = body_kind == BODY_BUS
    bus_windows = bus & (z > 1.2) & (z < 2.5) & (pulse(u, 1.5, 1.3, fp) > 0.5)
    albedo = np.where(bus_windows[:, None], CAR_GLASS, albedo)
    truck_cab = (
        (body_kind == BODY_TRUCK)
        & (z > 1.6)
        & (z < 2.4)
        & ((role == G.ROLE_FRONT) | (side & (np.minimum(x, 1 - x) < 0.12)))
    )
    albedo = np.where(truck_cab[:, None], CAR_GLASS, albedo)
    # Wheels: dark discs at both ends of the long faces.
    wheel_r = np.where(big, 0.5, 0.34)
    near_end = np.minimum(u, length - u)
    wheel_centre = np.where(big, 1.4, 0.85)
    wheel = side & (np.hypot(near_end - wheel_centre, z - wheel_r) < wheel_r)
    albedo = np.where(wheel[:, None], TYRE, albedo)
    albedo = np.where(((z < 0.22) & ~wheel)[:, None], TYRE * 2, albedo)
    # Lamps: headlights on the front face, tail lights on the back.
    lamp = (
        band(np.minimum(x, 1 - x), 0.06, 0.22, fp / np.maximum(length, 1e-3))
        * band(z, body_h - 0.4, body_h - 0.2, fp)
        * ~side
    )
    front_lamp = lamp * (role == G.ROLE_FRONT)
    back_lamp = lamp * (role == G.ROLE_BACK)
    albedo = mix(albedo, HEADLIGHT, front_lamp)
    albedo = mix(albedo, TAILLIGHT, back_lamp)
    roof = ~walls.front
    albedo = np.where(roof[:, None], SNOW_COVER if snowy else paint * 0.8, albedo)
    emissive = np.zeros((n, 3), np.float32)
    if lights > 0:
        on = (moving & ~roof).astype(np.float32)
        emissive += HEADLIGHT * (2.0 * lights * front_lamp * on)[:, None]
        emissive += np.array([1.0, 0.05, 0.03], np.float32) * (1.2 * lights * back_lamp * on)[:, None]
        emissive += np.array([0.9, 0.85, 0.6], np.float32) * (0.5 * lights * bus_windows * ~roof)[:, None]
    return cls, albedo.astype(np.float32), emissive

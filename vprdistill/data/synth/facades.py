"""Procedural building facades: storeys, window grids, doors, shop fronts, landmarks.

Everything is a function of the texture coordinates ``u`` (metres along the
face) and ``z`` (metres above ground) and of the building's parameter row, so
a facade looks the same from every camera. Feature edges are box-filtered over
the pixel footprint ``fp`` to avoid shimmering windows in the distance.
"""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.filters import band, mix, pulse, step
from vprdistill.data.synth.noise import rand01
from vprdistill.data.synth.raycast import WallPixels
from vprdistill.data.synth.styles import CHURCH, CLOCK, GLASS, MURAL, PANEL, TOWER, P

# Per material (PLAIN, BRICK, PANEL, GLASS, SIDING, STONE): tone variation between cells,
# horizontal courses (period, line width, darkening) and vertical joints.
_GRAIN = np.array([0.05, 0.14, 0.04, 0.02, 0.05, 0.08], np.float32)
_COURSE_PERIOD = np.array([1.0, 0.33, 3.2, 1.0, 0.26, 0.62], np.float32)
_COURSE_WIDTH = np.array([0.05, 0.05, 0.09, 0.05, 0.06, 0.05], np.float32)
_COURSE_AMP = np.array([0.0, 0.10, 0.14, 0.0, 0.20, 0.10], np.float32)
_JOINT_PERIOD = np.array([1.0, 1.0, 1.6, 1.0, 1.0, 1.25], np.float32)
_JOINT_WIDTH = np.array([0.05, 0.05, 0.07, 0.05, 0.05, 0.05], np.float32)
_JOINT_AMP = np.array([0.0, 0.0, 0.14, 0.0, 0.0, 0.10], np.float32)
WARM_LIGHT = np.array([1.00, 0.80, 0.48], np.float32)
COOL_LIGHT = np.array([0.82, 0.88, 1.00], np.float32)
SHOP_LIGHT = np.array([1.00, 0.90, 0.70], np.float32)
CLOCK_FACE = np.array([0.92, 0.90, 0.80], np.float32)
BLINDS = np.array([0.70, 0.66, 0.56], np.float32)
ROOF_METAL = np.array([0.62, 0.64, 0.66], np.float32)


def _colour(p: np.ndarray, name: str) -> np.ndarray:
    return p[:, P[name] : P[name] + 3]


def shade_buildings(
    p: np.ndarray, walls: WallPixels, fp: np.ndarray, lights: float, lit_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and emitted light ``(n, 3)`` of the building pixels ``walls`` (``fp (n,)``: their footprints, m).

    ``p`` holds each pixel's building parameters ``(n, NUM_PARAMS)``;
    ``lights`` in ``[0, 1]`` is how much artificial light is on (night 1).
    """
    n = len(walls.u)
    role = walls.segment[:, G.SROLE].astype(np.int64)
    u, z, length, fp = (np.asarray(a, np.float32) for a in (walls.u, walls.z, walls.segment[:, G.SLEN], fp))
    names = ("height", "storey", "ground", "bay", "win_w", "win_h", "sill", "sign_period", "parapet", "door_u", "lit_p")
    s = {name: p[:, P[name]] for name in names}
    material = p[:, P["material"]].astype(np.int64)
    landmark = p[:, P["landmark"]].astype(np.int64)
    tex_seed = p[:, P["tex_seed"]].astype(np.int64)
    height, storey, ground = s["height"], s["storey"], s["ground"]
    front = role == G.ROLE_FRONT
    fade = np.clip(1.0 - fp / 0.5, 0.0, 1.0)

    # Wall material: cell-to-cell tone variation, then horizontal courses (bricks, boards,
    # floor slabs) and vertical joints (panels, stone blocks), each one pulse train per pixel.
    grain = rand01(np.floor(u / 0.5) + tex_seed * 977, np.floor(z / 0.33), 31) - 0.5
    course_z = np.where(material == PANEL, z - ground, z)
    courses = _COURSE_AMP[material] * pulse(course_z, _COURSE_PERIOD[material], _COURSE_WIDTH[material], fp)
    joints = _JOINT_AMP[material] * pulse(u, _JOINT_PERIOD[material], _JOINT_WIDTH[material], fp)
    courses = np.maximum(courses, joints)
    albedo = _colour(p, "wall") * (1.0 + _GRAIN[material] * grain * fade - courses)[:, None]
    albedo *= (0.88 + 0.12 * np.clip(z / 1.2, 0.0, 1.0))[:, None]  # grime near the pavement
    trim = _colour(p, "trim")
    emissive = np.zeros((n, 3), np.float32)

    below_top = 1.0 - step(z, height - s["parapet"] - 0.15, fp)
    cap = band(z, height - 0.35, height + 0.02, fp)
    bands = p[:, P["bands"]] * pulse(z - ground + 0.15, storey, 0.3, fp) * step(z, ground - 0.2, fp) * below_top
    albedo = mix(albedo, trim * 0.9, np.maximum(cap, 0.85 * bands))

    # Upper windows: a grid of bays centred on the face.
    bay, win_w, win_h, sill = s["bay"], s["win_w"], s["win_h"], s["sill"]
    bays = np.maximum(1.0, np.floor((length - 0.8) / bay))
    uu = u - (length - bays * bay) / 2
    in_face = band(uu, 0.0, bays * bay, fp)
    wu_pos = uu - (bay - win_w) / 2
    zz = z - ground
    above_ground = step(zz, 0.0, fp)
    windows_here = np.where(role == G.ROLE_SIDE, p[:, P["side_windows"]], 1.0)
    win_u = pulse(wu_pos, bay, win_w, fp) * in_face
    win_z = pulse(zz - sill, storey, win_h, fp) * above_ground * below_top
    curtain = material == GLASS
    # Curtain walls: glass everywhere but mullions and spandrel bands.
    win_u = np.where(curtain, 1.0 - pulse(u + 0.04, 1.5, 0.08, fp), win_u)
    win_z = np.where(curtain, (1.0 - pulse(zz, storey, 0.7, fp)) * above_ground * below_top, win_z)
    window = win_u * win_z * windows_here
    frame = np.clip(
        pulse(wu_pos + 0.12, bay, win_w + 0.24, fp)
        * pulse(zz - sill + 0.12, storey, win_h + 0.24, fp)
        * in_face
        * above_ground
        * below_top
        * windows_here
        - window,
        0.0,
        1.0,
    ) * (~curtain)
    bay_index = np.floor(wu_pos / bay)
    storey_index = np.floor((zz - sill) / storey)
    in_window = np.clip(np.mod(zz - sill, storey) / np.maximum(win_h, 0.1), 0.0, 1.0)
    glass = _colour(p, "glass") * (0.75 + 0.55 * in_window)[:, None]  # brighter top: reflected sky
    window_rand = rand01(bay_index + tex_seed * 131, storey_index, 41)
    blinds = (window_rand < 0.3) & (in_window > 0.55) & ~curtain
    glass = np.where(blinds[:, None], BLINDS * 0.8, glass)

    upper = z >= ground
    albedo = mix(albedo, trim * 0.9, frame * 0.85 * upper)
    albedo = mix(albedo, glass, window * upper)
    window_light = np.zeros((n, 3), np.float32)
    if lights > 0:
        lit = rand01(bay_index + tex_seed * 131, storey_index + 7, lit_seed) < s["lit_p"] * lights
        warm = rand01(bay_index + tex_seed * 131, storey_index, lit_seed + 1) < 0.75
        window_light = np.where(warm[:, None], WARM_LIGHT, COOL_LIGHT) * ((0.45 + 0.45 * window_rand) * lit)[:, None]
        emissive += window_light * (window * upper)[:, None]
    # The ground floor is a small share of the pixels: evaluate it on those only.
    g = np.nonzero(~upper)[0]
    if len(g):
        per_pixel = (p, u, z, length, fp, front, win_u, windows_here, glass, albedo, window_light)
        albedo[g], ground_light = _ground_floor(*(a[g] for a in per_pixel), lights)
        emissive[g] += ground_light

    # Landmarks: unique facades that make a place recognisable from afar.
    roof = z > height + 0.02
    albedo = np.where(roof[:, None], np.where((landmark == TOWER)[:, None], ROOF_METAL, _colour(p, "roof")), albedo)
    is_tower = landmark == TOWER
    if is_tower.any():
        crown = band(z, height - 6.0, height, fp) * is_tower
        stripes = pulse(z, 1.6, 0.6, fp)
        crown_colour = mix(_colour(p, "acc0"), _colour(p, "acc1"), stripes)
        albedo = mix(albedo, crown_colour, crown)
        emissive += crown_colour * (0.9 * lights * crown)[:, None]
    is_mural = (landmark == MURAL) & (role != G.ROLE_BACK)
    if is_mural.any():
        area = band(u, 1.0, length - 1.0, fp) * band(z, 1.2, height - s["parapet"] - 0.6, fp) * is_mural
        centre_u = length * (0.3 + 0.4 * (tex_seed % 7) / 6.0)
        rings = np.floor(np.hypot(u - centre_u, z - 0.5 * height) / 1.4)
        diagonal = np.floor((u + z * (1.0 + (tex_seed % 3))) / 2.2)
        index = (np.where(tex_seed % 2 == 0, rings, diagonal) % 4).astype(np.int64)
        accents = np.stack([_colour(p, f"acc{k}") for k in range(4)], axis=1)  # (n, 4, 3)
        painted = accents[np.arange(n), index]
        albedo = mix(albedo, painted, area)
        emissive += painted * (0.25 * lights * area)[:, None]
    is_clock = landmark == CLOCK
    if is_clock.any():
        radius = np.minimum(0.3 * length, 3.0)
        cz = height - radius - 1.2
        du, dz = u - length / 2, z - cz
        r = np.hypot(du, dz)
        face = (r < radius) & is_clock
        rim = face & (r > radius - 0.3)
        angle = np.arctan2(du, dz)
        hour = (tex_seed % 12) * (np.pi / 6)
        minute = (tex_seed % 60) * (np.pi / 30)
        hands = face & (
            ((np.abs(np.angle(np.exp(1j * (angle - hour)))) < 0.12) & (r < 0.55 * radius))
            | ((np.abs(np.angle(np.exp(1j * (angle - minute)))) < 0.08) & (r < 0.85 * radius))
        )
        clock = np.where((rim | hands)[:, None], np.float32(0.1), CLOCK_FACE)
        albedo = np.where(face[:, None], clock, albedo)
        emissive += CLOCK_FACE * (0.8 * lights * (face & ~rim & ~hands))[:, None]
    is_church = (landmark == CHURCH) & front & (s["door_u"] >= 0)
    if is_church.any():
        rose_r = 1.6
        du, dz = u - length / 2, z - (height - 3.2)
        r = np.hypot(du, dz)
        rose = (r < rose_r) & is_church
        sector = (np.floor((np.arctan2(du, dz) + np.pi) / (np.pi / 4)) + (r < 0.6 * rose_r) * 2) % 4
        accents = np.stack([_colour(p, f"acc{k}") for k in range(4)], axis=1) * 0.7
        stained = accents[np.arange(n), sector.astype(np.int64)]
        stained = np.where((np.abs(r - rose_r) < 0.18)[:, None], trim, stained)
        albedo = np.where(rose[:, None], stained, albedo)
        portal = band(u, length / 2 - 1.3, length / 2 + 1.3, fp) * band(z, -1.0, 3.8, fp) * is_church
        albedo = mix(albedo, _colour(p, "door") * 0.8, portal)
        emissive += stained * (0.8 * lights * rose)[:, None]
    return albedo.astype(np.float32), emissive.astype(np.float32)


def _ground_floor(
    p: np.ndarray,
    u: np.ndarray,
    z: np.ndarray,
    length: np.ndarray,
    fp: np.ndarray,
    front: np.ndarray,
    win_u: np.ndarray,
    windows_here: np.ndarray,
    glass: np.ndarray,
    albedo: np.ndarray,
    window_light: np.ndarray,
    lights: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-floor pixels: a shop front (display windows, sign band with its colours), or a door and windows."""
    ground = p[:, P["ground"]]
    shop = (p[:, P["shop"]] > 0.5) & front
    sign_lo, sign_hi = ground - 1.15, ground - 0.3
    display = np.where(
        shop, pulse(u - 0.6, 3.2, 2.6, fp) * band(u, 0.5, length - 0.5, fp) * band(z, 0.45, sign_lo - 0.25, fp), 0.0
    )
    sign_area = np.where(shop, band(u, 0.3, length - 0.3, fp) * band(z, sign_lo, sign_hi, fp), 0.0)
    period = p[:, P["sign_period"]]
    letters = (
        pulse(u - 1.7, period, period * 0.55, fp)
        * band(z, sign_lo + 0.22, sign_hi - 0.22, fp)
        * band(u, 1.7, length - 1.2, fp)
    )
    logo = band(u, 0.55, 1.45, fp) * band(z, sign_lo + 0.08, sign_hi - 0.08, fp)
    sign_colour = mix(mix(_colour(p, "acc0"), _colour(p, "acc1"), letters), _colour(p, "acc2"), logo)
    door_centre = p[:, P["door_u"]] * length
    door = band(u, door_centre - 0.55, door_centre + 0.55, fp) * band(z, -1.0, 2.3, fp) * (front & (door_centre >= 0))
    win_h = p[:, P["win_h"]]
    ground_windows = (
        win_u * band(z, 0.95, np.minimum(ground - 0.35, 0.95 + win_h), fp) * windows_here * (ground > 2.0) * ~shop
    )
    shop_glass = _colour(p, "glass") * 0.8
    albedo = mix(albedo, glass, ground_windows)
    albedo = mix(albedo, shop_glass, display)
    albedo = mix(albedo, sign_colour, sign_area)
    albedo = mix(albedo, _colour(p, "door"), door * ~shop)
    albedo = mix(albedo, shop_glass * 0.7, door * shop)
    emissive = window_light * ground_windows[:, None]
    if lights > 0:
        emissive = (
            emissive
            + SHOP_LIGHT * (0.75 * lights * display)[:, None]
            + sign_colour * (0.65 * lights * sign_area)[:, None]
        )
    return albedo, emissive.astype(np.float32)

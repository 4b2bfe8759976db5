"""Billboard props: trees, street lamps, traffic signs and lights, pedestrians.

Each prop is drawn in its screen rectangle with a per-pixel depth test against
what is already in the frame; its look is a function of local coordinates in
metres (``sm`` across, ``zm`` up), so it scales with distance by itself.
"""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.camera import Camera
from vprdistill.data.synth.filters import visible_width
from vprdistill.data.synth.frame import SURFACE_SPRITE, Frame
from vprdistill.data.synth.trees import draw_tree

POLE_GREY = np.array([0.24, 0.25, 0.25], np.float32)
LAMP_LIGHT = np.array([1.0, 0.85, 0.55], np.float32)
SKIN = ((0.80, 0.60, 0.47), (0.55, 0.38, 0.26), (0.35, 0.23, 0.16))
SHIRTS = (
    (0.70, 0.10, 0.10), (0.10, 0.20, 0.50), (0.85, 0.85, 0.80), (0.15, 0.15, 0.15),
    (0.30, 0.45, 0.25), (0.85, 0.65, 0.15), (0.45, 0.30, 0.55), (0.55, 0.35, 0.25),
)  # fmt: skip
PANTS = ((0.12, 0.14, 0.22), (0.10, 0.10, 0.10), (0.35, 0.30, 0.25), (0.25, 0.28, 0.35))
SIGN_RED, SIGN_WHITE = np.array([0.75, 0.08, 0.08], np.float32), np.array([0.92, 0.92, 0.90], np.float32)
SIGN_YELLOW, SIGN_BLUE = np.array([0.95, 0.78, 0.10], np.float32), np.array([0.10, 0.25, 0.65], np.float32)
SIGN_BLACK, SIGN_BACK = np.array([0.08, 0.08, 0.08], np.float32), np.array([0.55, 0.55, 0.56], np.float32)


class PropContext:
    """What every prop drawer needs besides its own row."""

    def __init__(self, camera: Camera, season: str, snowy: bool, lights: float, light_phase: int) -> None:
        self.camera, self.season, self.snowy, self.lights, self.light_phase = camera, season, snowy, lights, light_phase


def _lamp(sm, zm, prop, fp, ctx):
    h = prop[G.PHEIGHT]
    a = np.abs(sm)
    pole = (a < visible_width(0.16, fp) / 2) & (zm < h - 0.3)
    arm = (np.abs(zm - (h - 0.38)) < visible_width(0.08, fp) / 2) & (a < 1.05)
    head = (a > 0.65) & (a < 1.15) & (zm > h - 0.55) & (zm < h - 0.3)
    albedo = np.broadcast_to(POLE_GREY, sm.shape + (3,)).copy()
    emissive = None
    if ctx.lights > 0:
        emissive = np.zeros(sm.shape + (3,), np.float32)
        emissive[head & (zm < h - 0.42)] = LAMP_LIGHT * 3.0 * ctx.lights
    return pole | arm | head, C.POLE, albedo, emissive


def _sign(sm, zm, prop, fp, ctx):
    h, var = prop[G.PHEIGHT], int(prop[G.PVARIANT])
    zc = h - 0.38
    s, t = sm, zm - zc
    pole = (np.abs(sm) < visible_width(0.07, fp) / 2) & (zm < zc)
    stop = prop[G.PEXTRA] > 0.5
    kind = -1 if stop else var % 4
    if stop:
        shape = np.maximum(np.maximum(np.abs(s), np.abs(t)), (np.abs(s) + np.abs(t)) / 1.3) < 0.37
    elif kind == 1:
        shape = np.abs(s) + np.abs(t) < 0.42
    elif kind == 3:
        shape = np.hypot(s, t) < 0.33
    else:
        shape = (np.abs(s) < 0.3) & (np.abs(t) < 0.36)
    facing = np.radians(prop[G.PFACING])
    view = ctx.camera.view
    seen_front = np.sin(facing) * (view.x - prop[G.PX]) + np.cos(facing) * (view.y - prop[G.PY]) > 0
    albedo = np.broadcast_to(POLE_GREY, sm.shape + (3,)).copy()
    if not seen_front:
        face = np.broadcast_to(SIGN_BACK, sm.shape + (3,))
    elif stop:
        ring = np.maximum(np.maximum(np.abs(s), np.abs(t)), (np.abs(s) + np.abs(t)) / 1.3) > 0.32
        face = np.where(ring[..., None], SIGN_WHITE, SIGN_RED)
    elif kind == 0:  # speed limit: white with a black border and figures
        ink = (np.maximum(np.abs(s), np.abs(t)) > 0.26) | ((np.abs(t) < 0.12) & (np.abs(np.abs(s) - 0.1) < 0.04))
        face = np.where(ink[..., None], SIGN_BLACK, SIGN_WHITE)
    elif kind == 1:  # warning diamond
        face = np.where((np.abs(s) + np.abs(t) > 0.36)[..., None], SIGN_BLACK, SIGN_YELLOW)
    elif kind == 2:  # blue information sign with a white arrow
        arrow = (np.abs(s) < 0.06) & (np.abs(t) < 0.22) | ((t > 0.05) & (np.abs(s) < 0.2 - (t - 0.05)))
        face = np.where(arrow[..., None], SIGN_WHITE, SIGN_BLUE)
    else:  # prohibition: red ring
        face = np.where((np.hypot(s, t) > 0.25)[..., None], SIGN_RED, SIGN_WHITE)
    albedo = np.where(shape[..., None], face, albedo).astype(np.float32)
    cls = np.where(shape, C.TRAFFIC_SIGN, C.POLE).astype(np.uint8)
    return pole | shape, cls, albedo, None


def _traffic_light(sm, zm, prop, fp, ctx):
    h, var = prop[G.PHEIGHT], int(prop[G.PVARIANT])
    pole = (np.abs(sm) < visible_width(0.14, fp) / 2) & (zm < h - 1.1)
    box = (np.abs(sm) < 0.2) & (zm >= h - 1.1) & (zm < h)
    albedo = np.where(box[..., None], np.float32(0.10), POLE_GREY).astype(np.float32)
    facing = np.radians(prop[G.PFACING])
    view = ctx.camera.view
    emissive = None
    if np.sin(facing) * (view.x - prop[G.PX]) + np.cos(facing) * (view.y - prop[G.PY]) > 0:
        emissive = np.zeros(sm.shape + (3,), np.float32)
        lit = (var + ctx.light_phase) % 3
        for i, colour in enumerate(((1.0, 0.1, 0.05), (1.0, 0.7, 0.1), (0.1, 1.0, 0.4))):
            bulb = box & (np.hypot(sm, zm - (h - 0.2 - 0.35 * i)) < 0.12)
            albedo[bulb] = np.asarray(colour, np.float32) * (0.9 if i == lit else 0.2)
            if i == lit:
                emissive[bulb] = np.asarray(colour, np.float32) * (0.4 + 1.4 * ctx.lights)
    cls = np.where(box, C.TRAFFIC_LIGHT, C.POLE).astype(np.uint8)
    return pole | box, cls, albedo, emissive


def _person(sm, zm, prop, fp, ctx):
    h, var = prop[G.PHEIGHT], int(prop[G.PVARIANT])
    a = np.abs(sm)
    head = np.hypot(sm, zm - (h - 0.12)) < max(0.11, fp * 0.5)
    torso = (a < 0.19) & (zm >= 0.5 * h) & (zm < h - 0.22)
    arms = (a >= 0.19) & (a < 0.26) & (zm >= 0.47 * h) & (zm < h - 0.26)
    stride = 0.12 * ((var % 5) / 4.0) * (0.5 * h - zm) / (0.5 * h)
    leg_w = visible_width(0.15, fp) / 2
    legs = (zm < 0.5 * h) & ((np.abs(sm - 0.08 - stride) < leg_w) | (np.abs(sm + 0.08 + stride) < leg_w))
    shirt = np.asarray(SHIRTS[var % len(SHIRTS)], np.float32)
    if ctx.season == "winter":
        shirt = shirt * 0.5
    albedo = np.empty(sm.shape + (3,), np.float32)
    albedo[:] = PANTS[(var >> 3) % len(PANTS)]
    albedo[torso | arms] = shirt
    albedo[head] = SKIN[(var >> 5) % len(SKIN)]
    albedo[head & (zm > h - 0.08)] = (0.12, 0.09, 0.07)
    return head | torso | arms | legs, C.PERSON, albedo, None


DRAWERS = {
    G.PROP_TREE: draw_tree,
    G.PROP_LAMP: _lamp,
    G.PROP_SIGN: _sign,
    G.PROP_TRAFFIC_LIGHT: _traffic_light,
    G.PROP_PERSON: _person,
}


def draw_props(frame: Frame, props: np.ndarray, ctx: PropContext, max_depth: float = 150.0) -> None:
    """Draw every prop in view into ``frame`` (depth-tested against what is there)."""
    camera = ctx.camera
    size = camera.width
    depth, lateral = camera.to_camera(props[:, G.PX], props[:, G.PY])
    ok = (depth > 1.0) & (depth < max_depth)
    props, depth, lateral = props[ok], depth[ok], lateral[ok]
    half_w = camera.focal * props[:, G.PWIDTH] / 2 / depth
    centre = camera.column_of(lateral, depth)
    top = camera.row_of_height(props[:, G.PHEIGHT], depth)
    bottom = camera.row_of_height(0.0, depth)
    on_screen = (centre + half_w > 0) & (centre - half_w < size) & (bottom > 0) & (top < size) & (bottom - top > 2.0)
    for i in np.nonzero(on_screen)[0]:
        prop = props[i]
        c0, c1 = max(0, int(np.floor(centre[i] - half_w[i]))), min(size, int(np.ceil(centre[i] + half_w[i])))
        r0, r1 = max(0, int(np.floor(top[i]))), min(size, int(np.ceil(bottom[i])))
        if c0 >= c1 or r0 >= r1:
            continue
        d = depth[i]
        if not (frame.depth[r0:r1, c0:c1] > d).any():
            continue  # hidden behind walls: skip the shading
        fp = d / camera.focal
        sm = ((np.arange(c0, c1) + 0.5 - centre[i]) * fp)[None, :]
        zm = ((bottom[i] - (np.arange(r0, r1) + 0.5)) * fp)[:, None]
        sm, zm = np.broadcast_arrays(sm, zm)
        mask, cls, albedo, emissive = DRAWERS[int(prop[G.PKIND])](sm, zm, prop, fp, ctx)
        mask = mask & (frame.depth[r0:r1, c0:c1] > d)
        if not mask.any():
            continue
        region = (slice(r0, r1), slice(c0, c1))
        frame.depth[region][mask] = d
        frame.albedo[region][mask] = albedo[mask]
        frame.cls[region][mask] = cls[mask] if np.ndim(cls) else cls
        frame.emissive[region][mask] = emissive[mask] if emissive is not None else 0.0
        frame.world[region][mask] = np.stack(
            [np.full(mask.sum(), prop[G.PX]), np.full(mask.sum(), prop[G.PY]), zm[mask]], axis=1
        )
        frame.sun[region][mask] = 0.55
        frame.wet[region][mask] = 0.0
        frame.kind[region][mask] = SURFACE_SPRITE

"""Vectorised 2.5D wall casting: every image column against every nearby wall.

Each column ray is intersected with all candidate segments at once; the
nearest ``max_layers`` hits are kept and walked front to back with a running
"highest row so far", so that a taller building behind a shorter one (or a
house behind a car) shows above it, as in voxel-space terrain renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.camera import Camera

NEAR_M = 0.3


@dataclass
class WallPixels:
    """The wall visible at each covered pixel (arrays of the covered pixels, flat order)."""

    pixel: np.ndarray  # (n,) flat pixel index
    segment: np.ndarray  # (n, 15) segment rows
    depth: np.ndarray  # (n,) optical depth, metres
    u: np.ndarray  # (n,) metres along the face, left to right seen from outside
    z: np.ndarray  # (n,) height above ground, metres
    front: np.ndarray  # (n,) bool: the face turns towards the camera (False: a car roof seen past its far side)

    def take(self, mask: np.ndarray) -> WallPixels:
        """The pixels where ``mask (n,) bool`` holds."""
        return WallPixels(*(getattr(self, f.name)[mask] for f in fields(self)))


def cull_segments(segments: np.ndarray, camera: Camera, max_depth: float) -> np.ndarray:
    """Drop segments behind the camera, outside the field of view, too far, or facing away.

    Vehicle faces that look away are kept: their far face, drawn above the
    near one, is the visible roof.
    """
    view = camera.view
    da, la = camera.to_camera(segments[:, G.SX0], segments[:, G.SY0])
    db, lb = camera.to_camera(segments[:, G.SX1], segments[:, G.SY1])
    k = camera.tan_half_fov * 1.02
    outside = (
        ((da < NEAR_M) & (db < NEAR_M))
        | ((la < -k * da) & (lb < -k * db))
        | ((la > k * da) & (lb > k * db))
        | ((da > max_depth) & (db > max_depth))
    )
    keep = ~outside & (_faces_camera(segments, view) | (segments[:, G.SKIND] == G.KIND_VEHICLE))
    return segments[keep]


def top_heights(segments: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Height of the top edge of each hit, from its segment's profile and ``u``."""
    height = segments[..., G.SHEIGHT]
    length = np.maximum(segments[..., G.SLEN], 1e-6)
    x = np.clip(u / length, 0.0, 1.0)
    profile = segments[..., G.SPROFILE]
    extra = segments[..., G.SPEXTRA]
    peak = 1.0 - np.abs(2.0 * x - 1.0)
    gable = height + extra * peak
    spire = height + extra * np.clip((peak - 0.55) / 0.45, 0.0, 1.0) ** 0.7
    # Vehicle: cabin between fractions pa..pb with sloped glass, body height in ``extra``.
    pa, pb = segments[..., G.SPA], segments[..., G.SPB]
    ramp = np.clip(np.minimum(x - pa, pb - x) / 0.08 + 1.0, 0.0, 1.0)
    cabin = extra + (height - extra) * ramp
    return np.select(
        [profile == G.PROFILE_GABLE, profile == G.PROFILE_SPIRE, profile == G.PROFILE_CABIN],
        [gable, spire, cabin],
        default=height,
    )


def cast_walls(segments: np.ndarray, camera: Camera, max_layers: int = 12, max_depth: float = 300.0) -> WallPixels:
    """Render the wall layer: which segment covers each pixel, at what depth and texture coordinate."""
    size = camera.width
    view = camera.view
    if len(segments) == 0:
        empty = np.zeros(0)
        return WallPixels(
            np.zeros(0, np.int64), np.zeros((0, G.SEGMENT_COLUMNS)), empty, empty, empty, np.zeros(0, bool)
        )
    ex = segments[:, G.SX1] - segments[:, G.SX0]
    ey = segments[:, G.SY1] - segments[:, G.SY0]
    ax = segments[:, G.SX0] - view.x
    ay = segments[:, G.SY0] - view.y
    dx, dy = camera.ray_x[:, None], camera.ray_y[:, None]  # (W, 1)
    denom = dx * ey - dy * ex  # (W, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ax * ey - ay * ex) / denom
        s = (ax * dy - ay * dx) / denom
    valid = (t > NEAR_M) & (t < max_depth) & (s >= 0.0) & (s <= 1.0)
    depth = np.where(valid, t, np.inf)

    layers = min(max_layers, depth.shape[1])
    if depth.shape[1] > layers:
        index = np.argpartition(depth, layers - 1, axis=1)[:, :layers]
    else:
        index = np.broadcast_to(np.arange(layers), depth.shape).copy()
    hit_depth = np.take_along_axis(depth, index, axis=1)
    order = np.argsort(hit_depth, axis=1, kind="stable")
    index = np.take_along_axis(index, order, axis=1)  # (W, M) nearest first
    hit_depth = np.take_along_axis(hit_depth, order, axis=1)
    hit_s = np.take_along_axis(s, index, axis=1)
    hit_segments = segments[index]  # (W, M, 15)
    hit_u = np.where(np.isfinite(hit_depth), hit_s, 0.0) * hit_segments[..., G.SLEN]

    finite = np.isfinite(hit_depth)
    safe_depth = np.where(finite, hit_depth, 1.0)
    facing = _faces_camera(hit_segments, view)
    top = np.where(finite, camera.row_of_height(top_heights(hit_segments, hit_u), safe_depth), np.inf)
    # A far vehicle face stands for the roof seen past the near side: it reaches down
    # to wherever the near side's top edge is, not to the ground.
    bottom = np.where(finite, np.where(facing, camera.row_of_height(0.0, safe_depth), np.inf), -np.inf)
    covered_above = np.minimum.accumulate(top, axis=1)
    previous = np.concatenate([np.full((size, 1), np.inf), covered_above[:, :-1]], axis=1)
    visible_bottom = np.minimum(bottom, previous)

    rows = camera.row_centres[:, None]  # (H, 1)
    layer = np.full((size, size), -1, dtype=np.int64)
    for k in range(layers):
        show = top[:, k] < visible_bottom[:, k]
        if not show.any():
            continue
        mask = (rows >= top[None, :, k]) & (rows < visible_bottom[None, :, k])
        layer[mask] = k
    py, px = np.nonzero(layer >= 0)
    k = layer[py, px]
    d = hit_depth[px, k]
    seg = hit_segments[px, k]
    z = view.height + (camera.horizon - camera.row_centres[py]) * d / camera.focal
    return WallPixels(py * size + px, seg, d, hit_u[px, k], z, facing[px, k])


def _faces_camera(segments: np.ndarray, view) -> np.ndarray:
    """Whether the camera stands on the outward side of each segment."""
    return (
        segments[..., G.SNX] * (view.x - segments[..., G.SX0]) + segments[..., G.SNY] * (view.y - segments[..., G.SY0])
    ) > 0

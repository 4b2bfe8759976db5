"""The sky: a gradient from horizon to zenith, clouds on a plane above the city, a sun glow."""

from __future__ import annotations

import math

import cv2
import numpy as np

from vprdistill.data.synth.camera import Camera
from vprdistill.data.synth.lighting import Lighting
from vprdistill.data.synth.noise import fbm, value_noise

CLOUD_HEIGHT_M = 1500.0


def _cloud_layer(camera: Camera, lighting: Lighting, cloud_seed: int, step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Cloud cover and shade ``(H, W)``, from where view rays meet a cloud layer above the city.

    Clouds are smooth, so they are evaluated every ``step`` pixels and
    interpolated; perspective makes them shrink towards the horizon.
    """
    size = camera.width
    coarse = np.arange(0, size, step) + step / 2
    elevation = np.arctan2(camera.horizon - coarse, camera.focal)[:, None]
    xc = (coarse - size / 2) / camera.focal
    ray_x, ray_y = camera.forward[0] + xc * camera.right[0], camera.forward[1] + xc * camera.right[1]
    norm = np.hypot(ray_x, ray_y)
    reach = CLOUD_HEIGHT_M / np.maximum(np.tan(elevation), 0.02)
    px = camera.view.x + (ray_x / norm)[None, :] * reach
    py = camera.view.y + (ray_y / norm)[None, :] * reach
    cover = np.clip((fbm(px / 900.0, py / 900.0, cloud_seed, octaves=3) - (1.0 - lighting.cloud_cover)) * 4.0, 0.0, 1.0)
    shade = 0.8 + 0.25 * value_noise(px / 300.0, py / 300.0, cloud_seed + 1)
    full = (size, size)
    return (
        cv2.resize(cover.astype(np.float32), full, interpolation=cv2.INTER_LINEAR),
        cv2.resize(shade.astype(np.float32), full, interpolation=cv2.INTER_LINEAR),
    )


def sky_colour(camera: Camera, rows: np.ndarray, cols: np.ndarray, lighting: Lighting, cloud_seed: int) -> np.ndarray:
    """Colour ``(n, 3)`` of the sky at pixels ``(rows, cols)``."""
    elevation = np.arctan2(camera.horizon - (rows + 0.5), camera.focal)
    t = np.clip(elevation / (math.pi / 3), 0.0, 1.0) ** 0.6
    colour = lighting.sky_horizon + (lighting.sky_zenith - lighting.sky_horizon) * t[:, None]
    ray_x, ray_y = camera.ray_x[cols], camera.ray_y[cols]
    if lighting.cloud_cover > 0:
        cover, shade = _cloud_layer(camera, lighting, cloud_seed)
        cover = cover[rows, cols] * np.clip(elevation / 0.05, 0.0, 1.0)
        colour = colour + (lighting.cloud_colour * shade[rows, cols, None] - colour) * cover[:, None]
    if lighting.sun_elevation_deg > -5 and float(lighting.sun.sum()) > 0:
        azimuth = np.arctan2(ray_x, ray_y)
        delta = np.angle(np.exp(1j * (azimuth - math.radians(lighting.sun_azimuth_deg))))
        glow = np.exp(-(delta**2) / 0.25 - np.abs(elevation - math.radians(lighting.sun_elevation_deg)) / 0.25)
        colour = colour + lighting.sun[None, :] * (0.6 * glow)[:, None]
    return colour.astype(np.float32)

"""How a condition lights the scene: sun, ambient light, lamps, sky and haze.

Time of day sets the base light; weather scatters it (overcast, fog, rain,
snow turn sunlight into flat ambient light and shorten visibility); season
moves the sun and tints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vprdistill.data.synth.conditions import Condition


@dataclass(frozen=True)
class Lighting:
    ambient: np.ndarray  # (3,)
    sun: np.ndarray  # (3,)
    sun_azimuth_deg: float
    sun_elevation_deg: float
    lights: float  # share of artificial lights on, 0..1
    lamp: float  # street-lamp strength
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    cloud_cover: float  # 0..1
    cloud_colour: np.ndarray
    haze: np.ndarray  # colour distant surfaces fade to
    visibility_m: float
    noise_sigma: float
    exposure: float


def _rgb(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32)


def lighting_for(condition: Condition) -> Lighting:
    """The lighting parameters of ``condition``."""
    time, weather, season = condition.time, condition.weather, condition.season
    if time == "day":
        ambient, sun = _rgb(0.50, 0.53, 0.58), _rgb(0.62, 0.58, 0.50)
        azimuth, elevation, lights, lamp = 205.0, 48.0, 0.0, 0.0
        horizon, zenith = _rgb(0.72, 0.82, 0.93), _rgb(0.30, 0.50, 0.82)
        noise, exposure = 0.012, 1.0
    elif time == "dusk":
        ambient, sun = _rgb(0.26, 0.22, 0.26), _rgb(0.62, 0.36, 0.16)
        azimuth, elevation, lights, lamp = 255.0, 7.0, 0.55, 0.7
        horizon, zenith = _rgb(0.98, 0.62, 0.36), _rgb(0.26, 0.28, 0.50)
        noise, exposure = 0.02, 1.1
    else:
        ambient, sun = _rgb(0.035, 0.04, 0.065), _rgb(0.0, 0.0, 0.0)
        azimuth, elevation, lights, lamp = 0.0, -20.0, 1.0, 1.0
        horizon, zenith = _rgb(0.10, 0.08, 0.09), _rgb(0.01, 0.015, 0.04)
        noise, exposure = 0.03, 1.25
    if season == "winter":
        elevation *= 0.55
        sun = sun * _rgb(0.95, 0.98, 1.05)
    elif season == "autumn":
        elevation *= 0.8
        sun = sun * _rgb(1.05, 0.98, 0.9)

    cloud_cover, cloud_colour = (
        0.3,
        _rgb(0.95, 0.95, 0.96) * (1.0 if time == "day" else 0.7 if time == "dusk" else 0.08),
    )
    haze, visibility = horizon.copy(), 1500.0
    grey = {"day": 1.0, "dusk": 0.5, "night": 0.09}[time]
    scattered = {"clear": 0.0, "overcast": 0.9, "fog": 0.95, "rain": 0.95, "snow": 0.9}[weather]
    ambient = ambient + scattered * 0.75 * sun
    sun = sun * (1.0 - scattered)
    if weather == "overcast":
        horizon, zenith = _rgb(0.74, 0.75, 0.77) * grey, _rgb(0.58, 0.60, 0.63) * grey
        cloud_cover, visibility = 1.0, 600.0
    elif weather == "fog":
        horizon = zenith = _rgb(0.74, 0.75, 0.77) * grey
        cloud_cover, visibility = 0.0, 42.0
    elif weather == "rain":
        ambient = ambient * 0.75
        horizon, zenith = _rgb(0.50, 0.52, 0.55) * grey, _rgb(0.36, 0.38, 0.41) * grey
        cloud_cover, visibility = 1.0, 180.0
    elif weather == "snow":
        horizon, zenith = _rgb(0.80, 0.82, 0.85) * grey, _rgb(0.66, 0.68, 0.72) * grey
        cloud_cover, visibility = 0.0, 110.0
    if weather != "clear":
        haze = horizon.copy()
        cloud_colour = horizon * 0.92
    return Lighting(
        ambient,
        sun,
        azimuth,
        elevation,
        lights,
        lamp,
        horizon,
        zenith,
        cloud_cover,
        cloud_colour,
        haze,
        visibility,
        noise,
        exposure,
    )


def sun_vector(lighting: Lighting) -> np.ndarray:
    """Unit vector towards the sun: (east, north, up)."""
    az, el = math.radians(lighting.sun_azimuth_deg), math.radians(lighting.sun_elevation_deg)
    return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)], np.float32)


def lamp_light(points: np.ndarray, lamps: np.ndarray, strength: float) -> np.ndarray:
    """Warm light pooled under street lamps at world ``points (n, 3)``: ``(n, 3)``."""
    total = np.zeros(len(points), np.float32)
    for lamp in lamps:
        d2 = ((points - lamp.astype(np.float32)) ** 2).sum(axis=1)
        total += 1.0 / (1.0 + d2 / 12.0)
    # Capped: right under a lamp head the light saturates instead of growing without bound.
    return np.asarray([1.0, 0.78, 0.5], np.float32) * (strength * np.minimum(1.5 * total, 0.6))[:, None]

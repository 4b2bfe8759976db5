"""A pinhole camera on the street, with the pitch approximated by a vertical shift.

Shifting the horizon instead of rotating keeps walls vertical in the image,
the assumption that lets a 2.5D ray caster work one column at a time; for the
few degrees of pitch of a street-level camera the difference is negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class View:
    """Where a picture is taken: local metres, compass heading (0 = north, 90 = east), degrees."""

    x: float
    y: float
    heading_deg: float
    pitch_deg: float = 0.0
    height: float = 2.5


class Camera:
    """Per-column ray directions and the projection of heights to image rows.

    Ray directions are not normalised: ``fwd + xc·right`` makes the ray
    parameter ``t`` equal to the depth along the optical axis, which is what
    perspective division needs (no fish-eye correction later).
    """

    def __init__(self, view: View, size: int, fov_deg: float) -> None:
        self.view = view
        self.width = self.height = size
        self.focal = (size / 2) / math.tan(math.radians(fov_deg) / 2)
        self.tan_half_fov = math.tan(math.radians(fov_deg) / 2)
        self.horizon = size / 2 + self.focal * math.tan(math.radians(view.pitch_deg))
        heading = math.radians(view.heading_deg)
        self.forward = np.array([math.sin(heading), math.cos(heading)])
        self.right = np.array([math.cos(heading), -math.sin(heading)])
        xc = (np.arange(size) + 0.5 - size / 2) / self.focal
        self.ray_x = self.forward[0] + xc * self.right[0]  # (W,)
        self.ray_y = self.forward[1] + xc * self.right[1]
        self.row_centres = np.arange(size) + 0.5  # (H,)

    def row_of_height(self, z: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Image row of world height ``z`` at optical depth ``depth`` (any matching shapes)."""
        return self.horizon - self.focal * (z - self.view.height) / depth

    def column_of(self, lateral: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return self.width / 2 + self.focal * lateral / depth

    def to_camera(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World ``(x, y)`` → (depth along the optical axis, lateral offset to the right)."""
        dx, dy = np.asarray(x) - self.view.x, np.asarray(y) - self.view.y
        return dx * self.forward[0] + dy * self.forward[1], dx * self.right[0] + dy * self.right[1]

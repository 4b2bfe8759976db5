"""Box-filtered stripes and steps: texture edges without aliasing.

A texture feature smaller than a pixel (a window 60 m away) would flicker into
noise if sampled at one point; integrating the pattern over the pixel's
footprint ``fp`` (metres) gives its coverage in ``[0, 1]`` instead.
"""

from __future__ import annotations

import numpy as np


def pulse(x, period, width, fp) -> np.ndarray:
    """Coverage of the stripes ``[k·period, k·period + width)`` over ``[x − fp/2, x + fp/2]``."""
    fp = np.maximum(fp, np.float32(1e-3))

    def integral(v):
        cycles = np.floor(v / period)
        return cycles * width + np.minimum(v - cycles * period, width)

    half = fp * np.float32(0.5)
    return np.clip((integral(x + half) - integral(x - half)) / fp, 0.0, 1.0).astype(np.float32, copy=False)


def step(x, edge, fp) -> np.ndarray:
    """Coverage of ``[edge, ∞)`` over the pixel footprint: 0 below ``edge``, 1 above."""
    return np.clip((x - edge) / np.maximum(fp, np.float32(1e-3)) + np.float32(0.5), 0.0, 1.0).astype(
        np.float32, copy=False
    )


def band(x, low, high, fp) -> np.ndarray:
    """Coverage of ``[low, high)`` over the pixel footprint."""
    return np.clip(step(x, low, fp) - step(x, high, fp), 0.0, 1.0)


def mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend colours ``(N, 3)`` with weights ``(N,)``: ``a·(1−t) + b·t``."""
    t = np.asarray(t, dtype=np.float32)[..., None]
    return a + (b - a) * t


def visible_width(width: float, fp: float) -> float:
    """``width`` in metres, but at least about a pixel (``fp``), so that distant poles and trunks do not vanish."""
    return max(width, 0.8 * fp)

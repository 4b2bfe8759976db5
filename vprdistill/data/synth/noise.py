"""Deterministic hash noise on integer lattices, vectorised with NumPy.

Textures must be a pure function of position and seed (never of a random
stream) so that the same wall looks the same from every camera and in every
worker process.
"""

from __future__ import annotations

import numpy as np

_MIX_A = np.uint32(0x9E3779B1)
_MIX_B = np.uint32(0x85EBCA77)
_MIX_C = np.uint32(0x85EBCA6B)
_MIX_D = np.uint32(0xC2B2AE35)


def _as_u32(values) -> np.ndarray:
    # Through int64 so that negative lattice coordinates wrap instead of failing.
    return np.atleast_1d(np.asarray(values)).astype(np.int64).astype(np.uint32)


def hash_u32(a, b, seed: int) -> np.ndarray:
    """Hash two integer arrays (broadcast together) and a seed to ``uint32``."""
    h = _as_u32(a) * _MIX_A + _as_u32(b) * _MIX_B + np.uint32(int(seed) & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= _MIX_C
    h ^= h >> np.uint32(13)
    h *= _MIX_D
    h ^= h >> np.uint32(16)
    return h


def rand01(a, b, seed: int) -> np.ndarray:
    """Uniform value in ``[0, 1)`` per lattice point ``(a, b)``, as ``float32``."""
    return (hash_u32(a, b, seed) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def cell_rand(x: np.ndarray, y: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Piecewise-constant noise: one random value per ``cell`` × ``cell`` square."""
    return rand01(np.floor(x / cell), np.floor(y / cell), seed)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in ``[0, 1)`` with unit lattice spacing."""
    xi, yi = np.floor(x), np.floor(y)
    fx, fy = (x - xi).astype(np.float32), (y - yi).astype(np.float32)
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = rand01(xi, yi, seed), rand01(xi + 1, yi, seed)
    v01, v11 = rand01(xi, yi + 1, seed), rand01(xi + 1, yi + 1, seed)
    top = v00 + (v10 - v00) * fx
    bottom = v01 + (v11 - v01) * fx
    return top + (bottom - top) * fy


def fbm(x: np.ndarray, y: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of ``octaves`` value-noise layers, normalised to ``[0, 1)``."""
    total = np.zeros(np.broadcast(x, y).shape, dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        scale = 2.0**octave
        total += amplitude * value_noise(x * scale, y * scale, seed + 7919 * octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm

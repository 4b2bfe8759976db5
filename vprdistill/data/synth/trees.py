"""Trees: leafy crowns in summer and autumn, bare branches in winter.

Trees are the most numerous props, so each (season, snow, variant) is drawn
once per process into a stamp, a pure function of its key and therefore the
same in every worker, and billboards sample it; evaluating the noise per
pixel for every tree would cost ten times more.
"""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.filters import visible_width
from vprdistill.data.synth.noise import cell_rand, value_noise

LEAVES = {
    "summer": ((0.17, 0.32, 0.10), (0.22, 0.38, 0.12), (0.14, 0.28, 0.12), (0.25, 0.36, 0.10)),
    "autumn": ((0.72, 0.36, 0.08), (0.82, 0.58, 0.12), (0.58, 0.18, 0.07), (0.55, 0.48, 0.14)),
}
BARK = np.array([0.26, 0.21, 0.17], np.float32)


TREE_STAMP_ROWS, TREE_STAMP_COLS, TREE_VARIANTS = 128, 80, 16
_TREE_STAMPS: dict[tuple[str, bool, int], tuple[np.ndarray, np.ndarray]] = {}


def tree_stamp(season: str, snowy: bool, variant: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``(R, C) bool`` and albedo ``(R, C, 3)`` of a 5 m × 8 m tree, row 0 at the top."""
    key = (season, snowy, variant % TREE_VARIANTS)
    if key not in _TREE_STAMPS:
        w, h = 5.0, 8.0
        sm = ((np.arange(TREE_STAMP_COLS) + 0.5) / TREE_STAMP_COLS - 0.5) * w
        zm = (1.0 - (np.arange(TREE_STAMP_ROWS) + 0.5) / TREE_STAMP_ROWS) * h
        sm, zm = np.meshgrid(sm, zm)
        prop = G.prop_row(0.0, 0.0, G.PROP_TREE, w, h, key[2] * 7919 + 13)
        mask, _, albedo, _ = _tree_pixels(sm, zm, prop, 0.02, season, snowy)
        _TREE_STAMPS[key] = (mask, albedo.astype(np.float32))
    return _TREE_STAMPS[key]


def _tree_pixels(sm, zm, prop, fp, season: str, snowy: bool):
    w, h, var = prop[G.PWIDTH], prop[G.PHEIGHT], int(prop[G.PVARIANT])
    trunk_top = 0.4 * h
    centre, rx, ry = trunk_top + 0.5 * (h - trunk_top), w / 2, (h - trunk_top) / 2
    e = (sm / rx) ** 2 + ((zm - centre) / ry) ** 2
    bumps = value_noise(sm / 0.7 + var % 97, zm / 0.7, 61)
    trunk = (np.abs(sm) < visible_width(0.12 + 0.03 * w, fp) / 2) & (zm < centre)
    albedo = np.broadcast_to(BARK, sm.shape + (3,)).copy()
    if season == "winter":
        branches = np.zeros(sm.shape, bool)
        thick = visible_width(0.07, fp)
        for i in range(6):
            base = trunk_top * (0.75 + 0.12 * i)
            angle = (0.35 + 0.12 * ((var >> i) % 5)) * (1 if i % 2 else -1)
            reach = 0.5 * (h - trunk_top) + 0.3 * w
            ex, ez = np.sin(angle) * reach, np.cos(angle) * reach
            t = np.clip((sm * ex + (zm - base) * ez) / (ex * ex + ez * ez), 0.0, 1.0)
            branches |= np.hypot(sm - t * ex, zm - base - t * ez) < thick * (1.2 - 0.6 * t)
        twigs = (e < 0.85) & (cell_rand(sm + var % 31, zm, 0.2, 63) < 0.10)
        mask = trunk | branches | twigs
        if snowy:
            albedo[twigs & (cell_rand(sm, zm, 0.2, 64) < 0.5)] = (0.85, 0.86, 0.88)
        return mask, C.VEGETATION, albedo, None
    # Gaps between leaf clumps: low spots of a finer smooth noise (square cells would show when magnified).
    gaps = value_noise(sm / 0.28 + var % 53, zm / 0.28, 62)
    crown = (e < 0.72 + 0.4 * bumps) & (gaps > (0.12 if season == "summer" else 0.24))
    leaves = np.asarray(LEAVES[season][var % 4], np.float32)
    light = 0.6 + 0.45 * np.clip((zm - trunk_top) / (h - trunk_top), 0, 1) - 0.2 * np.clip(sm / rx, -1, 1)
    speckle = 0.75 + 0.5 * value_noise(sm / 0.15, zm / 0.15, 65)
    albedo = np.where(crown[..., None], leaves * (light * speckle * (0.8 + 0.4 * bumps))[..., None], albedo)
    return crown | trunk, C.VEGETATION, albedo.astype(np.float32), None


def draw_tree(sm, zm, prop, fp, ctx):
    """Tree pixels of one billboard from its cached stamp (nearest sample)."""
    mask, albedo = tree_stamp(ctx.season, ctx.snowy, int(prop[G.PVARIANT]))
    rows = np.clip(((1.0 - zm[:, 0] / prop[G.PHEIGHT]) * TREE_STAMP_ROWS).astype(np.int64), 0, TREE_STAMP_ROWS - 1)
    cols = np.clip(((sm[0] / prop[G.PWIDTH] + 0.5) * TREE_STAMP_COLS).astype(np.int64), 0, TREE_STAMP_COLS - 1)
    index = np.ix_(rows, cols)
    return mask[index], C.VEGETATION, albedo[index], None

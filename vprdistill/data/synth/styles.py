"""Facade templates and the parameter vector of one building.

Most buildings come from a dozen templates, repeated in runs of near-identical
copies (row houses, shop rows): the perceptual aliasing that makes real cities
hard to localise in. What tells places apart is the rest: shop signs with their
own colour patterns, the sequence of heights and colours along a street, and a
few unique landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Materials and landmark kinds, stored as floats in the parameter vector.
PLAIN, BRICK, PANEL, GLASS, SIDING, STONE = range(6)
NOT_LANDMARK, TOWER, MURAL, CLOCK, CHURCH = range(5)

# Layout of one building's parameter vector (a row of World.buildings).
_SCALARS = (
    "height", "storey", "ground", "material", "bay", "win_w", "win_h", "sill", "shop",
    "door_u", "landmark", "bands", "lit_p", "sign_period", "parapet", "tex_seed", "side_windows", "roof_extra",
)  # fmt: skip
_COLOURS = ("wall", "trim", "glass", "door", "acc0", "acc1", "acc2", "acc3", "roof")
P = {name: i for i, name in enumerate(_SCALARS)}
for _i, _name in enumerate(_COLOURS):
    P[_name] = len(_SCALARS) + 3 * _i
NUM_PARAMS = len(_SCALARS) + 3 * len(_COLOURS)

BRICKS = (
    (0.56, 0.27, 0.20), (0.62, 0.34, 0.25), (0.48, 0.24, 0.19),
    (0.68, 0.45, 0.32), (0.52, 0.33, 0.27), (0.42, 0.22, 0.18),
)  # fmt: skip
STUCCO = (
    (0.86, 0.80, 0.66), (0.70, 0.80, 0.84), (0.72, 0.78, 0.64),
    (0.88, 0.68, 0.60), (0.90, 0.86, 0.78), (0.80, 0.72, 0.55),
)  # fmt: skip
SIDINGS = ((0.92, 0.92, 0.88), (0.90, 0.82, 0.55), (0.55, 0.62, 0.68), (0.62, 0.70, 0.60), (0.75, 0.55, 0.50))
CONCRETE = ((0.62, 0.62, 0.60), (0.70, 0.68, 0.64), (0.52, 0.53, 0.54), (0.78, 0.77, 0.74))
STONES = ((0.80, 0.74, 0.62), (0.72, 0.68, 0.60), (0.85, 0.82, 0.75))
CONCRETE_LIGHT = CONCRETE + ((0.90, 0.90, 0.88),)
BRICKS_PALE = BRICKS + ((0.70, 0.64, 0.52),)
GLASSES = ((0.16, 0.21, 0.28), (0.15, 0.25, 0.26), (0.20, 0.21, 0.24), (0.24, 0.29, 0.36))
CURTAIN = ((0.25, 0.38, 0.50), (0.22, 0.42, 0.42), (0.34, 0.37, 0.42), (0.30, 0.45, 0.55), (0.45, 0.40, 0.30))
TRIMS = ((0.92, 0.90, 0.86), (0.25, 0.22, 0.20), (0.15, 0.22, 0.18), (0.85, 0.80, 0.68), (0.55, 0.55, 0.55))
DOORS = ((0.30, 0.18, 0.12), (0.12, 0.14, 0.20), (0.45, 0.10, 0.10), (0.10, 0.30, 0.20), (0.20, 0.20, 0.20))
VIVID = (
    (0.85, 0.12, 0.12), (0.12, 0.25, 0.72), (0.10, 0.55, 0.25), (0.96, 0.80, 0.10), (0.96, 0.50, 0.10),
    (0.50, 0.20, 0.62), (0.08, 0.08, 0.08), (0.95, 0.95, 0.95), (0.10, 0.60, 0.62), (0.92, 0.40, 0.62),
)  # fmt: skip
ROOFS = ((0.22, 0.24, 0.28), (0.30, 0.52, 0.45), (0.45, 0.20, 0.15))


@dataclass(frozen=True)
class FacadeTemplate:
    """Ranges a building of one kind draws its parameters from (metres, 0-1 colours)."""

    name: str
    width: tuple[float, float]
    storeys: tuple[int, int]
    storey_h: tuple[float, float]
    ground_h: tuple[float, float]
    material: int
    walls: tuple
    bay: tuple[float, float]
    win_w: tuple[float, float]
    win_h: tuple[float, float]  # fraction of a storey
    shop: float  # probability of a shop front
    run: tuple[int, int]  # how many near-identical copies stand in a row
    bands: float = 0.0
    glass: tuple = GLASSES
    lit_p: float = 0.35


# Per template: (width m, storeys, storey height m, ground storey height m, material, wall colours),
# (bay width m, window width m, window height (fraction of a storey), shop probability, run length), extras.
_TEMPLATE_ROWS = {
    "rowhouse_brick": (
        ((5.0, 7.0), (2, 3), (3.0, 3.3), (3.0, 3.3), BRICK, BRICKS),
        ((1.8, 2.3), (0.8, 1.0), (0.45, 0.55), 0.05, (3, 7)),
    ),
    "rowhouse_painted": (
        ((5.5, 8.0), (2, 3), (3.0, 3.4), (3.0, 3.4), PLAIN, STUCCO),
        ((2.0, 2.6), (0.9, 1.2), (0.45, 0.55), 0.05, (2, 6)),
    ),
    "townhouse_siding": (
        ((6.0, 8.5), (2, 3), (2.9, 3.2), (2.9, 3.2), SIDING, SIDINGS),
        ((2.0, 2.8), (0.9, 1.1), (0.42, 0.5), 0.0, (2, 5)),
    ),
    "shop_brick": (
        ((7.0, 12.0), (2, 4), (3.2, 3.6), (4.0, 4.8), BRICK, BRICKS),
        ((2.2, 2.8), (1.0, 1.3), (0.45, 0.55), 0.9, (1, 3)),
    ),
    "shop_stucco": (
        ((7.0, 13.0), (1, 3), (3.2, 3.6), (4.0, 4.8), PLAIN, STUCCO),
        ((2.4, 3.2), (1.2, 1.6), (0.42, 0.52), 0.9, (1, 2)),
        dict(bands=0.5),
    ),
    "apartment_modern": (
        ((14.0, 24.0), (4, 8), (3.0, 3.2), (3.6, 4.2), PANEL, CONCRETE_LIGHT),
        ((2.6, 3.4), (1.6, 2.2), (0.5, 0.62), 0.4, (1, 2)),
        dict(bands=0.7),
    ),
    "office_concrete": (
        ((16.0, 30.0), (5, 10), (3.6, 4.0), (4.5, 5.5), PANEL, CONCRETE),
        ((1.5, 2.0), (1.2, 1.6), (0.5, 0.62), 0.5, (1, 1)),
        dict(bands=0.8, lit_p=0.5),
    ),
    "office_glass": (
        ((18.0, 32.0), (8, 22), (3.6, 4.0), (4.5, 5.5), GLASS, CURTAIN),
        ((1.5, 1.5), (1.4, 1.4), (0.85, 0.85), 0.3, (1, 1)),
        dict(glass=CURTAIN, lit_p=0.55),
    ),
    "warehouse": (
        ((15.0, 28.0), (2, 3), (4.2, 4.8), (4.5, 5.0), BRICK, BRICKS_PALE),
        ((3.5, 4.5), (2.0, 2.6), (0.45, 0.55), 0.2, (1, 1)),
        dict(bands=0.3, lit_p=0.15),
    ),
    "stone_civic": (
        ((20.0, 34.0), (3, 5), (4.2, 4.8), (5.0, 5.5), STONE, STONES),
        ((3.0, 3.6), (1.3, 1.6), (0.55, 0.65), 0.0, (1, 1)),
        dict(bands=0.6, lit_p=0.3),
    ),
    "parking_garage": (
        ((22.0, 36.0), (4, 6), (3.0, 3.2), (3.5, 3.8), PANEL, CONCRETE),
        ((6.0, 8.0), (5.6, 7.6), (0.38, 0.45), 0.0, (1, 1)),
        dict(glass=((0.10, 0.10, 0.11),), lit_p=0.6),
    ),
}
TEMPLATES: dict[str, FacadeTemplate] = {
    name: FacadeTemplate(name, *body, *windows, **(extras[0] if extras else {}))
    for name, (body, windows, *extras) in _TEMPLATE_ROWS.items()
}

# Template weights by district; downtown blocks get the tall ones.
DISTRICT_WEIGHTS: dict[str, dict[str, float]] = {
    "residential": dict(rowhouse_brick=4, rowhouse_painted=3, townhouse_siding=3, shop_brick=1.2, apartment_modern=1),
    "commercial": dict(
        shop_brick=4, shop_stucco=3, apartment_modern=1.5, office_concrete=1.5, warehouse=1, stone_civic=0.6,
        parking_garage=0.5, rowhouse_brick=1,
    ),
    "downtown": dict(
        office_glass=3, office_concrete=3, stone_civic=1.5, shop_stucco=1.5, parking_garage=0.8, apartment_modern=1.5
    ),
}  # fmt: skip


def _pick(rng: np.random.Generator, options) -> np.ndarray:
    return np.asarray(options[rng.integers(len(options))], dtype=np.float32)


def _pick_accents(rng: np.random.Generator, p: np.ndarray) -> None:
    """Four distinct vivid accent colours (shop sign, mural, stained glass) into ``p``."""
    for k, index in enumerate(rng.choice(len(VIVID), size=4, replace=False)):
        p[P[f"acc{k}"] : P[f"acc{k}"] + 3] = VIVID[index]


def pick_template(rng: np.random.Generator, district: str) -> FacadeTemplate:
    weights = DISTRICT_WEIGHTS[district]
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return TEMPLATES[names[rng.choice(len(names), p=p / p.sum())]]


def sample_design(rng: np.random.Generator, template: FacadeTemplate, tall: float) -> np.ndarray:
    """One facade design: the parameter vector shared by a run of copies.

    ``tall`` in ``[0, 1]`` (downtown-ness) stretches the storey range upwards.
    """
    p = np.zeros(NUM_PARAMS, dtype=np.float32)
    lo, hi = template.storeys
    storeys = int(rng.integers(lo, hi + 1 + int(round(tall * (hi - lo)))))
    storey = rng.uniform(*template.storey_h)
    ground = rng.uniform(*template.ground_h)
    parapet = rng.uniform(0.4, 1.2)
    shop = float(rng.random() < template.shop)
    p[P["storey"]], p[P["ground"]], p[P["parapet"]] = storey, ground, parapet
    p[P["height"]] = ground + (storeys - 1) * storey + parapet
    p[P["material"]] = template.material
    bay = rng.uniform(*template.bay)
    p[P["bay"]] = bay
    p[P["win_w"]] = min(rng.uniform(*template.win_w), bay - 0.3)
    p[P["win_h"]] = storey * rng.uniform(*template.win_h)
    p[P["sill"]] = max(0.3, (storey - p[P["win_h"]]) * rng.uniform(0.45, 0.65))
    p[P["shop"]] = shop
    p[P["door_u"]] = rng.choice([0.2, 0.5, 0.8])
    p[P["bands"]] = float(rng.random() < template.bands)
    p[P["lit_p"]] = template.lit_p
    p[P["sign_period"]] = rng.uniform(0.35, 0.8)
    p[P["side_windows"]] = float(rng.random() < 0.5)
    p[P["tex_seed"]] = rng.integers(1 << 20)
    p[P["wall"] : P["wall"] + 3] = _pick(rng, template.walls)
    p[P["trim"] : P["trim"] + 3] = _pick(rng, TRIMS)
    p[P["glass"] : P["glass"] + 3] = _pick(rng, template.glass)
    p[P["door"] : P["door"] + 3] = _pick(rng, DOORS)
    _pick_accents(rng, p)
    p[P["roof"] : P["roof"] + 3] = _pick(rng, ROOFS)
    return p


def copy_design(rng: np.random.Generator, design: np.ndarray) -> np.ndarray:
    """A near-identical copy for the next house of a run: same look, own texture and shop sign."""
    p = design.copy()
    p[P["wall"] : P["wall"] + 3] *= rng.uniform(0.97, 1.03)
    p[P["tex_seed"]] = rng.integers(1 << 20)
    p[P["door_u"]] = rng.choice([0.2, 0.5, 0.8])
    if p[P["shop"]] > 0:
        _pick_accents(rng, p)
        p[P["sign_period"]] = rng.uniform(0.35, 0.8)
    return p


def sample_landmark(rng: np.random.Generator, kind: int) -> np.ndarray:
    """A unique building: a tall tower, a mural wall, a clock tower or a church."""
    template = {
        TOWER: TEMPLATES["office_glass"],
        MURAL: TEMPLATES["warehouse"],
        CLOCK: TEMPLATES["stone_civic"],
        CHURCH: TEMPLATES["stone_civic"],
    }[kind]
    p = sample_design(rng, template, tall=0.0)
    p[P["landmark"]] = kind
    p[P["shop"]] = 0.0
    if kind == TOWER:
        storeys = int(rng.integers(18, 30))
        p[P["height"]] = p[P["ground"]] + (storeys - 1) * p[P["storey"]] + 4.0
        p[P["roof_extra"]] = rng.choice([0.0, 12.0])
    elif kind == MURAL:
        p[P["height"]] = max(p[P["height"]], 11.0)
        p[P["wall"] : P["wall"] + 3] = _pick(rng, BRICKS)
    elif kind == CLOCK:
        p[P["height"]] = rng.uniform(30.0, 42.0)
        p[P["roof_extra"]] = rng.uniform(6.0, 10.0)
    elif kind == CHURCH:
        p[P["height"]] = rng.uniform(13.0, 16.0)
        p[P["roof_extra"]] = rng.uniform(7.0, 10.0)
        p[P["wall"] : P["wall"] + 3] = _pick(rng, BRICKS + STONES)
        p[P["win_h"]] = 4.0
        p[P["sill"]] = 1.0
        p[P["storey"]] = 6.0
        p[P["ground"]] = 0.0
    return p

"""Where the pictures are taken: the database traversal and the query traversals.

The database camera drives every street of a split's region in its right-hand
lane and stops every ``spacing_m`` metres to take ``headings`` pictures. Query
cameras stand anywhere along the same streets at other times: shifted across
the road, turned, raised or lowered, tilted, under their own condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprdistill.data.filenames import format_file_name
from vprdistill.data.synth.camera import View
from vprdistill.data.synth.config import SPLITS, SynthConfig
from vprdistill.data.synth.world import UTM_ZONE_LETTER, UTM_ZONE_NUMBER, World

KINDS: tuple[str, ...] = ("database", "queries")
LANE_OFFSET_M = 1.6
HOURS = {"day": "1300", "dusk": "1945", "night": "2330"}
MONTHS = {"summer": "07", "autumn": "10", "winter": "01"}


@dataclass(frozen=True)
class Shot:
    """Where and under what one picture is taken (local metres, degrees) and the seed of its own randomness."""

    x: float
    y: float
    heading_deg: float
    pitch_deg: float
    height: float
    tile: int
    condition: str
    seed: int

    @property
    def view(self) -> View:
        return View(self.x, self.y, self.heading_deg, self.pitch_deg, self.height)


@dataclass(frozen=True)
class ImageSpec(Shot):
    """Everything needed to render and name one image of a traversal."""

    split: str
    kind: str
    index: int
    traversal_seed: int

    def file_name(self, world: World, suffix: str = ".jpg") -> str:
        east, north = world.to_utm(self.x, self.y)
        time, _, season = self.condition.split("-")
        day = 1 + self.traversal_seed % 28
        return format_file_name(
            {
                "east": f"{float(east):.2f}",
                "north": f"{float(north):.2f}",
                "zone_number": UTM_ZONE_NUMBER,
                "zone_letter": UTM_ZONE_LETTER,
                "pano_id": f"synthcity-{self.split}-{'db' if self.kind == 'database' else 'q'}{self.index:06d}",
                "tile_num": self.tile,
                "heading": f"{self.heading_deg:.1f}",
                "pitch": f"{self.pitch_deg:.1f}",
                "roll": "0.0",
                "height": f"{self.height:.2f}",
                "timestamp": f"2024{MONTHS[season]}{day:02d}T{HOURS[time]}",
                "note": self.condition,
            },
            suffix,
        )

    def image_path(self, world: World) -> Path:
        """Relative to the dataset folder: ``images/<split>/<kind>/<file name>.jpg``."""
        return Path("images", self.split, self.kind, self.file_name(world, ".jpg"))

    def seg_path(self, world: World) -> Path:
        """Relative to the dataset folder: ``segmentation/<split>/<kind>/<file name>.png``."""
        return Path("segmentation", self.split, self.kind, self.file_name(world, ".png"))


def image_seed(seed: int, split: str, kind: str, index: int) -> int:
    """Seed of one image from (seed, split, kind, index): independent of worker count and order."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), KINDS.index(kind), index]).generate_state(1)[0])


def _streets(world: World, split: str) -> list[tuple[bool, float, float, float, float]]:
    """Sampled street stretches of a region: (runs north?, fixed coordinate, start, end, road half-width)."""
    region = world.regions[split]
    stretches = []
    for i in region.street_cols:
        stretches.append((True, float(world.streets_x[i]), region.y_min, region.y_max, float(world.half_x[i])))
    for j in region.street_rows:
        stretches.append((False, float(world.streets_y[j]), region.x_min, region.x_max, float(world.half_y[j])))
    return stretches


def query_lateral(rng: np.random.Generator, config: SynthConfig, half: float) -> float:
    """A query camera's offset across a street of half-width ``half``: anywhere on the carriageway, never
    inside the parking lane."""
    return float(np.clip(LANE_OFFSET_M + rng.uniform(-1, 1) * config.query_lateral_m, -(half - 2.6), half - 2.6))


def _place(north: bool, centre: float, along: float, lateral: float) -> tuple[float, float]:
    # Right-hand traffic: northbound on the east side (+x), eastbound on the south side (−y).
    return (centre + lateral, along) if north else (along, centre - lateral)


def plan_database(world: World, config: SynthConfig, split: str) -> list[ImageSpec]:
    specs: list[ImageSpec] = []
    traversal = image_seed(config.seed, split, "database", 2**31 - 1)
    condition = config.database_condition
    for north, centre, start, end, _ in _streets(world, split):
        street_heading = 0.0 if north else 90.0
        for along in np.arange(start, end + 1e-6, config.spacing_m):
            x, y = _place(north, centre, float(along), LANE_OFFSET_M)
            for k in range(config.headings):
                index = len(specs)
                heading = (street_heading + 360.0 * k / config.headings) % 360.0
                seed = image_seed(config.seed, split, "database", index)
                shot = (x, y, heading, 0.0, config.camera_height_m, k, condition, seed)
                specs.append(ImageSpec(*shot, split=split, kind="database", index=index, traversal_seed=traversal))
    return specs


def plan_queries(world: World, config: SynthConfig, split: str) -> list[ImageSpec]:
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 77])
    stretches = _streets(world, split)
    lengths = np.array([end - start for _, _, start, end, _ in stretches])
    specs: list[ImageSpec] = []
    for index in range(config.queries(split)):
        north, centre, start, end, half = stretches[rng.choice(len(stretches), p=lengths / lengths.sum())]
        along = rng.uniform(start, end)
        lateral = query_lateral(rng, config, half)
        x, y = _place(north, centre, along, lateral)
        tile = int(rng.integers(config.headings))
        jitter = rng.uniform(-1, 1) * config.query_heading_jitter_deg
        heading = ((0.0 if north else 90.0) + 360.0 * tile / config.headings + jitter) % 360.0
        height = config.camera_height_m + rng.uniform(-1, 1) * config.query_height_jitter_m
        pitch = rng.uniform(-1, 1) * config.query_pitch_jitter_deg
        condition = config.query_conditions[index % len(config.query_conditions)]
        seed = image_seed(config.seed, split, "queries", index)
        shot = (x, y, float(heading), float(pitch), float(height), tile, condition, seed)
        specs.append(ImageSpec(*shot, split=split, kind="queries", index=index, traversal_seed=seed))
    return specs


def plan_dataset(world: World, config: SynthConfig) -> dict[str, dict[str, list[ImageSpec]]]:
    """Every image of the dataset: ``plan[split][kind]`` is a list of specs."""
    return {
        split: {"database": plan_database(world, config, split), "queries": plan_queries(world, config, split)}
        for split in SPLITS
    }

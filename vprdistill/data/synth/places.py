"""Places seen several times: the place-batched training set, in the GSV-Cities layout.

Place-batched training (P places × K views, multi-similarity loss, as on
GSV-Cities) needs groups of pictures of one spot taken at different times. Each
place is a spot on a street of the TRAIN region only (val and test regions
never appear): a position along the street and a heading. Each of its K views
stands within a few metres of it, across the carriageway as the queries do,
turned, raised and tilted by the query jitters. The first view is taken under
the first place condition (by default the database condition), the others
under distinct conditions drawn from the rest.

Files follow GSV-Cities (``dataloaders/train/GSVCitiesDataset.py``):
``Images/<city>/<city>_<place_id % 10**5 :07d>_<year>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg``
with ``lat``/``lon`` printed as ``str`` of the float in the csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import utm

from vprdistill.data.filenames import gsv_stem
from vprdistill.data.place_images import REQUIRED_COLUMNS
from vprdistill.data.synth.config import SynthConfig
from vprdistill.data.synth.traversal import MONTHS, Shot, _place, _streets, query_lateral
from vprdistill.data.synth.world import UTM_ZONE_LETTER, UTM_ZONE_NUMBER, World

CITY = "synthcity"
PLACES_ROOT = "places"
YEAR = 2024
# The GSV-Cities columns, then SynthCity's own: the condition and the UTM position.
CSV_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "note", "east", "north")
ALONG_JITTER_M = 2.0
# Places stand on distinct slots this far apart along a street (per heading): two places closer than
# that with the same heading would show nearly the same picture, and place-batched losses treat
# every other place as a negative.
PLACE_SPACING_M = 12.0
# Seed-sequence tag of the place views, apart from every (split, kind) of traversal.image_seed.
_PLACES_TAG = int.from_bytes(b"places", "big")


@dataclass(frozen=True)
class PlaceViewSpec(Shot):
    """Everything needed to render, name and list one view of one place."""

    place: int
    view_index: int

    @property
    def traversal_seed(self) -> int:
        # Every view is its own visit: its own traffic, pedestrians and clouds.
        return self.seed

    def row(self, world: World) -> dict[str, str]:
        """The csv row of this view (all values as the text written)."""
        east, north = world.to_utm(self.x, self.y)
        lat, lon = utm.to_latlon(float(east), float(north), UTM_ZONE_NUMBER, UTM_ZONE_LETTER)
        season = self.condition.split("-")[2]
        return {
            "place_id": str(self.place),
            "year": str(YEAR),
            "month": str(int(MONTHS[season])),
            "northdeg": str(round(self.heading_deg) % 360),
            "city_id": CITY,
            # repr of a rounded float reads back (float -> str) to the same text, as the file name needs.
            "lat": repr(round(float(lat), 7)),
            "lon": repr(round(float(lon), 7)),
            "panoid": f"synthcity-p{self.place:06d}v{self.view_index}",
            "note": self.condition,
            "east": f"{float(east):.2f}",
            "north": f"{float(north):.2f}",
        }

    def stem(self, world: World) -> str:
        return gsv_stem(self.row(world))

    def image_path(self, world: World) -> Path:
        """Relative to the dataset folder: ``places/Images/synthcity/<stem>.jpg``."""
        return Path(PLACES_ROOT, "Images", CITY, self.stem(world) + ".jpg")

    def seg_path(self, world: World) -> Path:
        """Relative to the dataset folder: ``places/Segmentation/synthcity/<stem>.png``."""
        return Path(PLACES_ROOT, "Segmentation", CITY, self.stem(world) + ".png")


def place_seed(seed: int, place: int, view: int) -> int:
    """Seed of one place view from (seed, 'places', place, view): independent of worker count and order."""
    return int(np.random.SeedSequence([seed, _PLACES_TAG, place, view]).generate_state(1)[0])


def plan_places(world: World, config: SynthConfig) -> list[PlaceViewSpec]:
    """``config.train_places`` places × ``config.views_per_place`` views in the train region, place-major.

    Places occupy distinct slots (a street stretch, a point every ``PLACE_SPACING_M``
    metres along it, a heading tile) in a seeded order, and each place draws its
    views from its own generator, so place ``p`` is the same whatever the number of
    places.

    Raises:
        ValueError: ``train_places`` exceeds the slots of the train region (name the capacity).
    """
    if config.train_places == 0:
        return []
    stretches = _streets(world, "train")
    slots = place_slots(stretches, config.headings)
    if config.train_places > len(slots):
        raise ValueError(
            f"train_places: the train region has room for {len(slots)} distinct places "
            f"({PLACE_SPACING_M:g} m apart per heading), got {config.train_places}; "
            "ask for fewer or enlarge the region (train_blocks, north_blocks)"
        )
    order = np.random.default_rng([config.seed, _PLACES_TAG]).permutation(len(slots))
    conditions = config.place_condition_list()
    specs: list[PlaceViewSpec] = []
    for place in range(config.train_places):
        rng = np.random.default_rng([config.seed, _PLACES_TAG, place])
        stretch, along, tile = slots[int(order[place])]
        north, centre, start, end, half = stretches[stretch]
        others = rng.choice(np.arange(1, len(conditions)), size=config.views_per_place - 1, replace=False)
        view_conditions = [conditions[0]] + [conditions[int(i)] for i in others]
        street_heading = 0.0 if north else 90.0
        for view in range(config.views_per_place):
            # Clipped to the stretch so that no view steps out of the train region.
            view_along = float(np.clip(along + rng.uniform(-1, 1) * ALONG_JITTER_M, start, end))
            lateral = query_lateral(rng, config, half)
            x, y = _place(north, centre, view_along, lateral)
            jitter = rng.uniform(-1, 1) * config.query_heading_jitter_deg
            heading = (street_heading + 360.0 * tile / config.headings + jitter) % 360.0
            pitch = rng.uniform(-1, 1) * config.query_pitch_jitter_deg
            height = config.camera_height_m + rng.uniform(-1, 1) * config.query_height_jitter_m
            seed = place_seed(config.seed, place, view)
            shot = (float(x), float(y), float(heading), float(pitch), float(height), tile, view_conditions[view], seed)
            specs.append(PlaceViewSpec(*shot, place=place, view_index=view))
    return specs


def place_slots(
    stretches: list[tuple[bool, float, float, float, float]], headings: int
) -> list[tuple[int, float, int]]:
    """Every (stretch index, position along it, heading tile) a place may take, ``PLACE_SPACING_M`` apart."""
    slots = []
    for index, (_, _, start, end, _) in enumerate(stretches):
        count = int((end - start) // PLACE_SPACING_M)
        for k in range(count):
            along = start + PLACE_SPACING_M * (k + 0.5)
            slots += [(index, float(along), tile) for tile in range(headings)]
    return slots


def places_csv_text(world: World, specs: list[PlaceViewSpec]) -> str:
    """The ``Dataframes/synthcity.csv`` text: the GSV-Cities columns, ``note``, ``east``, ``north``."""
    lines = [",".join(CSV_COLUMNS)]
    for spec in specs:
        row = spec.row(world)
        lines.append(",".join(row[c] for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"

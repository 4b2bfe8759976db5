"""SynthCity parameters and their presets.

A preset is a named set of field values; ``SynthConfig.from_preset`` applies
overrides on top and validates everything, so a bad value fails before any
file is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vprdistill.data.synth.conditions import (
    DEFAULT_DATABASE_CONDITION,
    DEFAULT_QUERY_CONDITIONS,
    parse_condition,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
PLACE_FIELDS: tuple[str, ...] = ("train_places", "views_per_place", "place_conditions")

# Blocks are counted along east (per split) and north (shared by all splits);
# the number of database images follows from the street length, the spacing
# and the headings (see docs/SYNTHCITY.md for the resulting sizes).
_PRESET_FIELDS = (
    "train_blocks", "val_blocks", "test_blocks", "north_blocks", "spacing_m", "queries_train", "queries_val", "queries_test",
)  # fmt: skip
PRESETS: dict[str, dict] = {
    name: dict(zip(_PRESET_FIELDS, values))
    for name, values in {
        # blocks: train, val, test, north; spacing; queries: train, val, test
        "tiny": (1, 1, 1, 1, 12.0, 32, 32, 48),
        "small": (2, 1, 2, 2, 5.0, 320, 160, 480),
        "medium": (5, 3, 4, 4, 5.0, 2000, 1000, 2000),
        "large": (9, 9, 9, 8, 5.0, 7400, 7600, 6800),
    }.items()
}
PRESETS["tiny"]["block_size_m"] = (45.0, 60.0)


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of a SynthCity dataset; the manifest stores all of them."""

    preset: str = "small"
    seed: int = 0
    image_size: int = 128
    fov_deg: float = 80.0
    # City layout
    train_blocks: int = 2
    val_blocks: int = 1
    test_blocks: int = 2
    north_blocks: int = 2
    gap_blocks: int = 1
    block_size_m: tuple[float, float] = (55.0, 90.0)
    landmark_rate: float = 0.2
    park_rate: float = 0.08
    # Database traversal
    spacing_m: float = 5.0
    headings: int = 4
    camera_height_m: float = 2.5
    database_condition: str = DEFAULT_DATABASE_CONDITION
    # Query traversals
    queries_train: int = 320
    queries_val: int = 160
    queries_test: int = 480
    query_conditions: tuple[str, ...] = DEFAULT_QUERY_CONDITIONS
    query_lateral_m: float = 3.0
    query_heading_jitter_deg: float = 15.0
    query_height_jitter_m: float = 0.5
    query_pitch_jitter_deg: float = 5.0
    # Place-batched training set (GSV-Cities layout, train region only; 0 = none)
    train_places: int = 0
    views_per_place: int = 4
    place_conditions: tuple[str, ...] = ()  # empty: the database condition, then the query conditions
    # Output
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        _validate(self)
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "block_size_m", tuple(float(v) for v in self.block_size_m))
        set_field(self, "query_conditions", tuple(parse_condition(c, "conditions").note for c in self.query_conditions))
        set_field(self, "database_condition", parse_condition(self.database_condition, "database_condition").note)
        set_field(
            self, "place_conditions", tuple(parse_condition(c, "place_conditions").note for c in self.place_conditions)
        )
        _validate_places(self)

    @classmethod
    def from_preset(cls, preset: str = "small", **overrides) -> SynthConfig:
        """The preset's values with ``overrides`` on top; unknown names raise ``ValueError``."""
        if preset not in PRESETS:
            raise ValueError(f"preset: unknown preset {preset!r}; valid presets are {', '.join(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)} - {"preset"}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(
                f"unknown SynthCity parameter(s) {', '.join(unknown)}; valid ones are {', '.join(sorted(names))}"
            )
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        for name in ("query_conditions", "place_conditions"):
            if isinstance(values.get(name), str):
                values[name] = (values[name],)
            if name in values:
                values[name] = tuple(values[name])
        return cls(preset=preset, **values)

    def queries(self, split: str) -> int:
        return int(getattr(self, f"queries_{split}"))

    def blocks(self, split: str) -> int:
        return int(getattr(self, f"{split}_blocks"))

    def place_condition_list(self) -> tuple[str, ...]:
        """The conditions of the place views, duplicates removed: the first is every place's first view's.

        Empty ``place_conditions`` means the database condition, then the query conditions.
        """
        listed = self.place_conditions or (self.database_condition, *self.query_conditions)
        return tuple(dict.fromkeys(listed))

    def to_json(self) -> dict:
        """All parameters as JSON-ready values (tuples become lists).

        The place fields are left out while ``train_places`` is 0, so datasets
        written before they existed keep their manifest (and are reused).
        """
        data = dataclasses.asdict(self)
        if self.train_places == 0:
            for name in PLACE_FIELDS:
                data.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _validate(config: SynthConfig) -> None:
    if config.preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {config.preset!r}; valid presets are {', '.join(PRESETS)}")
    if not isinstance(config.image_size, int) or isinstance(config.image_size, bool):
        raise ValueError(f"image_size: must be an integer, got {config.image_size!r}")
    checks = [
        ("image_size", config.image_size >= 16, "must be an integer >= 16"),
        ("fov_deg", 20.0 <= config.fov_deg <= 140.0, "must be in [20, 140] degrees"),
        ("north_blocks", config.north_blocks >= 1, "must be >= 1"),
        ("gap_blocks", config.gap_blocks >= 1, "must be >= 1 (splits must not touch)"),
        ("spacing_m", config.spacing_m > 0, "must be > 0"),
        ("headings", config.headings >= 1, "must be >= 1"),
        ("camera_height_m", 0.5 <= config.camera_height_m <= 10.0, "must be in [0.5, 10] metres"),
        ("query_lateral_m", config.query_lateral_m >= 0, "must be >= 0"),
        ("query_heading_jitter_deg", config.query_heading_jitter_deg >= 0, "must be >= 0"),
        (
            "query_height_jitter_m",
            0 <= config.query_height_jitter_m < config.camera_height_m - 0.3,
            "must be >= 0 and keep the camera above 0.3 m",
        ),
        ("query_pitch_jitter_deg", 0 <= config.query_pitch_jitter_deg <= 30, "must be in [0, 30] degrees"),
        ("landmark_rate", 0.0 <= config.landmark_rate <= 1.0, "must be in [0, 1]"),
        ("park_rate", 0.0 <= config.park_rate <= 0.5, "must be in [0, 0.5]"),
        ("jpeg_quality", 1 <= config.jpeg_quality <= 100, "must be in [1, 100]"),
        ("conditions", len(config.query_conditions) >= 1, "must name at least one condition"),
    ]
    for split in SPLITS:
        checks.append(
            (f"{split}_blocks", config.blocks(split) >= 1, "must be >= 1 (a split with no blocks has no images)")
        )
        checks.append((f"queries_{split}", config.queries(split) >= 1, "must be >= 1 (every split needs queries)"))
    low_high = tuple(config.block_size_m)
    checks.append(
        (
            "block_size_m",
            len(low_high) == 2 and 30.0 <= low_high[0] <= low_high[1],
            "must be (min, max) with 30 <= min <= max metres",
        )
    )
    for name, ok, message in checks:
        if not ok:
            raise ValueError(
                f"{name}: {message}, got {getattr(config, name, None) if name != 'conditions' else list(config.query_conditions)!r}"
            )


def _validate_places(config: SynthConfig) -> None:
    for name in ("train_places", "views_per_place"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            # ValueError like every other bad parameter: the CLI reports those as usage errors.
            raise ValueError(f"{name}: must be an integer, got {value!r}")  # noqa: TRY004
    if config.train_places < 0:
        raise ValueError(f"train_places: must be >= 0 (0 writes no place set), got {config.train_places!r}")
    if config.views_per_place < 2:
        raise ValueError(
            f"views_per_place: must be >= 2 (a place needs a positive pair), got {config.views_per_place!r}"
        )
    # Only checked when places are written: a short query mix must not break datasets without places.
    conditions = config.place_condition_list()
    if config.train_places > 0 and config.views_per_place > len(conditions):
        raise ValueError(
            f"views_per_place: must be <= the number of distinct place conditions ({len(conditions)}: "
            f"{', '.join(conditions)}), got {config.views_per_place!r}"
        )

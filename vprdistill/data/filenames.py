"""The file names of place images: written by SynthCity, read back by the readers.

The community's ``@``-separated names (METHODS.md §2)::

    @east@north@zone_number@zone_letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg

:func:`format_file_name` writes them; :func:`parse_place_filename` parses them
into typed fields (folder and two-folder readers), :func:`parse_file_name` into
the fields as written. Trailing fields may be left out or empty; only ``east``
and ``north`` are required.

GSV-Cities names (``dataloaders/train/GSVCitiesDataset.py``; :func:`gsv_stem`)::

    <city_id>_<place_id % 10**5 :07d>_<year :04d>_<month :02d>_<northdeg :03d>_<lat>_<lon>_<panoid>.jpg
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprdistill.data.place_dataset import DatasetFormatError

__all__ = ["FIELDS", "PlaceFilename", "format_file_name", "gsv_stem", "parse_file_name", "parse_place_filename"]

# The field names as written in SynthCity's manifest (``file_name_fields``).
FIELDS: tuple[str, ...] = (
    "east", "north", "zone_number", "zone_letter", "lat", "lon", "pano_id",
    "tile_num", "heading", "pitch", "roll", "height", "timestamp", "note",
)  # fmt: skip


@dataclass(frozen=True)
class PlaceFilename:
    """The fields of a place-image file name; only ``east`` and ``north`` are always present."""

    east: float
    north: float
    zone_number: int | None = None
    zone_letter: str = ""
    latitude: float | None = None
    longitude: float | None = None
    pano_id: str = ""
    tile_num: str = ""
    heading: float | None = None
    pitch: float | None = None
    roll: float | None = None
    height: float | None = None
    timestamp: str = ""
    note: str = ""

    @property
    def zone(self) -> str:
        """The UTM zone as written on maps, e.g. ``17T`` (empty when unknown)."""
        return f"{'' if self.zone_number is None else self.zone_number}{self.zone_letter}"


# PlaceFilename's names for FIELDS, in the same order.
_TYPED_NAMES = tuple(f.name for f in dataclasses.fields(PlaceFilename))
_NUMBER_FIELDS = {"east", "north", "zone_number", "latitude", "longitude", "heading", "pitch", "roll", "height"}


def format_file_name(fields: dict[str, object], suffix: str = ".jpg") -> str:
    """Join ``fields`` (names of ``FIELDS``; missing ones empty) into a file name; no field may hold ``@`` or ``/``."""
    values = []
    for name in FIELDS:
        value = "" if fields.get(name) is None else str(fields[name])
        if "@" in value or "/" in value:
            raise ValueError(f"file name field {name!r} must not contain '@' or '/': {value!r}")
        values.append(value)
    return "@" + "@".join(values) + "@" + suffix


def parse_file_name(name: str | Path) -> dict[str, str]:
    """The fields of a file name as written: every name of ``FIELDS``, ``""`` where not set.

    Raises ``DatasetFormatError`` (a ``ValueError``) naming the file when it is not such a name.
    """
    parts = Path(name).name.split("@")
    if len(parts) < 4 or parts[0] != "" or (parts[-1] and not parts[-1].startswith(".")):
        raise DatasetFormatError(
            f"{name}: not a folder-format image name; expected '@east@north@...@note@.jpg' "
            "(UTM metres first, fields separated by '@', the extension after the last '@')"
        )
    texts = parts[1:-1]
    if len(texts) > len(FIELDS):
        raise DatasetFormatError(f"{name}: {len(texts)} '@'-separated fields, at most {len(FIELDS)} expected")
    return dict(zip(FIELDS, texts + [""] * (len(FIELDS) - len(texts))))


def parse_place_filename(name: str | Path) -> PlaceFilename:
    """Parse ``@east@north@...@note@.jpg`` into typed fields (trailing fields may be left out or empty).

    Raises ``DatasetFormatError`` naming the file and the field on a malformed name.
    """
    values: dict[str, object] = {}
    for field_name, text in zip(_TYPED_NAMES, parse_file_name(name).values()):
        text = text.strip()
        if field_name not in _NUMBER_FIELDS:
            values[field_name] = text
            continue
        number = _parse_number(text, field_name, name)
        if field_name in ("east", "north") and (number is None or not np.isfinite(number)):
            raise DatasetFormatError(f"{name}: field {field_name} must be a finite number of metres, got {text!r}")
        if field_name == "zone_number" and number is not None and not number.is_integer():
            raise DatasetFormatError(f"{name}: field zone_number must be an integer, got {text!r}")
        values[field_name] = int(number) if field_name == "zone_number" and number is not None else number
    return PlaceFilename(**values)  # type: ignore[arg-type]


def _parse_number(text: str, field_name: str, name: str | Path) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{name}: field {field_name} is not a number: {text!r}") from None


def gsv_stem(row: Mapping[str, str], lat: str | None = None, lon: str | None = None) -> str:
    """The GSV-Cities image name without ``.jpg`` of a csv row (its values the csv's text).

    ``lat`` and ``lon`` are printed as ``str`` of the float read from the csv
    (pandas' reading, which the GSV-Cities loader uses), unless given as text.
    """
    head = (
        f"{row['city_id']}_{int(row['place_id']) % 10**5:07d}_{int(row['year']):04d}_{int(row['month']):02d}_"
        f"{int(row['northdeg']):03d}"
    )
    lat = str(float(row["lat"])) if lat is None else lat
    lon = str(float(row["lon"])) if lon is None else lon
    return f"{head}_{lat}_{lon}_{row['panoid']}"

"""Image positions from a CSV file, and UTM zones.

A positions file is a CSV with a header row; the header names decide what
the columns hold (case and surrounding spaces do not matter, any order):

- ``path`` (or ``file``, ``filename``, ``image``): the image, relative to the
  folder it is in, or to the common parent of the database and query folders
  (``database/0001.jpg``), or absolute;
- either ``lat`` and ``lon`` (or ``latitude``, ``longitude``, ``lng``): WGS84
  degrees, converted to UTM with the ``utm`` package, each position in its own
  zone unless a zone is given;
- or ``east`` and ``north`` (or ``easting``, ``northing``): UTM metres;
- optionally ``zone`` (or ``utm_zone``): the UTM zone, e.g. ``17T``, ``17 T`` or
  ``17``; with east/north the zone the metres are in, with lat/lon the zone to
  convert into;
- optionally ``note`` (or ``condition``): the condition of the image (``night``,
  ...), for Recall@N per condition.

A row whose coordinates are both empty gives an image without a known
position. Positions in different UTM zones cannot be compared in metres, so
:func:`check_one_zone` refuses them, naming files of each zone. Band letters do
not change the projection (northing runs on across the bands of a hemisphere),
so ``17S`` and ``17T`` are one zone; ``17T`` and ``18T``, or ``17T`` and ``17M``
(the other hemisphere), are not.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.utils.logging import get_logger

__all__ = [
    "AssignedPositions",
    "PositionsFile",
    "UtmZone",
    "assign_positions",
    "check_one_zone",
    "latlon_to_utm",
    "parse_zone",
    "utm_to_latlon",
    "read_positions_file",
]

log = get_logger("data.positions")

_ALIASES = {
    "path": ("path", "file", "filename", "file_name", "image"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "east": ("east", "easting", "utm_east"),
    "north": ("north", "northing", "utm_north"),
    "zone": ("zone", "utm_zone"),
    "note": ("note", "condition"),
}
_ZONE_TEXT = re.compile(r"^\s*(\d{1,2})\s*([A-Za-z]?)\s*$")
_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
SHOWN = 5  # files or rows named in an error, per group


@dataclass(frozen=True)
class UtmZone:
    """A UTM zone: number 1-60 and latitude band letter (``""`` when not known)."""

    number: int
    letter: str = ""

    @property
    def northern(self) -> bool | None:
        """The hemisphere (bands N-X are northern), ``None`` without a letter."""
        return None if not self.letter else self.letter >= "N"

    def __str__(self) -> str:
        return f"{self.number}{self.letter}"

    def same_projection(self, other: UtmZone) -> bool:
        """One zone number and hemisphere (a missing letter agrees with either)."""
        if self.number != other.number:
            return False
        return self.northern is None or other.northern is None or self.northern == other.northern


def parse_zone(text: str | int, where: str = "zone") -> UtmZone:
    """``17T``, ``17 t``, ``17`` or ``17`` as an int → :class:`UtmZone`; ``DatasetFormatError`` naming ``where``."""
    match = _ZONE_TEXT.match(str(text))
    letter = match.group(2).upper() if match else ""
    if not match or not 1 <= int(match.group(1)) <= 60 or (letter and letter not in _BAND_LETTERS):
        raise DatasetFormatError(
            f"{where}: not a UTM zone: {text!r} (expected a number 1-60 and optionally a band letter "
            "C-X without I and O, e.g. 17T)"
        )
    return UtmZone(int(match.group(1)), letter)


def latlon_to_utm(
    latitude: np.ndarray, longitude: np.ndarray, zone: UtmZone | Sequence[UtmZone | None] | None = None
) -> tuple[np.ndarray, list[UtmZone]]:
    """WGS84 degrees to UTM metres with the ``utm`` package.

    ``latitude`` and ``longitude`` are ``(N,)``; returns ``(N, 2)`` float64
    (east, north) and the zone of each position. Each position is converted in
    its own zone (the Norway and Svalbard exceptions included), or in ``zone``
    (one for all, or one per position, ``None`` for its own) when given; a
    zone's letter only chooses the hemisphere. Raises ``ValueError`` for
    positions outside UTM's -80..84 degrees of latitude.
    """
    import utm

    latitude = np.asarray(latitude, dtype=np.float64).reshape(-1)
    longitude = np.asarray(longitude, dtype=np.float64).reshape(-1)
    if latitude.shape != longitude.shape:
        raise ValueError(f"latitude {latitude.shape} and longitude {longitude.shape} differ in length")
    forced = [zone] * len(latitude) if zone is None or isinstance(zone, UtmZone) else list(zone)
    zones = []
    for lat, lon, force in zip(latitude.tolist(), longitude.tolist(), forced):
        natural = UtmZone(utm.latlon_to_zone_number(lat, lon), utm.latitude_to_zone_letter(lat) or "")
        # A given letter sets the hemisphere; without one the position's own hemisphere is kept.
        zones.append(natural if force is None else UtmZone(force.number, force.letter or natural.letter))
    utm_positions = np.empty((len(latitude), 2), dtype=np.float64)
    groups: dict[tuple[int, bool], list[int]] = {}
    for row, z in enumerate(zones):
        groups.setdefault((z.number, bool(z.northern)), []).append(row)
    for (number, northern), rows in groups.items():
        east, north, _, _ = utm.from_latlon(
            latitude[rows], longitude[rows], force_zone_number=number, force_northern=northern
        )
        utm_positions[rows] = np.stack([east, north], axis=1)
    return utm_positions, zones


def utm_to_latlon(positions: np.ndarray, zone: UtmZone | str) -> np.ndarray:
    """UTM metres `(N, 2)` (east, north) in ``zone`` to WGS84 degrees `(N, 2)` (latitude, longitude).

    NaN rows (unknown positions) stay NaN. The zone needs its band letter (or
    the hemisphere is unknown): ``17T`` converts, ``17`` is a ``ValueError``.
    """
    import utm

    zone = parse_zone(zone) if isinstance(zone, str) else zone
    if zone.northern is None:
        raise ValueError(f"UTM zone {zone} has no band letter, so its hemisphere is unknown: give it as e.g. {zone}T")
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    degrees = np.full_like(positions, np.nan)
    known = np.isfinite(positions).all(axis=1)
    if known.any():
        latitude, longitude = utm.to_latlon(
            positions[known, 0], positions[known, 1], zone.number, northern=zone.northern, strict=False
        )
        degrees[known, 0], degrees[known, 1] = latitude, longitude
    return degrees


@dataclass
class PositionsFile:
    """The rows of a positions file, converted to UTM.

    ``paths``, ``lines`` (1-based line numbers of the CSV), ``zones`` and
    ``notes`` run parallel to the rows of ``utm`` ``(K, 2)`` float64 (east,
    north; NaN rows where both coordinates were left empty).
    """

    path: Path
    kind: Literal["latlon", "utm"]
    paths: list[str]
    lines: list[int]
    utm: np.ndarray
    zones: list[UtmZone | None]
    notes: list[str] | None

    def row_label(self, row: int) -> str:
        return f"{self.path.name}:{self.lines[row]} ({self.paths[row]})"


def _columns(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower().replace(" ", "_") for h in header]
    found: dict[str, int] = {}
    for key, aliases in _ALIASES.items():
        hits = [i for i, n in enumerate(names) if n in aliases]
        if len(hits) > 1:
            raise DatasetFormatError(
                f"{path}: several columns hold {key}: {', '.join(header[i] for i in hits)}; keep one"
            )
        if hits:
            found[key] = hits[0]
    has_latlon = "lat" in found or "lon" in found
    has_utm = "east" in found or "north" in found
    expected = "path,lat,lon or path,east,north (optional: zone, note)"
    if "path" not in found:
        raise DatasetFormatError(f"{path}: no path column in the header {header}; expected {expected}")
    if has_latlon and has_utm:
        raise DatasetFormatError(f"{path}: the header {header} has both lat/lon and east/north; keep one pair")
    for a, b in (("lat", "lon"), ("east", "north")):
        if (a in found) != (b in found):
            raise DatasetFormatError(f"{path}: the header {header} has {a if a in found else b} without its pair")
    if not has_latlon and not has_utm:
        raise DatasetFormatError(f"{path}: no coordinate columns in the header {header}; expected {expected}")
    return found


def parse_number(text: str, column: str, where: str) -> float:
    """``text`` as a finite float; ``DatasetFormatError`` naming ``where`` and ``column`` otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise DatasetFormatError(f"{where}: {column} is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise DatasetFormatError(f"{where}: {column} must be finite, got {text!r}")
    return value


def read_positions_file(path: str | Path, zone: UtmZone | str | None = None) -> PositionsFile:
    """Read a positions CSV (see the module docstring) and convert lat/lon to UTM.

    ``zone`` is the zone of the positions: lat/lon are converted into it (for a
    set across a zone border), and east/north rows that state another zone are
    an error. Raises ``DatasetFormatError`` naming the file, line and column of a
    malformed value, and ``FileNotFoundError`` when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"positions file {path} does not exist")
    forced = parse_zone(zone, "zone") if isinstance(zone, str) else zone
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a byte-order mark
        rows = list(csv.reader(handle))
    lines = [(number, row) for number, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not lines:
        raise DatasetFormatError(f"{path}: empty; expected a header row path,lat,lon or path,east,north")
    header_line, header = lines[0]
    columns = _columns(header, path)
    kind: Literal["latlon", "utm"] = "latlon" if "lat" in columns else "utm"
    first, second = ("lat", "lon") if kind == "latlon" else ("east", "north")
    paths, line_numbers, coordinates, zones, notes = [], [], [], [], []
    for number, row in lines[1:]:
        where = f"{path}:{number}"
        cells = {key: (row[index].strip() if index < len(row) else "") for key, index in columns.items()}
        if not cells["path"]:
            raise DatasetFormatError(f"{where}: the path is empty")
        if bool(cells[first]) != bool(cells[second]):
            raise DatasetFormatError(f"{where}: {first} and {second} must both be given or both left empty")
        if cells[first]:
            a, b = parse_number(cells[first], first, where), parse_number(cells[second], second, where)
            if kind == "latlon" and not (-80.0 <= a <= 84.0 and -180.0 <= b <= 180.0):
                raise DatasetFormatError(
                    f"{where}: lat {a}, lon {b} is outside UTM's range (latitude -80..84, longitude -180..180 degrees)"
                )
            coordinates.append((a, b))
        else:
            coordinates.append((np.nan, np.nan))
        row_zone = parse_zone(cells["zone"], f"{where}: zone") if cells.get("zone") else None
        if forced is not None and row_zone is not None and not row_zone.same_projection(forced):
            raise DatasetFormatError(f"{where}: zone {row_zone} differs from the zone {forced} asked for")
        zones.append(row_zone or forced)
        # Paths written on Windows use backslashes.
        paths.append(cells["path"].replace("\\", "/"))
        line_numbers.append(number)
        notes.append(cells.get("note", ""))
    if not paths:
        raise DatasetFormatError(f"{path}: a header (line {header_line}) but no rows")
    values = np.array(coordinates, dtype=np.float64).reshape(-1, 2)
    if kind == "latlon":
        utm_positions = np.full_like(values, np.nan)
        known = np.flatnonzero(np.isfinite(values).all(axis=1))
        if known.size:
            converted, converted_zones = latlon_to_utm(values[known, 0], values[known, 1], [zones[i] for i in known])
            utm_positions[known] = converted
            for i, z in zip(known.tolist(), converted_zones):
                zones[i] = z
    else:
        utm_positions = values
    return PositionsFile(
        path=path,
        kind=kind,
        paths=paths,
        lines=line_numbers,
        utm=utm_positions,
        zones=zones,
        notes=notes if "note" in columns else None,
    )


@dataclass
class AssignedPositions:
    """The positions of one folder's images: ``utm`` ``(n, 2)`` (NaN rows for images no row names),
    ``zones`` and ``notes`` per image, and ``rows`` (the file's row of each image, -1 for none)."""

    utm: np.ndarray
    zones: list[UtmZone | None]
    notes: list[str] | None
    rows: np.ndarray


def _key(path: Path | str) -> str:
    return os.path.normpath(os.path.abspath(path))


def assign_positions(
    table: PositionsFile, folders: dict[str, tuple[Path, Sequence[Path]]]
) -> tuple[dict[str, AssignedPositions], list[int]]:
    """Give each image of ``folders`` (label → (folder, image paths relative to it)) its row of ``table``.

    A row's path is tried relative to each folder, relative to the folders'
    common parent (a single folder's parent), and as written (absolute paths). Returns the positions per
    label and the rows that named no image (logged as a warning with their
    line numbers). Raises ``DatasetFormatError`` naming the rows when one row
    names images of two folders (``0001.jpg`` in both: write ``database/0001.jpg``)
    or two rows name one image.
    """
    images: dict[str, tuple[str, int]] = {}
    for label, (folder, relative) in folders.items():
        for index, r in enumerate(relative):
            images[_key(Path(folder) / r)] = (label, index)
    bases = [Path(folder) for folder, _ in folders.values()]
    # One folder: its parent, so that a file written for two folders (database/0001.jpg) serves it too.
    parent = Path(os.path.commonpath([_key(b) for b in bases])) if len(bases) > 1 else Path(_key(bases[0])).parent
    if parent not in bases:
        bases.append(parent)
    found = {label: np.full(len(relative), -1, dtype=np.int64) for label, (_, relative) in folders.items()}
    unmatched = []
    for row, text in enumerate(table.paths):
        candidates = [text] if os.path.isabs(text) else [base / text for base in bases]
        hits = sorted({images[k] for k in map(_key, candidates) if k in images})
        if not hits:
            unmatched.append(row)
            continue
        if len(hits) > 1:
            named = ", ".join(f"{label} {folders[label][1][index]}" for label, index in hits)
            raise DatasetFormatError(
                f"{table.row_label(row)} names several images ({named}); write the path relative to "
                f"{parent} to choose one, e.g. {Path(os.path.relpath(_key(folders[hits[0][0]][0]), parent)) / text}"
            )
        label, index = hits[0]
        if found[label][index] >= 0:
            raise DatasetFormatError(
                f"{table.path}: lines {table.lines[found[label][index]]} and {table.lines[row]} both give the "
                f"position of {label} image {folders[label][1][index]}"
            )
        found[label][index] = row
    if unmatched:
        shown = "; ".join(table.row_label(r) for r in unmatched[:SHOWN])
        log.warning(
            "%s: %d of %d rows name no image of %s: %s%s",
            table.path, len(unmatched), len(table.paths), ", ".join(str(f) for f, _ in folders.values()),
            shown, " ..." if len(unmatched) > SHOWN else "",
        )  # fmt: skip
    assigned = {}
    for label, rows in found.items():
        utm_positions = np.full((len(rows), 2), np.nan)
        has = rows >= 0
        utm_positions[has] = table.utm[rows[has]]
        assigned[label] = AssignedPositions(
            utm=utm_positions,
            zones=[table.zones[r] if r >= 0 else None for r in rows.tolist()],
            notes=None if table.notes is None else [table.notes[r] if r >= 0 else "" for r in rows.tolist()],
            rows=rows,
        )
    return assigned, unmatched


def check_one_zone(zones: Sequence[UtmZone | None], names: Sequence[str | Path], where: str) -> UtmZone | None:
    """The one UTM zone of ``zones`` (``None`` entries: not known), or ``DatasetFormatError`` naming files per zone.

    ``names`` runs parallel to ``zones``. The zone returned carries the most
    common band letter (bands of one zone and hemisphere share the projection).
    """
    # Group by zone number and hemisphere; a zone without a letter joins its number's group.
    groups: dict[tuple[int, bool | None], list[int]] = {}
    for index, zone in enumerate(zones):
        if zone is not None and zone.northern is not None:
            groups.setdefault((zone.number, zone.northern), []).append(index)
    for index, zone in enumerate(zones):
        if zone is not None and zone.northern is None:
            key = next((k for k in groups if k[0] == zone.number), (zone.number, None))
            groups.setdefault(key, []).append(index)
    groups = {key: sorted(members) for key, members in groups.items()}
    if not groups:
        return None
    if len(groups) > 1:
        parts = []
        for members in groups.values():
            letters = sorted({str(zones[i]) for i in members})
            files = ", ".join(str(names[i]) for i in members[:3])
            more = f" and {len(members) - 3} more" if len(members) > 3 else ""
            parts.append(f"zone {'/'.join(letters)}: {len(members)} images ({files}{more})")
        raise DatasetFormatError(
            f"{where}: positions lie in {len(groups)} UTM zones, whose metres cannot be compared: "
            f"{'; '.join(parts)}. Use images of one zone, or give lat/lon with one zone to convert "
            "them all into (--utm-zone, zone=)"
        )
    members = next(iter(groups.values()))
    letters = Counter(zones[i].letter for i in members if zones[i].letter)  # type: ignore[union-attr]
    number = zones[members[0]].number  # type: ignore[union-attr]
    return UtmZone(number, letters.most_common(1)[0][0] if letters else "")

"""Any two folders of images, a database and queries, as a `PlaceDataset`.

  read_two_folders("city/database", "city/queries")                      # @east@north@...@.jpg names
  read_two_folders("city/database", "city/queries", "city/positions.csv")  # path,lat,lon or path,east,north

Images are found in each folder and its subfolders (``.jpg``, ``.jpeg``,
``.png``; hidden files skipped), in sorted path order. Without a positions
file each position comes from the file name (``parse_place_filename``: UTM
east and north first, the zone and the condition note when the name has
them); with one, from its rows (``vprdistill.data.positions``: a row's path is
relative to the image's folder or to the two folders' common parent).

Every database image needs a position. A query without one is an error too,
unless ``require_query_positions=False``: the dataset then opens with NaN rows
in ``query_utm`` (it can be described, searched and indexed, but not scored:
its ``positives`` refuses, naming those queries). All positions must lie in one
UTM zone; the zone is kept as ``PlaceDataset.utm_zone``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vprdistill.data.ground_truth_lists import keep_readable_images
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.data.positions import (
    SHOWN,
    UtmZone,
    assign_positions,
    check_one_zone,
    parse_zone,
    read_positions_file,
)
from vprdistill.data.readers import IMAGE_SUFFIXES, DatasetSource, _notes_or_none, list_images, parse_place_filename
from vprdistill.utils.logging import get_logger

__all__ = ["FolderImages", "read_image_folder", "read_two_folders", "read_two_folders_with_source"]

log = get_logger("data.two_folders")


def read_two_folders(*args: Any, **kwargs: Any) -> PlaceDataset:
    """The `PlaceDataset` of :func:`read_two_folders_with_source` (same arguments), without its source."""
    return read_two_folders_with_source(*args, **kwargs)[0]


def read_two_folders_with_source(
    database_dir: str | Path,
    queries_dir: str | Path,
    positions: str | Path | None = None,
    *,
    require_query_positions: bool = True,
    skip_bad_images: bool = False,
    zone: str | UtmZone | None = None,
    name: str | None = None,
    split: str = "test",
) -> tuple[PlaceDataset, DatasetSource]:
    """Read a database folder and a queries folder (see the module docstring), and say where from.

    ``positions`` is a CSV file (``path,lat,lon`` or ``path,east,north``,
    optional ``zone`` and ``note`` columns); without it positions come from
    ``@east@north@...`` file names. ``zone`` (e.g. ``17T``) is the UTM zone of
    the positions: lat/lon are converted into it (a set across a zone border),
    and positions that state another zone are an error. ``name`` defaults to
    the folder holding both folders, ``split`` names the split in reports.
    ``skip_bad_images`` leaves out (with a warning) images that cannot be read.

    Returns a `PlaceDataset` whose ``database_utm`` ``(N, 2)`` and ``query_utm``
    ``(M, 2)`` are UTM metres (east, north) in the zone ``utm_zone``, and the
    `DatasetSource` (``format="folders"``) for logs and reports. Raises
    ``DatasetFormatError`` naming the files: an image without a position,
    positions in several zones, a positions row naming images of both folders.
    """
    folders = {"database": Path(database_dir).expanduser(), "queries": Path(queries_dir).expanduser()}
    found, utm_zone = _folder_positions(
        folders, positions, zone, {"database": True, "queries": require_query_positions}
    )
    parent = Path(os.path.commonpath([os.path.abspath(f) for f in folders.values()]))
    name = name or parent.name or "folders"
    (database_paths, database_utm, database_notes), (query_paths, query_utm, query_notes) = found.values()
    dataset = PlaceDataset(
        name=name,
        root=parent,
        split=split,
        database_paths=database_paths,
        query_paths=query_paths,
        database_utm=database_utm,
        query_utm=query_utm,
        database_notes=_notes_or_none(database_notes),
        query_notes=_notes_or_none(query_notes),
        utm_zone=utm_zone,
        allow_unknown_query_positions=not require_query_positions,
    )
    if skip_bad_images:
        dataset = keep_readable_images(dataset, skip_bad_images, f"{name}/{split}")
    source = DatasetSource(
        "folders", folders["database"], queries_path=folders["queries"],
        positions=None if positions is None else Path(positions),
    )  # fmt: skip
    log.info("opened %r (UTM zone %s) from %s", dataset, dataset.utm_zone or "not given", source)
    return dataset, source


@dataclass
class FolderImages:
    """The images of one folder with their positions: ``utm`` ``(N, 2)`` UTM metres (east, north; NaN
    rows for unknown positions), ``notes`` (empty strings for none) and the one ``utm_zone`` (or ``None``)."""

    paths: list[Path]
    utm: np.ndarray
    notes: list[str]
    utm_zone: str | None


def read_image_folder(
    folder: str | Path,
    positions: str | Path | None = None,
    *,
    require_positions: bool = True,
    zone: str | UtmZone | None = None,
) -> FolderImages:
    """The images of one folder (and its subfolders) with positions from their names or a positions file.

    The positions as for :func:`read_two_folders` (a file's paths relative to
    ``folder`` or to its parent). ``require_positions=False`` lets images
    without a position through as NaN rows (a map index stores them so).
    """
    found, utm_zone = _folder_positions(
        {"images": Path(folder).expanduser()}, positions, zone, {"images": require_positions}
    )
    paths, utm, notes = found["images"]
    return FolderImages(paths, utm, notes or [""] * len(paths), utm_zone)


def _folder_positions(
    folders: dict[str, Path], positions: str | Path | None, zone: str | UtmZone | None, required: dict[str, bool]
) -> tuple[dict[str, tuple[list[Path], np.ndarray, list[str] | None]], str | None]:
    """Per folder: its images, their positions and notes; and the one UTM zone of them all (``zone`` if given).

    Raises ``DatasetFormatError`` naming the images without a position in a
    folder whose ``required`` is true (warns about them in the others), or
    positions in several zones.
    """
    _check_folders(folders)
    forced = parse_zone(zone, "zone") if isinstance(zone, str) else zone
    relative = {}
    for label, folder in folders.items():
        relative[label] = list_images(folder)
        if not relative[label]:
            raise DatasetFormatError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the {label} folder {folder}")
    unmatched_hint = ""
    if positions is None:
        assigned = {label: _positions_from_names(folders[label], relative[label]) for label in folders}
    else:
        table = read_positions_file(positions, forced)
        found, unmatched = assign_positions(table, {label: (folders[label], relative[label]) for label in folders})
        assigned = {label: (found[label].utm, found[label].zones, found[label].notes) for label in folders}
        if unmatched:
            rows = "; ".join(table.row_label(r) for r in unmatched[:SHOWN])
            unmatched_hint = f" ({len(unmatched)} rows of {table.path} name no image, e.g. {rows})"
    source_of = f"the positions file {positions}" if positions is not None else "their @east@north@ file names"
    for label, (utm, _, _) in assigned.items():
        unknown = np.flatnonzero(np.isnan(utm).any(axis=1))
        if not unknown.size:
            continue
        names = ", ".join(str(relative[label][i]) for i in unknown[:SHOWN])
        more = f" and {unknown.size - SHOWN} more" if unknown.size > SHOWN else ""
        what = {"database": "database images", "queries": "query images"}.get(label, label)
        message = (
            f"{unknown.size} of {len(utm)} {what} in {folders[label]} have no position in "
            f"{source_of}: {names}{more}{unmatched_hint}"
        )
        if required[label]:
            raise DatasetFormatError(message)
        log.warning("%s; kept without a position (they cannot be scored)", message)
    paths = {label: [folders[label] / r for r in relative[label]] for label in folders}
    zones = [z for label in folders for z in assigned[label][1]] + ([forced] if forced else [])
    names = [p for label in folders for p in paths[label]] + ["the zone asked for"]
    utm_zone = check_one_zone(zones, names, " and ".join(str(f) for f in folders.values()))
    found = {label: (paths[label], assigned[label][0], assigned[label][2]) for label in folders}
    return found, None if utm_zone is None else str(utm_zone)


def _check_folders(folders: dict[str, Path]) -> None:
    for label, folder in folders.items():
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise FileNotFoundError(f"{label} folder {folder} {what}")
    if len(folders) < 2:
        return
    database, queries = (Path(os.path.abspath(f)) for f in folders.values())
    # Images are listed recursively, so a folder inside the other would give its images to both.
    if database == queries or database in queries.parents or queries in database.parents:
        raise DatasetFormatError(
            f"the database folder {folders['database']} and the queries folder {folders['queries']} "
            "overlap (the same folder, or one inside the other); give two separate folders"
        )


def _positions_from_names(
    folder: Path, relative: list[Path]
) -> tuple[np.ndarray, list[UtmZone | None], list[str] | None]:
    """``(n, 2)`` positions (NaN for names without '@' fields), zones and notes from ``@east@north@...`` names.

    A name that starts with '@' but does not parse is an error naming the file:
    it most likely holds a typo rather than no position.
    """
    utm = np.full((len(relative), 2), np.nan)
    zones: list[UtmZone | None] = [None] * len(relative)
    notes = [""] * len(relative)
    for row, r in enumerate(relative):
        if r.name.startswith("@"):
            parsed = parse_place_filename(folder / r)
            utm[row], notes[row] = (parsed.east, parsed.north), parsed.note
            if parsed.zone_number is not None:
                zones[row] = parse_zone(parsed.zone, f"{folder / r}: zone")
    return utm, zones, notes

"""Images grouped by place, in the GSV-Cities layout, for place-batched training.

Layout (as ``dataloaders/train/GSVCitiesDataset.py`` of GSV-Cities reads it)::

    ROOT/Dataframes/<city>.csv        place_id,year,month,northdeg,city_id,lat,lon,panoid[,note,...]
    ROOT/Images/<city_id>/<city_id>_<place_id % 10**5 :07d>_<year :04d>_<month :02d>_<northdeg :03d>_<lat>_<lon>_<panoid>.jpg
    ROOT/Segmentation/<city_id>/<image stem>.png      (optional class maps)

``lat`` and ``lon`` are printed as ``str`` of the float read from the csv
(pandas' reading, which the GSV-Cities loader uses); a file named with the
csv's text as written is accepted too. A place is ``(city, place_id)`` with
``city`` the csv's name. SynthCity writes this layout under ``OUT/places``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprdistill.data.filenames import gsv_stem
from vprdistill.utils.logging import get_logger

REQUIRED_COLUMNS: tuple[str, ...] = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
_SHOW_MISSING = 5

log = get_logger("data.place_images")


@dataclass
class PlaceImages:
    """N images of P places; ``labels[i]`` is the place of ``paths[i]``.

    ``labels`` is ``(N,)`` int64 with values ``0..P-1``, every value used;
    ``place_names[label]`` is ``"<city>/<place_id>"``; ``conditions`` is the
    per-image ``note`` column where the csvs have one; ``seg_paths`` the
    per-image class maps where every one exists.
    """

    root: Path
    paths: list[Path]
    labels: np.ndarray
    place_names: list[str]
    conditions: list[str] | None = None
    seg_paths: list[Path] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.paths)
        if self.labels.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},), got {self.labels.shape}")
        for name in ("conditions", "seg_paths"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: expected {n} entries, got {len(values)}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.place_names)):
            raise ValueError(f"labels: must lie in 0..{len(self.place_names) - 1}")

    @property
    def num_places(self) -> int:
        """P, the number of places (``labels`` lie in ``0..P-1``)."""
        return len(self.place_names)

    def members(self) -> list[np.ndarray]:
        """Per place label, the indices of its images (int64, ascending)."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(self.num_places + 1))
        return [order[bounds[p] : bounds[p + 1]] for p in range(self.num_places)]

    @property
    def num_images(self) -> int:
        """N, the number of images."""
        return len(self.paths)

    def subset_places(self, labels: Sequence[int] | np.ndarray) -> PlaceImages:
        """The images of the given places only, relabelled ``0..len(set(labels))-1`` in ascending old-label order.

        Image order is kept. A label outside ``0..num_places-1`` raises ``ValueError``.
        """
        keep_labels = np.unique(np.asarray(labels, dtype=np.int64))
        if keep_labels.size and (keep_labels[0] < 0 or keep_labels[-1] >= self.num_places):
            raise ValueError(f"labels: place labels must lie in 0..{self.num_places - 1}, got {keep_labels.tolist()}")
        new_label = np.full(self.num_places, -1, dtype=np.int64)
        new_label[keep_labels] = np.arange(keep_labels.size)
        index = np.flatnonzero(new_label[self.labels] >= 0)
        return PlaceImages(
            root=self.root,
            paths=[self.paths[i] for i in index],
            labels=new_label[self.labels[index]],
            place_names=[self.place_names[p] for p in keep_labels],
            conditions=None if self.conditions is None else [self.conditions[i] for i in index],
            seg_paths=None if self.seg_paths is None else [self.seg_paths[i] for i in index],
        )


def is_place_images_root(root: str | Path) -> bool:
    """Whether ``root`` looks like a GSV-Cities folder: ``Dataframes/*.csv`` and ``Images/``."""
    root = Path(root)
    frames = root / "Dataframes"
    return frames.is_dir() and any(frames.glob("*.csv")) and (root / "Images").is_dir()


def gsv_image_names(row: dict[str, str], csv_path: Path, line: int) -> list[str]:
    """Candidate file names (without folder) of one csv row: the GSV-Cities name, then with lat/lon as written."""
    # Checked first, so that a bad value is an error naming the file, line and column.
    for column in ("place_id", "year", "month", "northdeg", "lat", "lon"):
        parse = float if column in ("lat", "lon") else int
        try:
            parse(row[column])
        except (TypeError, ValueError):
            expected = "an integer" if parse is int else "a number"
            raise ValueError(
                f"{csv_path}: line {line}, column {column!r}: expected {expected}, got {row[column]!r}"
            ) from None
    names = [gsv_stem(row) + ".jpg"]
    as_written = gsv_stem(row, row["lat"].strip(), row["lon"].strip()) + ".jpg"
    if as_written != names[0]:
        names.append(as_written)
    return names


def _read_city(root: Path, csv_path: Path) -> tuple[list[int], list[Path], list[str] | None]:
    """Place ids, image paths and notes (None without a ``note`` column) of one city csv."""
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ValueError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}; "
                    f"a GSV-Cities dataframe has {', '.join(REQUIRED_COLUMNS)} (found {', '.join(columns)})"
                )
            reader.fieldnames = columns
            rows = list(reader)
    except OSError as error:
        raise FileNotFoundError(f"{csv_path}: cannot read: {error}") from error
    has_note = "note" in columns
    place_ids, paths, notes = [], [], []
    for line, row in enumerate(rows, start=2):
        if any(row.get(c) is None for c in REQUIRED_COLUMNS):
            raise ValueError(f"{csv_path}: line {line} has fewer fields than the header")
        folder = root / "Images" / row["city_id"]
        names = gsv_image_names(row, csv_path, line)
        path = next((folder / n for n in names if (folder / n).exists()), folder / names[0])
        place_ids.append(int(row["place_id"]))
        paths.append(path)
        notes.append((row.get("note") or "").strip())
    return place_ids, paths, notes if has_note else None


PLACE_MAPS_DIR = "Segmentation"
# Folders of a place set that hold something else: maps written there would mix with it.
_RESERVED_PLACE_DIRS = {"Dataframes", "Images"}


def check_place_maps_dir(maps_dir: str) -> str:
    """``maps_dir`` if it names one folder of a place set other than ``Dataframes`` and ``Images``."""
    if not maps_dir or "/" in maps_dir or "\\" in maps_dir or maps_dir in {".", "..", *_RESERVED_PLACE_DIRS}:
        raise ValueError(
            f"maps folder {maps_dir!r}: give one folder name of the place set, not "
            f"{', '.join(sorted(_RESERVED_PLACE_DIRS))} (e.g. Segmentation-predicted)"
        )
    return maps_dir


def open_place_images(
    root: str | Path, cities: Sequence[str] | None = None, min_views: int = 2, maps_dir: str = PLACE_MAPS_DIR
) -> PlaceImages:
    """Read a GSV-Cities folder: every city (``Dataframes/*.csv``, sorted) or the named ones.

    ``maps_dir``: the folder of the root holding the class maps,
    ``<maps_dir>/<city>/<image stem>.png`` (``Segmentation``, or e.g.
    ``Segmentation-predicted`` written by ``vprdistill segment``); a folder asked
    for by another name must exist. ``seg_paths`` is ``None`` unless every image has its map.

    Places with fewer than ``min_views`` images are dropped. Places are
    labelled in order of city (as listed), then place id; images keep the csv
    order. Raises ``FileNotFoundError`` for a missing ``Dataframes`` folder or
    listed images that are missing (the first few named), ``ValueError`` for an
    unknown city, a csv without a required column, or no place left.
    """
    root = Path(root)
    frames = root / "Dataframes"
    if not frames.is_dir():
        raise FileNotFoundError(
            f"{frames}: no Dataframes folder; a GSV-Cities root holds Dataframes/<city>.csv and Images/<city>/"
        )
    if not isinstance(min_views, int) or min_views < 1:
        raise ValueError(f"min_views: must be an integer >= 1, got {min_views!r}")
    available = sorted(p.stem for p in frames.glob("*.csv"))
    if cities is None:
        if not available:
            raise FileNotFoundError(f"{frames}: no <city>.csv in the Dataframes folder")
        cities = available
    else:
        cities = list(dict.fromkeys([cities] if isinstance(cities, str) else cities))
        unknown = [c for c in cities if c not in available]
        if unknown or not cities:
            raise ValueError(
                f"cities: unknown city {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"{frames} holds {', '.join(available) or 'no csv'}"
            )

    keys: list[tuple[int, int]] = []
    paths: list[Path] = []
    notes: list[str] | None = []
    for city_index, city in enumerate(cities):
        place_ids, city_paths, city_notes = _read_city(root, frames / f"{city}.csv")
        keys.extend((city_index, p) for p in place_ids)
        paths.extend(city_paths)
        notes = None if notes is None or city_notes is None else notes + city_notes

    unique, inverse, counts = np.unique(
        np.array(keys, dtype=np.int64).reshape(-1, 2), axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    kept = counts >= min_views
    dropped = int((~kept).sum())
    if dropped:
        log.info("%s: dropped %d of %d places with fewer than %d images", root, dropped, len(unique), min_views)
    if not kept.any():
        raise ValueError(
            f"{root}: no place has at least min_views={min_views} images "
            f"({len(unique)} places in {', '.join(f'{c}.csv' for c in cities)})"
        )
    new_label = np.cumsum(kept) - 1
    index = np.flatnonzero(kept[inverse])
    paths = [paths[i] for i in index]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:_SHOW_MISSING])
        raise FileNotFoundError(f"{root}: {len(missing)} listed image(s) missing, e.g. {shown}")
    maps_dir = check_place_maps_dir(maps_dir)
    if maps_dir != PLACE_MAPS_DIR and not (root / maps_dir).is_dir():
        raise FileNotFoundError(
            f"{root / maps_dir}: no such maps folder (write it with `vprdistill segment {root} --maps-dir {maps_dir}`)"
        )
    seg = [root / maps_dir / p.parent.name / (p.stem + ".png") for p in paths]
    return PlaceImages(
        root=root,
        paths=paths,
        labels=new_label[inverse[index]].astype(np.int64),
        place_names=[f"{cities[c]}/{p}" for (c, p), k in zip(unique.tolist(), kept) if k],
        conditions=None if notes is None else [notes[i] for i in index],
        seg_paths=seg if all(p.is_file() for p in seg) else None,
    )

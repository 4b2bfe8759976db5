"""Reader of Mapillary Street-level Sequences (MSLS) in its own layout, giving a `PlaceDataset`.

Layout (as released, see the ``mapillary/mapillary_sls`` README)::

    ROOT/train_val/<city>/{database,query}/
        images/<key>.jpg
        raw.csv            ,key,lon,lat,ca,captured_at,pano
        postprocessed.csv  ,key,easting,northing,unique_cluster,control_panel,night,view_direction
        subtask_index.csv  ,...,all,s2w,w2s,o2n,n2o,d2n,n2d (one True/False column per subtask)
        seq_info.csv       ,key,sequence_key,frame_number

The first, unnamed column is the row number; the rows of the CSV files of one
folder describe the same images in the same order (the MSLS toolkit and
``datasets_vg/format_mapillary.py`` join them by position; this reader also
checks that the keys agree). Positions are ``easting``/``northing`` (UTM metres)
of ``postprocessed.csv``; ``night`` gives each image the note ``day`` or ``night``.

Protocols (``protocol``):

- ``val740``: the MSLS toolkit's image-to-image evaluation
  (``mapillary_sls/datasets/msls.py`` with ``mode="val"``, ``subtask="all"``,
  ``evaluate.py --threshold 25``): images whose ``subtask_index.csv`` column
  ``all`` is True, panoramas (``raw.csv`` ``pano``) left out, and of the
  queries only those with a database image of their city within 25 m. On the
  val cities (cph, sf) this gives gsv-cities' 740 queries (747 before the
  last step, the size of its ``msls_val_qImages.npy``).
- ``full``: every image that is not a panorama, all queries kept (as
  ``datasets_vg/format_mapillary.py`` builds MSLS val).

Cities are separate places: by default (``separate_cities``) each image is
labelled with its city (``PlaceDataset.database_groups``/``query_groups``), so
that a query's positives and its search (``eval.evaluate``) stay in its city.
The published MSLS-val figures (gsv-cities, VPR-methods-evaluation) search all
cities' database images at once; ``separate_cities=False`` does the same.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vprdistill.data.ground_truth_lists import keep_readable_images
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.data.positions import parse_number
from vprdistill.utils.logging import get_logger

__all__ = [
    "MSLS_CITIES",
    "MSLS_PROTOCOLS",
    "MslsProtocol",
    "is_msls_root",
    "msls_split_dir",
    "parse_msls_split",
    "read_msls",
    "read_msls_split",
]

log = get_logger("data.msls")

#: The cities of each split, as ``default_cities`` of the MSLS toolkit.
MSLS_CITIES: dict[str, tuple[str, ...]] = {
    "train": (
        "trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo", "toronto", "saopaulo",
        "moscow", "zurich", "paris", "bangkok", "budapest", "austin", "berlin", "ottawa", "phoenix", "goa",
        "amman", "nairobi", "manila",
    ),
    "val": ("cph", "sf"),
    "test": ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala"),
}  # fmt: skip
MslsProtocol = Literal["val740", "full"]
MSLS_PROTOCOLS: tuple[str, ...] = ("val740", "full")
#: The positive radius of the MSLS toolkit's evaluate.py (``--threshold``), used to choose val740's queries.
DEFAULT_POSITIVE_RADIUS_M = 25.0
SIDES = ("database", "query")  # the folders of a city, and the sides of a PlaceDataset
POSTPROCESSED_COLUMNS = ("key", "easting", "northing", "night")
RAW_COLUMNS = ("key", "pano")
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def msls_split_dir(root: str | Path) -> Path:
    """``ROOT/train_val`` (the folder of the cities with positions); ``ROOT`` itself when it is that folder."""
    root = Path(root)
    if (root / "train_val").is_dir():
        return root / "train_val"
    if root.name == "train_val" and root.is_dir():
        return root
    raise DatasetFormatError(
        f"no folder {root / 'train_val'} (MSLS layout: ROOT/train_val/<city>/{{database,query}}/postprocessed.csv)"
    )


def is_msls_root(path: str | Path) -> bool:
    """Whether ``path`` is an MSLS root: ``train_val/<city>/query/postprocessed.csv`` exists for some city."""
    try:
        folder = msls_split_dir(path)
    except DatasetFormatError:
        return False
    return any((city / "query" / "postprocessed.csv").is_file() for city in folder.iterdir() if city.is_dir())


@dataclass
class _Table:
    """The rows of one folder's CSV files kept by a protocol."""

    paths: list[Path]
    utm: np.ndarray
    notes: list[str]
    dropped_panoramas: int = 0
    dropped_subtask: int = 0


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Header and the named columns of an MSLS CSV file (first column: the unnamed row number)."""
    if not path.is_file():
        raise DatasetFormatError(f"no {path} (MSLS layout: <city>/{{database,query}}/ with raw.csv, postprocessed.csv)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DatasetFormatError(f"{path} is empty (expected a header line)")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in required if name not in header]
    if missing:
        raise DatasetFormatError(
            f"{path}: no column {', '.join(missing)} (header: {','.join(header)}; "
            f"expected {','.join(required)} among the columns)"
        )
    body = [row for row in rows[1:] if row]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetFormatError(f"{path} line {number}: {len(row)} fields, the header has {len(header)}")
    columns = {name: [row[header.index(name)].strip() for row in body] for name in header if name}
    return header, columns


def _booleans(values: list[str], path: Path, column: str) -> np.ndarray:
    for row, text in enumerate(values):
        if text.lower() not in _TRUE | _FALSE:
            raise DatasetFormatError(f"{path} row {row}: column {column} is {text!r}, expected True or False")
    return np.array([text.lower() in _TRUE for text in values], dtype=bool)


def _numbers(values: list[str], path: Path, column: str) -> np.ndarray:
    return np.array([parse_number(text, column, f"{path} row {row}") for row, text in enumerate(values)], np.float64)


def _same_keys(keys: list[str], other: list[str] | None, path: Path, reference: Path, rows: int = 0) -> None:
    """The keys of ``path`` (``other``; without a key column, only its number of ``rows``) against ``reference``'s."""
    rows = rows if other is None else len(other)
    if rows != len(keys):
        raise DatasetFormatError(f"{path} has {rows} rows but {reference} has {len(keys)}; they must match")
    for row, (a, b) in enumerate(zip(keys, other or [])):
        if a != b:
            raise DatasetFormatError(
                f"{path} row {row}: key {b!r}, but {reference} row {row} has {a!r} (the files must list the same "
                "images in the same order)"
            )


def _read_folder(folder: Path, protocol: MslsProtocol) -> _Table:
    """One ``<city>/{database,query}`` folder: the images the protocol keeps, positions and day/night notes."""
    post_path, raw_path = folder / "postprocessed.csv", folder / "raw.csv"
    _, post = _read_csv(post_path, POSTPROCESSED_COLUMNS)
    _, raw = _read_csv(raw_path, RAW_COLUMNS)
    keys = post["key"]
    _same_keys(keys, raw["key"], raw_path, post_path)
    keep = ~_booleans(raw["pano"], raw_path, "pano")
    dropped_panoramas = int((~keep).sum())
    dropped_subtask = 0
    if protocol == "val740":
        subtask_path = folder / "subtask_index.csv"
        _, subtask = _read_csv(subtask_path, ("all",))
        _same_keys(keys, subtask.get("key"), subtask_path, post_path, rows=len(subtask["all"]))
        in_subtask = _booleans(subtask["all"], subtask_path, "all")
        dropped_subtask = int((keep & ~in_subtask).sum())
        keep &= in_subtask
    utm = np.stack([_numbers(post[column], post_path, column) for column in ("easting", "northing")], axis=1)
    night = _booleans(post["night"], post_path, "night")
    rows = np.flatnonzero(keep)
    return _Table(
        paths=[folder / "images" / f"{keys[i]}.jpg" for i in rows],
        utm=utm[rows],
        notes=["night" if night[i] else "day" for i in rows],
        dropped_panoramas=dropped_panoramas,
        dropped_subtask=dropped_subtask,
    )


def _cities(split: str, cities: Sequence[str] | str | None) -> list[str]:
    if cities is None:
        if split not in MSLS_CITIES:
            raise ValueError(f"MSLS split must be one of {', '.join(MSLS_CITIES)}, got {split!r}; or name the cities")
        chosen = list(MSLS_CITIES[split])
    else:
        chosen = [c.strip() for c in (cities.split(",") if isinstance(cities, str) else cities) if c.strip()]
    if not chosen:
        raise ValueError("MSLS: no city chosen")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"MSLS: a city is named twice in {chosen}")
    test = sorted(set(chosen) & set(MSLS_CITIES["test"]))
    if test:
        raise DatasetFormatError(
            f"MSLS test cities ({', '.join(test)}) come without positions (raw.csv, postprocessed.csv): their ground "
            "truth is kept by the evaluation server, so they cannot be evaluated here; MSLS is evaluated on its val "
            "split (split 'val': the 740-query protocol, 'val-full': every image)"
        )
    return chosen


def read_msls(
    root: str | Path,
    split: str = "val",
    protocol: MslsProtocol = "val740",
    cities: Sequence[str] | str | None = None,
    positive_radius_m: float = DEFAULT_POSITIVE_RADIUS_M,
    separate_cities: bool = True,
    skip_bad_images: bool = False,
) -> PlaceDataset:
    """Read MSLS from its released layout (see the module docstring).

    Args:
        root: the folder holding ``train_val/`` (or ``train_val`` itself).
        split: ``val`` (cph, sf) or ``train`` (its 22 cities); the dataset's split name.
        protocol: ``val740`` (the toolkit's evaluation: ``all`` subtask, no
            panoramas, queries with a positive within ``positive_radius_m``) or
            ``full`` (every image that is not a panorama).
        cities: the cities to read instead of the split's (names or ``"cph,sf"``),
            in this order; database and queries list city after city, rows in file order.
        positive_radius_m: with ``val740``, the radius that decides which queries
            have a positive (25 m, the toolkit's ``--threshold``); evaluate with the same.
        separate_cities: label images with their city, so that positives and
            search stay within a city (see the module docstring).
        skip_bad_images: leave out missing or unreadable images (with a warning each)
            instead of raising on a missing one.

    Returns:
        A :class:`PlaceDataset` named ``msls`` with UTM positions, ``day``/``night``
        notes on database and queries, and city groups when ``separate_cities``.
    """
    if protocol not in MSLS_PROTOCOLS:
        raise ValueError(f"MSLS protocol must be one of {', '.join(MSLS_PROTOCOLS)}, got {protocol!r}")
    folder = msls_split_dir(root)
    chosen = _cities(split, cities)
    # PlaceDataset's per-image fields (database_paths, query_utm, ...), city after city.
    lists: dict[str, Any] = {f"{side}_{kind}": [] for side in SIDES for kind in ("paths", "utm", "notes", "groups")}
    for city in chosen:
        city_dir = folder / city
        if not city_dir.is_dir():
            present = sorted(p.name for p in folder.iterdir() if p.is_dir())
            raise DatasetFormatError(f"no folder {city_dir} for MSLS city {city!r}; cities there: {', '.join(present)}")
        for side in SIDES:
            table = _read_folder(city_dir / side, protocol)
            if not table.paths:
                raise DatasetFormatError(f"{city_dir / side}: no image is kept by protocol {protocol!r}")
            lists[f"{side}_paths"] += table.paths
            lists[f"{side}_utm"].append(table.utm)
            lists[f"{side}_notes"] += table.notes
            lists[f"{side}_groups"] += [city] * len(table.paths)
            log.info("MSLS %s %s: %d images (%d panoramas left out%s)", city, side, len(table.paths),
                     table.dropped_panoramas,
                     f", {table.dropped_subtask} outside the 'all' subtask" if protocol == "val740" else "")  # fmt: skip
    for side in SIDES:
        lists[f"{side}_utm"] = np.concatenate(lists[f"{side}_utm"])
    dataset = PlaceDataset(name="msls", root=Path(root), split=split, **lists)
    dataset = keep_readable_images(dataset, skip_bad_images, f"MSLS {split}")
    if protocol == "val740":
        # As the toolkit: positives are searched city by city, whatever separate_cities says about evaluation.
        with_positive = [q for q, found in enumerate(dataset.positives(positive_radius_m)) if len(found)]
        if not with_positive:
            raise DatasetFormatError(
                f"MSLS {split}: no query has a database image of its city within {positive_radius_m:g} m"
            )
        dropped = dataset.num_queries - len(with_positive)
        if dropped:
            log.info("MSLS %s: %d of %d queries have no database image within %g m and are left out (val740)",
                     split, dropped, dataset.num_queries, positive_radius_m)  # fmt: skip
            dataset = dataset.subset(query_indices=with_positive)
    if not separate_cities:
        dataset = dataclasses.replace(dataset, database_groups=None, query_groups=None)
    log.info("opened %r from %s (MSLS layout, protocol %s, cities %s%s)", dataset, folder, protocol,
             ", ".join(chosen), ", searched city by city" if separate_cities else "")  # fmt: skip
    return dataset


def parse_msls_split(split: str | None) -> tuple[str, MslsProtocol]:
    """A split name as ``open_dataset`` takes it: ``<split>`` or ``<split>-<protocol>``.

    ``val`` is ``val`` with protocol ``val740``; ``val-full`` the full val set;
    ``train`` (``train-full``) every image of the train cities. ``None`` is ``val``.
    """
    text = (split or "val").strip()
    base, _, protocol = text.partition("-")
    protocol = protocol or ("val740" if base == "val" else "full")
    if protocol not in MSLS_PROTOCOLS:
        raise ValueError(
            f"MSLS split {split!r}: expected <split> or <split>-<protocol> with protocol one of "
            f"{', '.join(MSLS_PROTOCOLS)} (e.g. val, val-full, train)"
        )
    return base, protocol  # type: ignore[return-value]


def read_msls_split(
    root: str | Path, split: str | None = "val", skip_bad_images: bool = False, separate_cities: bool = True
) -> PlaceDataset:
    """:func:`read_msls` with the protocol named in the split (see :func:`parse_msls_split`); for ``open_dataset``."""
    base, protocol = parse_msls_split(split)
    return read_msls(root, split=base, protocol=protocol, skip_bad_images=skip_bad_images,
                     separate_cities=separate_cities)  # fmt: skip

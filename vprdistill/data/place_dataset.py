"""`PlaceDataset`: one split of geotagged database and query images.

Ground truth is geographic (METHODS.md §1): a database image is a positive of a
query when their UTM positions lie within a radius. Radius searches run on a
k-d tree (scikit-learn) and are cached per radius, because training asks for the
same radius once per epoch and evaluation for the same radius per model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

# A UTM zone as written on maps: number 1-60 and, optionally, the latitude band letter (no I or O).
_ZONE_PATTERN = re.compile(r"^(?:[1-9]|[1-5][0-9]|60)[C-HJ-NP-X]?$")


class DatasetFormatError(ValueError):
    """A dataset (folder tree, ``.mat`` file or its contents) does not have the expected form."""


UNKNOWN_CONDITION = "unknown"


@dataclass(eq=False)
class PlaceDataset:
    """Database and query images of one split with their UTM positions.

    ``database_utm`` is ``(N, 2)`` and ``query_utm`` is ``(M, 2)``, float64
    (east, north) in metres. The optional lists run parallel to the path lists:
    segmentation maps (StructVPR) and the condition note of each image (from the
    folder format's ``note`` field, e.g. ``night``).

    ``utm_zone`` is the UTM zone the positions are in (e.g. ``17T``; the band
    letter may be missing), ``None`` when the source does not say.
    ``allow_unknown_query_positions`` lets query rows of ``query_utm`` be NaN
    (a query whose position is unknown, see ``vprdistill.data.two_folders``);
    such a dataset can be described and searched, but ground truth
    (:meth:`positives`) refuses it, naming the queries.

    ``database_groups`` / ``query_groups`` (both or neither) label each image
    with a group, e.g. its city in MSLS: a query's positives and its search
    (``eval.evaluate``) are then restricted to the database images of its group.
    ``query_positives`` gives the ground truth as lists instead (VPR-Bench,
    gsv-cities ``.npy`` files): per query, the database indices that are right;
    :meth:`positives` then returns them whatever the radius. Without positions
    (``has_positions=False``, positions all zeros) such lists are the only
    ground truth, and what needs metres (mining, a radius search) raises.
    """

    name: str
    root: Path
    split: str
    database_paths: list[Path] = field(repr=False)
    query_paths: list[Path] = field(repr=False)
    database_utm: np.ndarray = field(repr=False)
    query_utm: np.ndarray = field(repr=False)
    database_seg_paths: list[Path] | None = field(default=None, repr=False)
    query_seg_paths: list[Path] | None = field(default=None, repr=False)
    database_notes: list[str] | None = field(default=None, repr=False)
    query_notes: list[str] | None = field(default=None, repr=False)
    utm_zone: str | None = None
    allow_unknown_query_positions: bool = field(default=False, repr=False)
    database_groups: list[str] | None = field(default=None, repr=False)
    query_groups: list[str] | None = field(default=None, repr=False)
    query_positives: list[np.ndarray] | None = field(default=None, repr=False)
    has_positions: bool = field(default=True, repr=False)
    _cache: dict[float, list[np.ndarray]] = field(default_factory=dict, init=False, repr=False)
    _tree: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._check_pair("paths", Path)
        self.database_utm = self._checked_utm(self.database_utm, "database_utm", len(self.database_paths))
        self.query_utm = self._checked_utm(
            self.query_utm, "query_utm", len(self.query_paths), allow_nan_rows=self.allow_unknown_query_positions
        )
        if self.utm_zone is not None and not _ZONE_PATTERN.match(str(self.utm_zone)):
            raise DatasetFormatError(
                f"{self._where}: utm_zone must be a UTM zone such as '17T' or '17' (number 1-60, "
                f"optional band letter C-X without I and O), got {self.utm_zone!r}"
            )
        if not self.database_paths:
            raise DatasetFormatError(f"{self._where}: the database is empty")
        if not self.query_paths:
            raise DatasetFormatError(f"{self._where}: there are no queries")
        self._check_pair("seg_paths", Path, "segmentation maps")
        self._check_pair("notes", None)
        self._check_pair("groups", str, "groups")
        self._check_positives()

    def _check_pair(self, suffix: str, convert: Any, what: str | None = None) -> None:
        """``database_<suffix>`` and ``query_<suffix>``: one per image, items converted (unless ``convert`` is None);
        with ``what``, both or neither."""
        names = (f"database_{suffix}", f"query_{suffix}")
        values = [getattr(self, name) for name in names]
        if what is not None and (values[0] is None) != (values[1] is None):
            raise DatasetFormatError(f"{self._where}: {what} are given for only one of database and queries")
        for name, items, expected in zip(names, values, (self.num_database, self.num_queries)):
            if items is None:
                continue
            if len(items) != expected:
                raise DatasetFormatError(
                    f"{self._where}: {name} has {len(items)} entries, expected {expected} (one per image)"
                )
            if convert is not None:
                setattr(self, name, [convert(item) for item in items])

    def _check_positives(self) -> None:
        """Validate the explicit positives (length, index ranges); store them normalised."""
        if self.query_positives is None:
            if not self.has_positions:
                raise DatasetFormatError(
                    f"{self._where}: without positions (has_positions=False) the ground truth must be given "
                    "as query_positives"
                )
            return
        if len(self.query_positives) != self.num_queries:
            raise DatasetFormatError(
                f"{self._where}: query_positives has {len(self.query_positives)} entries, "
                f"expected {self.num_queries} (one per query)"
            )
        checked = []
        for query, found in enumerate(self.query_positives):
            array = np.asarray(found)
            if array.size and (array.dtype.kind not in "iu" or array.ndim != 1):
                raise DatasetFormatError(
                    f"{self._where}: query_positives[{query}] must be a 1-D array of database indices, "
                    f"got {array.dtype} of shape {array.shape}"
                )
            array = array.astype(np.int64).reshape(-1)
            if array.size and (array.min() < 0 or array.max() >= self.num_database):
                raise DatasetFormatError(
                    f"{self._where}: query_positives[{query}] holds database index "
                    f"{int(array.min() if array.min() < 0 else array.max())}, outside [0, {self.num_database})"
                )
            array = np.unique(array)  # sorted, each index once
            array.flags.writeable = False  # shared with every caller, as the radius cache is
            checked.append(array)
        self.query_positives = checked

    @property
    def _where(self) -> str:
        return f"dataset {self.name!r} split {self.split!r}"

    def _checked_utm(self, utm: Any, field_name: str, expected: int, allow_nan_rows: bool = False) -> np.ndarray:
        array = np.asarray(utm, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] != expected:
            raise DatasetFormatError(
                f"{self._where}: {field_name} has shape {array.shape}, expected ({expected}, 2) (east, north per image)"
            )
        finite = np.isfinite(array).all(axis=1)
        if allow_nan_rows:
            # An unknown position is a whole NaN row; half a position or an infinity is a bug.
            finite |= np.isnan(array).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise DatasetFormatError(f"{self._where}: {field_name} row {bad} is not finite: {array[bad].tolist()}")
        return array

    def __repr__(self) -> str:
        return (
            f"PlaceDataset(name={self.name!r}, split={self.split!r}, root={str(self.root)!r}, "
            f"database={self.num_database}, queries={self.num_queries}, segmentation={self.has_segmentation})"
        )

    @property
    def num_database(self) -> int:
        return len(self.database_paths)

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def unknown_query_positions(self) -> np.ndarray:
        """Indices of the queries whose position is unknown (NaN rows of ``query_utm``): ``(K,)`` int64."""
        return np.flatnonzero(np.isnan(self.query_utm).any(axis=1))

    def check_query_positions(self, purpose: str = "ground truth") -> None:
        """Raise ``DatasetFormatError`` naming the first queries without a known position, if any."""
        unknown = self.unknown_query_positions
        if unknown.size:
            names = ", ".join(str(self.query_paths[i]) for i in unknown[:5])
            more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
            raise DatasetFormatError(
                f"{self._where}: {unknown.size} of {self.num_queries} queries have no known position, "
                f"which {purpose} needs: {names}{more}. Give their positions (in the positions file or "
                f"the @east@north@ file names), or leave these queries out"
            )

    @property
    def has_segmentation(self) -> bool:
        return self.database_seg_paths is not None and self.query_seg_paths is not None

    def _database_tree(self) -> Any:
        if self._tree is None:
            from sklearn.neighbors import NearestNeighbors

            self._tree = NearestNeighbors(algorithm="kd_tree").fit(self.database_utm)
        return self._tree

    def _radius_search(self, radius_m: float) -> list[np.ndarray]:
        """Per query, the database indices within ``radius_m`` metres, nearest first (cached per radius)."""
        radius_m = float(radius_m)
        if not np.isfinite(radius_m) or radius_m < 0:
            raise ValueError(f"radius_m must be a finite non-negative number of metres, got {radius_m}")
        if radius_m not in self._cache:
            self.require_positions("a radius search (positives in metres)")
            _, indices = self._database_tree().radius_neighbors(self.query_utm, radius=radius_m, sort_results=True)
            database_groups = None if self.database_groups is None else np.asarray(self.database_groups, dtype=object)
            result = []
            for row, found in enumerate(indices):
                found = found.astype(np.int64, copy=False)
                if database_groups is not None:
                    # Groups are separate places (cities, maybe in other UTM zones): metres across them mean nothing.
                    found = found[database_groups[found] == self.query_groups[row]]  # type: ignore[index]
                found.flags.writeable = False  # cached: callers share these arrays
                result.append(found)
            self._cache[radius_m] = result
        return list(self._cache[radius_m])

    def positives(self, radius_m: float) -> list[np.ndarray]:
        """Per query, the database indices within ``radius_m`` metres (inclusive), nearest first.

        Returns M read-only int64 arrays; a query without positives gets an empty array.
        With groups, only database images of the query's group count. With explicit
        ``query_positives`` these are returned (sorted) and ``radius_m`` is not used.
        Raises ``DatasetFormatError`` naming them when some queries have no known position.
        """
        if self.query_positives is not None:
            return list(self.query_positives)
        self.check_query_positions("ground truth (positives within a radius)")
        return self._radius_search(radius_m)

    def distances_to_database(self, query_index: int) -> np.ndarray:
        """Metres from query ``query_index`` to every database image: ``(N,)`` float64 (NaN without positions)."""
        if not self.has_positions:
            return np.full(self.num_database, np.nan)
        return np.linalg.norm(self.database_utm - self.query_utm[query_index], axis=1)

    def require_positions(self, purpose: str) -> None:
        """Raise ``DatasetFormatError`` when the dataset has no positions (``has_positions=False``).

        Ground truth given as lists serves evaluation only: what needs metres
        (training mining with its two radii, a radius search) calls this first.
        """
        if not self.has_positions:
            raise DatasetFormatError(
                f"{self._where} has no positions (its ground truth is a list of positives per query), "
                f"but {purpose} needs them; use a dataset with UTM positions for this"
            )

    def query_conditions(self) -> list[str]:
        """The condition note of each query (e.g. ``night``), ``"unknown"`` where there is none."""
        if self.query_notes is None:
            return [UNKNOWN_CONDITION] * self.num_queries
        return [note if note else UNKNOWN_CONDITION for note in self.query_notes]

    def subset(
        self,
        query_indices: Sequence[int] | np.ndarray | None = None,
        database_indices: Sequence[int] | np.ndarray | None = None,
    ) -> PlaceDataset:
        """A new dataset with the chosen queries and/or database images (``None`` keeps all), in the given order.

        Explicit ``query_positives`` follow the database images they name to their new indices.
        """
        q = _as_indices(query_indices, self.num_queries, "query_indices")
        d = _as_indices(database_indices, self.num_database, "database_indices")
        query_positives = None
        if self.query_positives is not None:
            kept = [self.query_positives[i] for i in q]
            query_positives = kept if database_indices is None else _renumber_positives(kept, d)

        # Every per-image list follows its side's indices; everything else (name, zone, flags) is kept.
        lists = {
            name: None if getattr(self, name) is None else [getattr(self, name)[i] for i in indices]
            for side, indices in (("database", d), ("query", q))
            for name in (f"{side}_paths", f"{side}_seg_paths", f"{side}_notes", f"{side}_groups")
        }
        return replace(
            self,
            database_utm=self.database_utm[d],
            query_utm=self.query_utm[q],
            query_positives=query_positives,
            **lists,
        )


def _renumber_positives(positives: list[np.ndarray], kept_database: np.ndarray) -> list[np.ndarray]:
    """Old database indices → their positions in ``kept_database`` (all of them, if one is kept twice)."""
    new_indices: dict[int, list[int]] = {}
    for new, old in enumerate(kept_database.tolist()):
        new_indices.setdefault(old, []).append(new)
    return [
        np.array(sorted(n for i in found.tolist() for n in new_indices.get(i, ())), np.int64) for found in positives
    ]


def _as_indices(indices: Sequence[int] | np.ndarray | None, size: int, name: str) -> np.ndarray:
    if indices is None:
        return np.arange(size)
    array = np.asarray(indices)
    if array.dtype == bool:
        if array.shape != (size,):
            raise ValueError(f"{name}: a boolean mask must have shape ({size},), got {array.shape}")
        return np.flatnonzero(array)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer indices or a boolean mask, got dtype {array.dtype}")
    array = array.astype(np.int64).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= size):
        raise IndexError(f"{name}: indices must lie in [0, {size}), got range [{array.min()}, {array.max()}]")
    return array

"""`PlaceDataset`: one split of geotagged database and query images.

Ground truth is geographic (METHODS.md §1): a database image is a positive of a
query when their UTM positions lie within a radius. Radius searches run on a
k-d tree (scikit-learn) and are cached per radius, because training asks for the
same radius once per epoch and evaluation for the same radius per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


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
    _cache: dict[tuple[str, float], list[np.ndarray]] = field(default_factory=dict, init=False, repr=False)
    _tree: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.database_paths = [Path(p) for p in self.database_paths]
        self.query_paths = [Path(p) for p in self.query_paths]
        self.database_utm = self._checked_utm(self.database_utm, "database_utm", len(self.database_paths))
        self.query_utm = self._checked_utm(self.query_utm, "query_utm", len(self.query_paths))
        if not self.database_paths:
            raise DatasetFormatError(f"{self._where}: the database is empty")
        if not self.query_paths:
            raise DatasetFormatError(f"{self._where}: there are no queries")
        if (self.database_seg_paths is None) != (self.query_seg_paths is None):
            raise DatasetFormatError(
                f"{self._where}: segmentation maps are given for only one of database and queries"
            )
        if self.database_seg_paths is not None:
            self.database_seg_paths = [Path(p) for p in self.database_seg_paths]
            self.query_seg_paths = [Path(p) for p in self.query_seg_paths]  # type: ignore[union-attr]
        for field_name, values, expected in (
            ("database_seg_paths", self.database_seg_paths, len(self.database_paths)),
            ("query_seg_paths", self.query_seg_paths, len(self.query_paths)),
            ("database_notes", self.database_notes, len(self.database_paths)),
            ("query_notes", self.query_notes, len(self.query_paths)),
        ):
            if values is not None and len(values) != expected:
                raise DatasetFormatError(
                    f"{self._where}: {field_name} has {len(values)} entries, expected {expected} (one per image)"
                )

    @property
    def _where(self) -> str:
        return f"dataset {self.name!r} split {self.split!r}"

    def _checked_utm(self, utm: Any, field_name: str, expected: int) -> np.ndarray:
        array = np.asarray(utm, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] != expected:
            raise DatasetFormatError(
                f"{self._where}: {field_name} has shape {array.shape}, expected ({expected}, 2) (east, north per image)"
            )
        if not np.isfinite(array).all():
            bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
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
    def has_segmentation(self) -> bool:
        return self.database_seg_paths is not None and self.query_seg_paths is not None

    def _database_tree(self) -> Any:
        if self._tree is None:
            from sklearn.neighbors import NearestNeighbors

            self._tree = NearestNeighbors(algorithm="kd_tree").fit(self.database_utm)
        return self._tree

    def _radius_search(self, kind: str, radius_m: float) -> list[np.ndarray]:
        radius_m = float(radius_m)
        if not np.isfinite(radius_m) or radius_m < 0:
            raise ValueError(f"radius_m must be a finite non-negative number of metres, got {radius_m}")
        key = (kind, radius_m)
        if key not in self._cache:
            # With X=None scikit-learn queries the fitted points and leaves each point out of its own list.
            queries = self.query_utm if kind == "queries" else None
            _, indices = self._database_tree().radius_neighbors(queries, radius=radius_m, sort_results=True)
            result = []
            for found in indices:
                found = found.astype(np.int64, copy=False)
                found.flags.writeable = False  # cached: callers share these arrays
                result.append(found)
            self._cache[key] = result
        return list(self._cache[key])

    def positives(self, radius_m: float) -> list[np.ndarray]:
        """Per query, the database indices within ``radius_m`` metres (inclusive), nearest first.

        Returns M read-only int64 arrays; a query without positives gets an empty array.
        """
        return self._radius_search("queries", radius_m)

    def database_neighbours(self, radius_m: float) -> list[np.ndarray]:
        """Per database image, the other database indices within ``radius_m`` metres, nearest first.

        An image is not its own neighbour (other images at the same position are).
        Used for mining when database images serve as training queries. Returns N arrays.
        """
        return self._radius_search("database", radius_m)

    def distances_to_database(self, query_index: int) -> np.ndarray:
        """Metres from query ``query_index`` to every database image: ``(N,)`` float64."""
        return np.linalg.norm(self.database_utm - self.query_utm[query_index], axis=1)

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
        """A new dataset with the chosen queries and/or database images (``None`` keeps all), in the given order."""
        q = _as_indices(query_indices, self.num_queries, "query_indices")
        d = _as_indices(database_indices, self.num_database, "database_indices")

        def pick(values: list | None, indices: np.ndarray) -> list | None:
            return None if values is None else [values[i] for i in indices]

        return PlaceDataset(
            name=self.name,
            root=self.root,
            split=self.split,
            database_paths=pick(self.database_paths, d),  # type: ignore[arg-type]
            query_paths=pick(self.query_paths, q),  # type: ignore[arg-type]
            database_utm=self.database_utm[d],
            query_utm=self.query_utm[q],
            database_seg_paths=pick(self.database_seg_paths, d),
            query_seg_paths=pick(self.query_seg_paths, q),
            database_notes=pick(self.database_notes, d),
            query_notes=pick(self.query_notes, q),
        )


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

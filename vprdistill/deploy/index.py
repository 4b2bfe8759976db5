"""The map index: descriptors of a mapped area with their positions, image paths and model identity.

An index folder holds

- ``index.json``: the manifest (model fingerprint and config, descriptor size,
  type, PCA, dtype, count, image size, calibration), written last;
- ``descriptors.npy`` (flat float32/float16) or ``descriptors.faiss`` (the rest);
- ``pca_matrix.npy`` and ``pca_bias.npy`` when descriptors are PCA-reduced;
- ``positions.npy``: `(N, 2)` float64 UTM east, north (NaN where unknown);
- ``paths.json``: the image of each entry.

The whole folder is replaced at once (``atomic_folder``), so an interrupted
build or ``add`` leaves the previous index as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vprdistill.deploy.atomic_folder import atomic_folder
from vprdistill.deploy.searcher import CompactSearcher
from vprdistill.deploy.stores import neighbour_recall
from vprdistill.utils.atomic import atomic_write_json

FORMAT_VERSION = 1
MANIFEST_FILE = "index.json"
POSITIONS_FILE = "positions.npy"
PATHS_FILE = "paths.json"


class IndexFormatError(ValueError):
    """An index folder is missing a file or its files disagree with each other."""


class IndexModelMismatchError(ValueError):
    """A model other than the one an index was built with was used to query it."""


@dataclass
class MapIndex:
    """Searchable descriptors of `N` database images, with their positions `(N, 2)` and paths."""

    searcher: CompactSearcher
    positions: np.ndarray
    paths: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 2)
        self.paths = [str(p) for p in self.paths]
        if not len(self.searcher) == len(self.positions) == len(self.paths):
            raise IndexFormatError(
                f"index entries disagree: {len(self.searcher)} descriptors, "
                f"{len(self.positions)} positions, {len(self.paths)} paths"
            )
        self.manifest["count"] = len(self.paths)

    @classmethod
    def create(
        cls,
        descriptors: np.ndarray,
        positions: np.ndarray,
        paths: Sequence[str | Path],
        *,
        model_fingerprint: str,
        model_config: dict[str, Any],
        image_size: tuple[int, int],
        index_type: str = "flat",
        dtype: str = "float32",
        pca_dim: int | None = None,
        model_path: str | None = None,
    ) -> MapIndex:
        """Build an index from `(N, D)` model descriptors, `(N, 2)` positions and N image paths."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        searcher = CompactSearcher.build(descriptors, index_type, dtype, pca_dim)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_fingerprint": model_fingerprint,
            "model_config": model_config,
            "model_path": model_path,
            "descriptor_dim": int(descriptors.shape[1]),
            "stored_dim": searcher.stored_dim,
            "type": index_type,
            "pca": int(pca_dim) if pca_dim else None,
            "dtype": dtype,
            "image_size": [int(s) for s in image_size],
            "calibration": None,
        }
        exact = descriptors if searcher.pca is None else searcher.reduce(descriptors)
        if not (index_type == "flat" and dtype == "float32"):
            # What compression or approximation costs against exact search in the stored space.
            manifest["neighbour_recall_at_10"] = neighbour_recall(searcher.store, exact)
        return cls(searcher, positions, list(paths), manifest)

    # --- what the manifest says -------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    @property
    def descriptor_dim(self) -> int:
        return int(self.manifest["descriptor_dim"])

    @property
    def model_fingerprint(self) -> str:
        return str(self.manifest["model_fingerprint"])

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.manifest["image_size"]
        return int(height), int(width)

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.manifest.get("calibration")

    # --- use -------------------------------------------------------------------
    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` entries for `(M, D)` model descriptors → scores `(M, k)`, indices `(M, k)` (−1 = none)."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(
                f"query descriptors have shape {tuple(descriptors.shape)}; this index holds {self.descriptor_dim}-d ones"
            )
        return self.searcher.search(descriptors, k)

    def add(self, descriptors: np.ndarray, positions: np.ndarray, paths: Sequence[str | Path]) -> None:
        """Append `(N, D)` descriptors with their `(N, 2)` positions and N paths (PCA/quantiser stay as trained)."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        if not len(descriptors) == len(positions) == len(paths):
            raise ValueError(f"{len(descriptors)} descriptors, {len(positions)} positions and {len(paths)} paths")
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"new descriptors have shape {descriptors.shape}; the index holds {self.descriptor_dim}-d")
        self.searcher.add(descriptors)
        self.positions = np.concatenate([self.positions, positions])
        self.paths = self.paths + [str(p) for p in paths]
        self.manifest["count"] = len(self.paths)

    def empty_like(self) -> MapIndex:
        """An index with this one's model, PCA and trained store, but no entries (used by calibration)."""
        manifest = {**self.manifest, "calibration": None}
        return MapIndex(self.searcher.empty_like(), np.zeros((0, 2)), [], manifest)

    def check_model(self, model: Any) -> None:
        """Raise ``IndexModelMismatchError`` unless ``model`` is the model this index was built with."""
        from vprdistill.models.checkpoint import model_fingerprint

        dim = int(model.descriptor_dim)
        if dim != self.descriptor_dim:
            raise IndexModelMismatchError(
                f"the model gives {dim}-d descriptors but the index holds {self.descriptor_dim}-d ones "
                f"(index built with model {self.model_fingerprint})"
            )
        fingerprint = model_fingerprint(model)
        if fingerprint != self.model_fingerprint:
            raise IndexModelMismatchError(
                f"model fingerprint {fingerprint} differs from the index's {self.model_fingerprint}: "
                "the index was built with other weights or another config; rebuild it with this model"
            )

    # --- files -----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder``, replacing any previous index there at once."""
        folder = Path(folder)
        with atomic_folder(folder, MANIFEST_FILE) as staging:
            self.searcher.save(staging)
            np.save(staging / POSITIONS_FILE, self.positions, allow_pickle=False)
            atomic_write_json(staging / PATHS_FILE, self.paths)
            atomic_write_json(staging / MANIFEST_FILE, self.manifest)
        return folder

    def save_manifest(self, folder: str | Path) -> None:
        """Rewrite only ``index.json`` (e.g. after calibration); the rest of the folder is unchanged."""
        atomic_write_json(Path(folder) / MANIFEST_FILE, self.manifest)

    @classmethod
    def load(cls, folder: str | Path, model: Any = None) -> MapIndex:
        """Read an index folder; with ``model``, also check it is the model the index was built with."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        try:
            positions = np.load(folder / POSITIONS_FILE, allow_pickle=False)
            paths = json.loads((folder / PATHS_FILE).read_text())
            searcher = CompactSearcher.load(
                folder, manifest["type"], manifest["dtype"], int(manifest["stored_dim"]), bool(manifest["pca"])
            )
        except (OSError, ValueError) as error:
            raise IndexFormatError(f"cannot read index {folder}: {error}") from error
        if len(paths) != manifest["count"]:
            raise IndexFormatError(f"{folder}: index.json counts {manifest['count']} entries, paths.json {len(paths)}")
        try:
            index = cls(searcher, positions, paths, manifest)
        except IndexFormatError as error:
            raise IndexFormatError(f"{folder}: {error}") from error
        if model is not None:
            index.check_model(model)
        return index


_REQUIRED_FIELDS = ("format_version", "model_fingerprint", "descriptor_dim", "stored_dim", "type", "dtype", "count")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of ``folder``, with its required fields checked."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a map index (build one with `vprdistill index build`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise IndexFormatError(f"{path} is not valid JSON: {error}") from error
    missing = [name for name in _REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise IndexFormatError(f"{path} lacks the field(s) {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format version {manifest['format_version']}; this code reads {FORMAT_VERSION}")
    return manifest

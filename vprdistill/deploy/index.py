"""The map index: descriptors of a mapped area with their positions, image paths and model identity.

An index folder holds

- ``index.json``: the manifest (model fingerprint and config, descriptor size,
  type, PCA, dtype, count, image size, calibration), written last;
- ``descriptors.npy`` (flat float32/float16) or ``descriptors.faiss`` (the rest);
- ``pca_matrix.npy`` `(D_stored, D)` and ``pca_bias.npy`` `(D_stored,)` when
  descriptors are PCA-reduced (``normalise(matrix @ x + bias)``);
- ``positions.npy``: `(N, 2)` float64 UTM east, north (NaN where unknown);
- ``paths.json``: the image of each entry.

The searchable part is one faiss index of ``vprdistill.retrieval.approximate``
(L2 normalisation, the PCA if any, then the store of the manifest's type and
dtype); this module only adds the files, the metadata and the model checks.

``index.json`` records the sha256 and size of every other file (``files``);
``MapIndex.load`` checks them and names a damaged or missing file.

The whole folder is replaced at once (``atomic_folder``), so an interrupted
build or ``add`` leaves the previous index as it was, and a crash between the
two renames of a replacement is undone by the next reader or writer. Every
writer holds the index's lock (``index_lock``: ``.<name>.lock`` beside the
folder) from reading the index to writing it, so concurrent commands take turns
instead of losing each other's changes; a stale in-memory copy is refused
(``IndexChangedError``) rather than written over a newer index.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vprdistill.retrieval import approximate
from vprdistill.utils.atomic import atomic_write_json
from vprdistill.utils.atomic_folder import atomic_folder, locked_folder, restore_if_interrupted
from vprdistill.utils.hashing import file_sha256
from vprdistill.utils.logging import get_logger

log = get_logger("deploy.index")

FORMAT_VERSION = 1
MANIFEST_FILE = "index.json"
POSITIONS_FILE = "positions.npy"
PATHS_FILE = "paths.json"
LOCK_WHAT = "map index"
_LOAD_ATTEMPTS = 3
INDEX_TYPES = ("flat", "ivfpq", "hnsw")
DTYPES = ("float32", "float16", "int8")
ARRAY_FILE = "descriptors.npy"
FAISS_FILE = "descriptors.faiss"
PCA_MATRIX_FILE = "pca_matrix.npy"
PCA_BIAS_FILE = "pca_bias.npy"
# (type, dtype) of the manifest → kind of approximate.build_index. Flat float32 and
# float16 are kept as plain arrays (readable without faiss), the rest as faiss files.
_KINDS = {("flat", "float32"): "flat", ("flat", "float16"): "fp16", ("flat", "int8"): "sq8",
          ("hnsw", "float32"): "hnsw", ("ivfpq", "float32"): "ivfpq"}  # fmt: skip
_ARRAY_DTYPES = {"flat": np.float32, "fp16": np.float16}


class IndexFormatError(ValueError):
    """An index folder is missing a file or its files disagree with each other."""


class IndexModelMismatchError(ValueError):
    """A model other than the one an index was built with was used to query it."""


class IndexChangedError(RuntimeError):
    """The index folder was rewritten by another writer since this copy of it was loaded."""


@contextlib.contextmanager
def index_lock(folder: str | Path, wait: float | None = 0.0, hint: str | None = None) -> Iterator[Path]:
    """Hold the lock of the index at ``folder`` (an interrupted write recovered first); yields ``folder``.

    Hold it from loading an index to saving it, so no other writer changes the
    index in between. ``wait``: seconds to wait for another writer (0 refuses at
    once, ``None`` waits as long as it takes); then ``FolderLockedError`` (a
    ``RuntimeError``) names the folder and the other writer. ``save`` and
    ``save_manifest`` take the same lock, passing straight through when the
    calling thread holds it already.
    """
    with locked_folder(folder, MANIFEST_FILE, LOCK_WHAT, wait, hint):
        yield Path(folder)


def check_destination(folder: str | Path) -> None:
    """Raise ``ValueError`` naming ``folder`` unless an index can be written there (before any slow work).

    Refused: a file, a non-empty folder that is not an index, an index or a parent
    folder that cannot be written. Whether another writer holds it is ``index_lock``'s part.
    """
    from vprdistill.utils.atomic_folder import check_replaceable

    folder = Path(folder)
    try:
        check_replaceable(folder, MANIFEST_FILE)
    except OSError as error:
        raise ValueError(f"cannot write an index to {folder}: {error}") from error
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write an index to {folder}: {parent} is not writable")


def file_checksums(folder: Path, skip: Sequence[str] = (MANIFEST_FILE,)) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256", "bytes"}}`` of the plain files of ``folder`` (hidden and ``skip`` ones left out)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in skip and not path.name.startswith("."):
            found[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return found


def verify_files(folder: Path, files: dict[str, Any]) -> None:
    """Raise ``IndexFormatError`` naming the first file of ``files`` that is missing or whose sha256 differs."""
    for name, record in sorted(files.items()):
        path = folder / name
        if not name or Path(name).name != name or name.startswith("."):
            raise IndexFormatError(f"{folder / MANIFEST_FILE} lists {name!r}, which is not a file name of the index")
        if not path.is_file():
            raise IndexFormatError(f"{path} is missing (listed in {MANIFEST_FILE}): the index is incomplete")
        actual = file_sha256(path)
        if actual != record.get("sha256"):
            raise IndexFormatError(
                f"{path}: checksum mismatch (sha256 {actual[:16]}…, {path.stat().st_size} bytes; "
                f"{MANIFEST_FILE} records {str(record.get('sha256'))[:16]}…, {record.get('bytes')} bytes): "
                "the file is damaged or was changed after the index was written; rebuild the index"
            )


def storage_kind(index_type: str, dtype: str) -> str:
    """The ``approximate`` index kind of a (type, dtype) pair; ``ValueError`` for an unknown or unsupported one."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if (index_type, dtype) not in _KINDS:
        raise ValueError(f"dtype {dtype} applies to flat indexes; {index_type} keeps its own float32 or PQ codes")
    return _KINDS[index_type, dtype]


def save_store(store: faiss.Index, folder: Path, index_type: str, dtype: str) -> None:
    """Write ``store`` (``approximate.build_index(..., normalise=True)``) as ``descriptors.npy``/``.faiss`` and PCA arrays."""
    kind = storage_kind(index_type, dtype)
    base, pca, _ = approximate.index_parts(store)
    if kind in _ARRAY_DTYPES:
        decoded = base.reconstruct_n(0, base.ntotal) if base.ntotal else np.zeros((0, base.d), np.float32)
        np.save(folder / ARRAY_FILE, decoded.astype(_ARRAY_DTYPES[kind]), allow_pickle=False)
    else:
        approximate.save_index(base, folder / FAISS_FILE)
    if pca is not None:
        np.save(folder / PCA_MATRIX_FILE, pca[0], allow_pickle=False)
        np.save(folder / PCA_BIAS_FILE, pca[1], allow_pickle=False)


def load_store(
    folder: Path, index_type: str, dtype: str, descriptor_dim: int, stored_dim: int, has_pca: bool
) -> faiss.Index:
    """Read what :func:`save_store` wrote; the manifest gives type, dtype and sizes."""
    kind = storage_kind(index_type, dtype)
    if kind in _ARRAY_DTYPES:
        array = np.load(folder / ARRAY_FILE, allow_pickle=False)
        if array.ndim != 2 or array.shape[1] != stored_dim:
            raise ValueError(f"{folder / ARRAY_FILE}: expected (N, {stored_dim}) descriptors, found {array.shape}")
        base = faiss.index_factory(stored_dim, "Flat" if kind == "flat" else "SQfp16", faiss.METRIC_INNER_PRODUCT)
        base.add(np.ascontiguousarray(array, dtype=np.float32))  # float16 → fp16 codes is lossless
    else:
        base = approximate.load_index(folder / FAISS_FILE)
        if base.d != stored_dim:
            raise ValueError(
                f"{folder / FAISS_FILE}: descriptor size {base.d} differs from the manifest's {stored_dim}"
            )
    pca = None
    if has_pca:
        pca = (
            np.load(folder / PCA_MATRIX_FILE, allow_pickle=False),
            np.load(folder / PCA_BIAS_FILE, allow_pickle=False),
        )
    return approximate.with_transforms(base, descriptor_dim, pca)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder ``folder`` names right now (replacing an index gives the path a new inode)."""
    try:
        stat = os.stat(folder)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@dataclass
class MapIndex:
    """Searchable descriptors of `N` database images, with their positions `(N, 2)` and paths."""

    store: faiss.Index  # takes (M, D) model descriptors; L2-normalises them, then any PCA
    positions: np.ndarray
    paths: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    # (folder, its files' checksums) this copy was loaded from or last saved to: saving to that
    # folder again is refused if another writer has replaced it meanwhile (a lost update).
    _origin: tuple[Path, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 2)
        self.paths = [str(p) for p in self.paths]
        if not self.store.ntotal == len(self.positions) == len(self.paths):
            raise IndexFormatError(
                f"index entries disagree: {self.store.ntotal} descriptors, "
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
        utm_zone: str | None = None,
    ) -> MapIndex:
        """Build an index from `(N, D)` model descriptors, `(N, 2)` positions and N image paths.

        ``utm_zone`` (e.g. ``17T``): the zone the positions are in, so answers can
        also be given in latitude and longitude; ``None`` when not known.
        """
        descriptors = np.asarray(descriptors, dtype=np.float32)
        kind = storage_kind(index_type, dtype)
        store = approximate.build_index(descriptors, kind, pca_dim=pca_dim, normalise=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_fingerprint": model_fingerprint,
            "model_config": model_config,
            "model_path": model_path,
            "descriptor_dim": int(descriptors.shape[1]),
            "stored_dim": int(approximate.index_parts(store)[0].d),
            "type": index_type,
            "pca": int(pca_dim) if pca_dim else None,
            "dtype": dtype,
            "image_size": [int(s) for s in image_size],
            "utm_zone": utm_zone or None,
            "calibration": None,
        }
        if not (index_type == "flat" and dtype == "float32"):
            # What compression or approximation costs against exact search in the stored space.
            manifest["neighbour_recall_at_10"] = approximate.neighbour_recall(store, descriptors)
        return cls(store, positions, list(paths), manifest)

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
    def utm_zone(self) -> str | None:
        """The UTM zone of the positions (e.g. ``17T``), ``None`` when the index was built without one."""
        return self.manifest.get("utm_zone") or None

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
        return approximate.search(self.store, descriptors, k)

    def add(self, descriptors: np.ndarray, positions: np.ndarray, paths: Sequence[str | Path]) -> None:
        """Append `(N, D)` descriptors with their `(N, 2)` positions and N paths (PCA/quantiser stay as trained)."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        if not len(descriptors) == len(positions) == len(paths):
            raise ValueError(f"{len(descriptors)} descriptors, {len(positions)} positions and {len(paths)} paths")
        if descriptors.ndim != 2 or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(f"new descriptors have shape {descriptors.shape}; the index holds {self.descriptor_dim}-d")
        self.store.add(np.ascontiguousarray(descriptors))
        self.positions = np.concatenate([self.positions, positions])
        self.paths = self.paths + [str(p) for p in paths]
        self.manifest["count"] = len(self.paths)

    def empty_like(self) -> MapIndex:
        """An index with this one's model, PCA and trained store, but no entries (used by calibration)."""
        manifest = {**self.manifest, "calibration": None}
        return MapIndex(approximate.empty_like(self.store), np.zeros((0, 2)), [], manifest)

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
    def _check_not_replaced(self, folder: Path) -> None:
        """Refuse to write over ``folder`` if it is the folder this copy came from and another writer replaced it."""
        if self._origin is None or self._origin[0] != folder.resolve() or not (folder / MANIFEST_FILE).exists():
            return
        try:
            on_disk = read_manifest(folder)
        except (FileNotFoundError, IndexFormatError):
            on_disk = None
        if on_disk is None or on_disk.get("files") != self._origin[1]:
            raise IndexChangedError(
                f"index {folder} has changed since it was loaded (another command wrote it); "
                "not overwriting it: load it again and repeat the change"
            )

    def save(self, folder: str | Path, wait: float | None = 0.0, hint: str | None = None) -> Path:
        """Write the index into ``folder``, replacing any previous index there at once.

        Holds the index's lock while writing (``wait``, ``hint``: see ``index_lock``).
        Raises ``IndexChangedError`` when this copy was loaded from ``folder`` and
        another writer has replaced it since.
        """
        folder = Path(folder)
        with atomic_folder(folder, MANIFEST_FILE, LOCK_WHAT, wait, hint) as staging:
            self._check_not_replaced(folder)
            save_store(self.store, staging, self.manifest["type"], self.manifest["dtype"])
            np.save(staging / POSITIONS_FILE, self.positions, allow_pickle=False)
            atomic_write_json(staging / PATHS_FILE, self.paths)
            files = file_checksums(staging)
            atomic_write_json(staging / MANIFEST_FILE, {**self.manifest, "files": files})
        self.manifest["files"] = files
        self._origin = (folder.resolve(), files)
        return folder

    def save_manifest(self, folder: str | Path, wait: float | None = 0.0, hint: str | None = None) -> None:
        """Rewrite only ``index.json`` (e.g. after calibration); the rest of the folder is unchanged.

        Refused (``IndexChangedError``) unless ``folder`` still holds the files and
        entries this manifest describes: a manifest written over another writer's
        index would leave a folder no command can load.
        """
        folder = Path(folder)
        with index_lock(folder, wait, hint):
            on_disk = read_manifest(folder)
            if on_disk.get("files") != self.manifest.get("files") or on_disk["count"] != self.manifest["count"]:
                raise IndexChangedError(
                    f"index {folder} has changed since it was loaded ({on_disk['count']} entries there, "
                    f"{self.manifest['count']} in this copy); not writing its manifest: load it again and repeat"
                )
            atomic_write_json(folder / MANIFEST_FILE, self.manifest)

    @classmethod
    def load(cls, folder: str | Path, model: Any = None, verify: bool = True) -> MapIndex:
        """Read an index folder; with ``model``, also check it is the model the index was built with.

        With ``verify`` (default), each data file's sha256 is checked against
        ``index.json``. An index left missing by a crash between the renames of a
        replacement is restored first; an index replaced by another writer while
        it is read is read again, so the result is one whole version of it.
        """
        folder = Path(folder)
        restore_if_interrupted(folder, MANIFEST_FILE, LOCK_WHAT)
        for attempt in range(_LOAD_ATTEMPTS):
            identity = _identity(folder)
            try:
                index = cls._read(folder, verify)
            except (IndexFormatError, OSError):
                if attempt + 1 == _LOAD_ATTEMPTS or _identity(folder) == identity:
                    raise
            else:
                if _identity(folder) == identity:
                    break
            time.sleep(0.05)  # replaced while being read: read the new version
        else:
            raise IndexFormatError(f"{folder} was replaced {_LOAD_ATTEMPTS} times while being read; try again")
        index._origin = (folder.resolve(), index.manifest.get("files"))
        if model is not None:
            index.check_model(model)
        return index

    @classmethod
    def _read(cls, folder: Path, verify: bool) -> MapIndex:
        manifest = read_manifest(folder)
        files = manifest.get("files")
        if verify and isinstance(files, dict):
            verify_files(folder, files)
        elif verify:
            log.warning("%s records no checksums of its files (written by an older version); saving it again adds them",
                        folder / MANIFEST_FILE)  # fmt: skip
        try:
            positions = np.load(folder / POSITIONS_FILE, allow_pickle=False)
            paths = json.loads((folder / PATHS_FILE).read_text())
            store = load_store(folder, manifest["type"], manifest["dtype"], int(manifest["descriptor_dim"]),
                               int(manifest["stored_dim"]), bool(manifest["pca"]))  # fmt: skip
        except (OSError, ValueError) as error:
            raise IndexFormatError(f"cannot read index {folder}: {error}") from error
        if len(paths) != manifest["count"]:
            raise IndexFormatError(f"{folder}: index.json counts {manifest['count']} entries, paths.json {len(paths)}")
        try:
            return cls(store, positions, paths, manifest)
        except IndexFormatError as error:
            raise IndexFormatError(f"{folder}: {error}") from error


_REQUIRED_FIELDS = ("format_version", "model_fingerprint", "descriptor_dim", "stored_dim", "type", "dtype", "count")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of ``folder``, with its required fields checked."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
        message = f"{path} not found: {folder} is not a map index (build one with `vprdistill index build`)"
        raise FileNotFoundError(message) from error
    except json.JSONDecodeError as error:
        raise IndexFormatError(f"{path} is not valid JSON: {error}") from error
    missing = [name for name in _REQUIRED_FIELDS if name not in manifest]
    if missing:
        raise IndexFormatError(f"{path} lacks the field(s) {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {manifest['format_version']}; this code reads {FORMAT_VERSION}"
        )
    return manifest

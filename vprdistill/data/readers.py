"""Readers of the two dataset formats of METHODS.md §2, both giving a `PlaceDataset`.

- Folder format: ``ROOT/images/<split>/{database,queries}/*.jpg`` with the UTM
  position and more in each file name:
  ``@east@north@zone@letter@lat@lon@pano@tile@heading@pitch@roll@height@timestamp@note@.jpg``.
- NetVLAD ``.mat`` structure files (Pittsburgh 30k/250k layout): a ``dbStruct``
  listing database paths relative to the image root and query paths relative to
  ``ROOT/queries_real/``. One file per split, ``<name>_<split>.mat`` (its
  ``whichSet`` is the split), side by side for all splits and sets. Files saved
  by MATLAB with ``-v7.3`` (HDF5) are read too (``vprdistill.data.netvlad_mat``).
  Tokyo 24/7 as distributed also opens: its ``tokyo247.mat`` lists database
  images as ``.jpg`` while the files are ``.png`` (a listed image that is
  missing is looked for with the other image suffixes), and its query paths
  (``247query_v3/...``) are relative to the root itself: each query is looked
  for in the root first, then in ``queries_real/`` (``queries_root`` overrides both).

Any two folders of images (a database and queries) with positions in their
names or in a CSV file are read by ``vprdistill.data.two_folders``.

Segmentation maps, when present, mirror the image tree under
``ROOT/segmentation/<split>/{database,queries}/`` with the image's relative
path and a ``.png`` suffix, for both formats. Another maps folder beside it
(``segmentation_dir``, e.g. ``segmentation-predicted`` written by ``vprdistill
segment --maps-dir``) is read instead when asked for, so predicted maps can be
used without overwriting the ground truth; a folder asked for by name must exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vprdistill.data.filenames import PlaceFilename, parse_place_filename
from vprdistill.data.ground_truth_lists import (
    find_gsv_lists,
    is_gsv_lists_dir,
    is_gsv_lists_file,
    is_vprbench_dir,
    keep_readable_images,
    read_gsv_lists,
    read_vprbench,
)
from vprdistill.data.msls import is_msls_root, msls_split_dir, read_msls_split
from vprdistill.data.netvlad_mat import MAT_FIELDS, load_db_struct
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.data.positions import check_one_zone, parse_zone
from vprdistill.utils.logging import get_logger

__all__ = [
    "DEFAULT_SEGMENTATION_DIR",
    "MAT_FIELDS",
    "DatasetFormatError",
    "DatasetSource",
    "PlaceFilename",
    "check_segmentation_dir",
    "find_mat_file",
    "mat_file_for_split",
    "open_dataset",
    "open_dataset_with_source",
    "parse_place_filename",
    "read_folder_dataset",
    "read_mat_dataset",
]

log = get_logger("data.readers")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SUBSETS = ("database", "queries")
DEFAULT_SEGMENTATION_DIR = "segmentation"
# Folders of the dataset root that hold something else: maps written there would mix with it.
_RESERVED_DIRS = {"images", "queries_real", "datasets"}


def check_segmentation_dir(segmentation_dir: str) -> str:
    """Return ``segmentation_dir`` if it is a usable maps-folder name, else raise ``ValueError``.

    It must be one plain folder name inside the dataset root (no path separators,
    not ``.``/``..``, not hidden, not a folder that holds images).
    """
    name = str(segmentation_dir)
    if not name or "/" in name or "\\" in name or name in {".", ".."} or name.startswith(".") or name in _RESERVED_DIRS:
        raise ValueError(
            f"segmentation_dir: expected one folder name inside the dataset root, e.g. "
            f"{DEFAULT_SEGMENTATION_DIR!r} or 'segmentation-predicted', got {segmentation_dir!r}"
        )
    return name


@dataclass
class _Subset:
    """Database or queries of one split while a reader assembles it."""

    paths: list[Path]
    relative: list[Path]  # mirrored by the segmentation tree
    utm: np.ndarray
    notes: list[str] | None = None


def read_folder_dataset(
    root: str | Path,
    split: str = "test",
    skip_bad_images: bool = False,
    segmentation_dir: str = DEFAULT_SEGMENTATION_DIR,
) -> PlaceDataset:
    """Read ``ROOT/images/<split>/{database,queries}`` (files in sorted path order).

    Maps come from ``ROOT/<segmentation_dir>/<split>/`` (see the module docstring).
    """
    segmentation_dir = check_segmentation_dir(segmentation_dir)
    root = Path(root)
    split_dir = root / "images" / split
    if not split_dir.is_dir():
        images_dir = root / "images"
        present = sorted(p.name for p in images_dir.iterdir() if p.is_dir()) if images_dir.is_dir() else []
        raise DatasetFormatError(
            f"no folder {split_dir} (folder format: ROOT/images/<split>/{{database,queries}}/); "
            f"splits present: {', '.join(present) if present else 'none'}"
        )
    subsets = {}
    zones: list[str] = []
    named: list[Path] = []
    for label in SUBSETS:
        folder = split_dir / label
        if not folder.is_dir():
            raise DatasetFormatError(f"no folder {folder} (each split needs database/ and queries/)")
        relative = list_images(folder)
        if not relative:
            raise DatasetFormatError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        paths = [folder / r for r in relative]
        parsed = [parse_place_filename(p) for p in paths]
        utm = np.array([(p.east, p.north) for p in parsed], dtype=np.float64)
        subsets[label] = _Subset(paths, relative, utm, [p.note for p in parsed])
        zones += [p.zone for p in parsed]
        named += paths
    source = DatasetSource("folder", split_dir)
    dataset = _assemble(root.resolve().name, root, split, subsets, skip_bad_images, source, segmentation_dir)
    # The one UTM zone the file names give, else None. Names in several zones (or with a malformed zone) are
    # warned about rather than refused, as this reader always opened them; their metres do not compare.
    try:
        parsed_zones = [parse_zone(z, str(p)) if z and z[0].isdigit() else None for z, p in zip(zones, named)]
        zone = check_one_zone(parsed_zones, named, str(split_dir))
    except DatasetFormatError as error:
        log.warning("%s", error)
        zone = None
    dataset.utm_zone = None if zone is None else str(zone)
    return dataset


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` as sorted relative paths; hidden files (``._x.jpg`` of macOS) are skipped."""
    found = [
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: p.as_posix())


def find_mat_file(root: str | Path, split: str = "test", name: str | None = None) -> Path:
    """The NetVLAD ``<name>_<split>.mat`` in ``root`` or ``root/datasets`` (e.g. ``pitts30k_test.mat``).

    ``name`` (e.g. ``pitts30k``) chooses among several sets in one folder, as
    the NetVLAD release keeps ``pitts30k_*.mat`` and ``pitts250k_*.mat`` side by
    side. Raises ``DatasetFormatError`` when none matches, or several and no
    ``name`` tells them apart.
    """
    root = Path(root)
    candidates = _mat_candidates(root, split, name)
    if not candidates:
        pattern = f"{name or '*'}_{split}.mat"
        present = sorted({_mat_set_name(p) for p in _mat_candidates(root, split)})
        hint = f"; sets with split {split!r} there: {', '.join(present)}" if name and present else ""
        if not present:
            hint += _other_mat_files_hint(root)
        raise DatasetFormatError(f"no NetVLAD structure file {pattern} in {root} or {root / 'datasets'}{hint}")
    if len(candidates) > 1:
        names = sorted({_mat_set_name(p) for p in candidates})
        choice = (
            f"choose one by dataset name ({', '.join(names)})"
            if len(names) > 1 and not name
            else "pass the one to use as the dataset path"
        )
        raise DatasetFormatError(
            f"several NetVLAD structure files match split {split!r}: {', '.join(map(str, candidates))}; {choice}"
        )
    return candidates[0]


def _other_mat_files_hint(root: Path) -> str:
    """Names the ``.mat`` files of ``root`` that no ``<name>_<split>.mat`` pattern matched, and how to open them."""
    others = sorted(p.name for p in glob_mat_files(root, "*.mat"))
    if not others:
        return ""
    return (
        f"; .mat files there: {', '.join(others[:5])} (a file not named <name>_<split>.mat, such as "
        "tokyo247.mat, opens as the dataset path itself, or by its name as the dataset name)"
    )


def glob_mat_files(root: Path, *patterns: str) -> list[Path]:
    """The files of ``root`` and ``root/datasets`` (where NetVLAD keeps them) matching one of ``patterns``, sorted."""
    folders = [folder for folder in (root, root / "datasets") if folder.is_dir()]
    return sorted({p for folder in folders for pattern in patterns for p in folder.glob(pattern)})


def _mat_candidates(root: Path, split: str, name: str | None = None) -> list[Path]:
    # Else a set with one file and no split in its name, such as Tokyo 24/7's tokyo247.mat.
    return glob_mat_files(root, f"{name or '*'}_{split}.mat") or (glob_mat_files(root, f"{name}.mat") if name else [])


def _mat_set_name(path: Path) -> str:
    """``pitts30k`` for ``pitts30k_test.mat``: the file name without its ``_<split>`` suffix."""
    return path.stem.rsplit("_", 1)[0]


# How a listed image may be spelled on disk: Tokyo 24/7 lists .jpg for files saved as .png.
_SUFFIX_ALTERNATIVES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def _resolve_listed(relative: Path, roots: list[Path]) -> Path | None:
    """The file a ``.mat`` file's relative path names: under the first root holding it as listed,
    else with another image suffix; ``None`` when there is none."""
    alternatives = _SUFFIX_ALTERNATIVES if relative.suffix.lower() in IMAGE_SUFFIXES else ()
    candidates = [root / relative for root in roots]
    candidates += [root / relative.with_suffix(s) for root in roots for s in alternatives if s != relative.suffix]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


@dataclass(frozen=True)
class DatasetSource:
    """Where one split was read from, for logs and reports.

    ``path`` is the ``.mat`` file (``format="mat"``, with its ``whichSet``),
    the split folder ``ROOT/images/<split>`` (``format="folder"``) or the
    database folder of two folders (``format="folders"``, with
    ``queries_path`` and the ``positions`` file, if any).
    """

    format: Literal["folder", "mat", "folders", "msls", "vprbench", "gsv-lists"]
    path: Path
    which_set: str | None = None
    queries_path: Path | None = None
    positions: Path | None = None

    def __str__(self) -> str:
        if self.format == "mat":
            return f"{self.path} (whichSet {self.which_set!r})"
        if self.format == "folders":
            positions = f"positions from {self.positions}" if self.positions else "positions from the file names"
            return f"database {self.path}, queries {self.queries_path} ({positions})"
        if self.format in ("msls", "vprbench", "gsv-lists"):
            return f"{self.path} ({self.format} layout)"
        return f"{self.path} (folder format)"

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (paths as text); ``queries_path`` and ``positions`` for two folders only."""
        record: dict[str, Any] = {"format": self.format, "path": str(self.path), "which_set": self.which_set}
        if self.format == "folders":
            record["queries_path"] = None if self.queries_path is None else str(self.queries_path)
            record["positions"] = None if self.positions is None else str(self.positions)
        return record


def mat_file_for_split(mat_path: str | Path, split: str | None) -> Path:
    """The ``.mat`` file holding ``split``, given one file of the set.

    ``<name>_<own>.mat`` whose own split (its ``whichSet``, else the name's
    suffix) differs from ``split`` gives the sibling ``<name>_<split>.mat`` in
    the same folder, so that ``pitts30k_train.mat`` with split ``val`` is
    ``pitts30k_val.mat``. ``split=None`` keeps the file. Raises
    ``DatasetFormatError`` naming the sibling when it does not exist, or the
    file's ``whichSet`` when no sibling can be derived from the file name.
    """
    mat_path = Path(mat_path)
    if split is None:
        return mat_path
    return _file_for_split(mat_path, _mat_own_split(mat_path, load_db_struct(mat_path)), split)


def _file_for_split(mat_path: Path, own: str, split: str) -> Path:
    """``mat_path`` when it holds ``split`` (its own split is ``own``), else its ``<name>_<split>.mat`` sibling."""
    if own == split:
        return mat_path
    if not mat_path.stem.endswith(f"_{own}"):
        raise DatasetFormatError(
            f"{mat_path}: holds split {own!r} (dbStruct.whichSet), not the {split!r} asked for, and its name is not "
            f"<name>_{own}.mat, so no {split!r} file beside it can be inferred; pass the {split!r} file itself"
        )
    sibling = mat_path.with_name(f"{mat_path.stem[: -len(own)]}{split}{mat_path.suffix}")
    if not sibling.is_file():
        raise DatasetFormatError(
            f"split {split!r} asked for with {mat_path} (split {own!r}), but its sibling {sibling} does not exist"
        )
    return sibling


def _mat_own_split(mat_path: Path, struct: dict[str, Any]) -> str:
    """The split a file holds: its ``whichSet``, else the suffix of ``<name>_<split>.mat``."""
    return _mat_string(struct["whichSet"], "whichSet", mat_path) or mat_path.stem.rsplit("_", 1)[-1]


def read_mat_dataset(
    mat_path: str | Path,
    image_root: str | Path | None = None,
    skip_bad_images: bool = False,
    split: str | None = None,
    segmentation_dir: str = DEFAULT_SEGMENTATION_DIR,
    queries_root: str | Path | None = None,
) -> PlaceDataset:
    """Read a NetVLAD ``dbStruct`` file (Pittsburgh layout; MATLAB v5, v7 or v7.3).

    ``image_root`` defaults to the folder holding ``datasets/`` when the file lies
    in a ``datasets`` folder, else to the file's folder. Database paths are
    relative to it; query paths to it too when the file is there (Tokyo 24/7's
    ``247query_v3/...``), else to ``image_root/queries_real`` (Pittsburgh), or
    to ``queries_root`` alone when given. A listed image missing under its own
    suffix is looked for with the other image suffixes (Tokyo 24/7 lists
    ``.jpg`` for ``.png`` files). The split is the file's ``whichSet``; when
    ``split`` is given, a ``whichSet`` that differs raises
    ``DatasetFormatError`` naming the file and both values. A listed image that
    does not exist raises ``FileNotFoundError`` naming it, unless
    ``skip_bad_images`` drops it.
    """
    return _read_mat(
        Path(mat_path), image_root, skip_bad_images, split, segmentation_dir=segmentation_dir, queries_root=queries_root
    )[0]


def _read_mat(
    mat_path: Path,
    image_root: str | Path | None,
    skip_bad_images: bool,
    split: str | None,
    struct: dict[str, Any] | None = None,
    segmentation_dir: str = DEFAULT_SEGMENTATION_DIR,
    queries_root: str | Path | None = None,
) -> tuple[PlaceDataset, DatasetSource]:
    segmentation_dir = check_segmentation_dir(segmentation_dir)
    if struct is None:
        struct = load_db_struct(mat_path)
    if image_root is None:
        image_root = mat_path.parent.parent if mat_path.parent.name == "datasets" else mat_path.parent
    image_root = Path(image_root)
    which_set = _mat_string(struct["whichSet"], "whichSet", mat_path)
    if split is not None and which_set and which_set != split:
        raise DatasetFormatError(
            f"{mat_path}: dbStruct.whichSet is {which_set!r} but split {split!r} was asked for; "
            f"this file does not hold the {split!r} split"
        )
    split = which_set or split or mat_path.stem.rsplit("_", 1)[-1]
    name = mat_path.stem.removesuffix(f"_{split}")

    query_roots = [Path(queries_root)] if queries_root is not None else [image_root, image_root / "queries_real"]
    subsets = {}
    for label, names_field, utm_field, count_field, roots in (
        ("database", "dbImageFns", "utmDb", "numImages", [image_root]),
        ("queries", "qImageFns", "utmQ", "numQueries", query_roots),
    ):
        relative = [Path(n) for n in _mat_strings(struct[names_field], names_field, mat_path)]
        # A 2×N MATLAB matrix of (east; north) → (N, 2).
        listed, expected = len(relative), f"a 2×{len(relative)} numeric matrix (east; north per image)"
        utm = _mat_field(struct[utm_field], utm_field, mat_path, "iuf", lambda a, n=listed: a.shape == (2, n), expected)
        utm = np.ascontiguousarray(utm.T, dtype=np.float64)
        count = _mat_scalar(struct[count_field], count_field, mat_path)
        if count != len(relative):
            raise DatasetFormatError(
                f"{mat_path}: {count_field} is {count:g} but {names_field} lists {len(relative)} images"
            )
        resolved = [_resolve_listed(r, roots) for r in relative]
        missing = [r for r, path in zip(relative, resolved) if path is None]
        if missing and not skip_bad_images:
            looked = " or ".join(str(root / missing[0]) for root in roots)
            raise FileNotFoundError(
                f"{mat_path}: {len(missing)} of {len(relative)} {label} images are missing, first: {looked} "
                f"(also looked for with the suffixes {', '.join(IMAGE_SUFFIXES)}; image root {image_root}; "
                f"use skip_bad_images to leave them out)"
            )
        # A missing image keeps its listed path under the last root; skip_bad_images then drops it.
        paths = [roots[-1] / r if path is None else path for r, path in zip(relative, resolved)]
        subsets[label] = _Subset(paths, relative, utm)
    for field_name in ("posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"):
        _mat_scalar(struct[field_name], field_name, mat_path)
    source = DatasetSource("mat", mat_path, which_set)
    return _assemble(name, image_root, split, subsets, skip_bad_images, source, segmentation_dir), source


def _mat_field(value: Any, field_name: str, mat_path: Path, kinds: str, fits: Any, expected: str) -> np.ndarray:
    """``dbStruct.<field_name>`` as an array of a dtype kind in ``kinds`` for which ``fits(array)`` holds."""
    array = np.asarray(value)
    if array.dtype.kind not in kinds or not fits(array):
        raise DatasetFormatError(
            f"{mat_path}: dbStruct.{field_name} must be {expected}, got {array.dtype} of shape {array.shape}"
        )
    return array


def _mat_string(value: Any, field_name: str, mat_path: Path) -> str:
    array = _mat_field(value, field_name, mat_path, "U", lambda a: a.size <= 1, "a string")
    return str(array.reshape(-1)[0]).strip() if array.size else ""


def _mat_strings(value: Any, field_name: str, mat_path: Path) -> list[str]:
    """A MATLAB cell of strings (or a char matrix) as a list of Python strings."""
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return [str(s).strip() for s in array.reshape(-1)]
    if array.dtype != object:
        raise DatasetFormatError(f"{mat_path}: dbStruct.{field_name} must be a cell of strings, got {array.dtype}")
    return [_mat_string(item, f"{field_name}[{i}]", mat_path) for i, item in enumerate(array.reshape(-1))]


def _mat_scalar(value: Any, field_name: str, mat_path: Path) -> float:
    return float(_mat_field(value, field_name, mat_path, "iuf", lambda a: a.size == 1, "a number").reshape(-1)[0])


def _assemble(
    name: str,
    root: Path,
    split: str,
    subsets: dict[str, _Subset],
    skip_bad_images: bool,
    source: DatasetSource,
    segmentation_dir: str = DEFAULT_SEGMENTATION_DIR,
) -> PlaceDataset:
    maps_split_dir = root / segmentation_dir / split
    # The default folder is optional (a dataset may have no maps); one asked for by name must be there.
    if segmentation_dir != DEFAULT_SEGMENTATION_DIR and not maps_split_dir.is_dir():
        raise DatasetFormatError(
            f"segmentation_dir {segmentation_dir!r} was asked for but {maps_split_dir} does not exist "
            f"(write it with: vprdistill segment --maps-dir {segmentation_dir} ...)"
        )
    # Maps mirror the image tree; they are looked for once the images that cannot be read are left out.
    maps = {label: [maps_split_dir / label / r.with_suffix(".png") for r in s.relative] for label, s in subsets.items()}
    database, queries = subsets["database"], subsets["queries"]
    dataset = PlaceDataset(
        name=name,
        root=root,
        split=split,
        database_paths=database.paths,
        query_paths=queries.paths,
        database_utm=database.utm,
        query_utm=queries.utm,
        database_seg_paths=maps["database"] if maps_split_dir.is_dir() else None,
        query_seg_paths=maps["queries"] if maps_split_dir.is_dir() else None,
        database_notes=_notes_or_none(database.notes),
        query_notes=_notes_or_none(queries.notes),
    )
    if skip_bad_images:
        dataset = keep_readable_images(dataset, skip_bad_images, f"{name}/{split}")
    # All or none: a present split folder must hold a map for every image.
    for label, found in (("database", dataset.database_seg_paths), ("queries", dataset.query_seg_paths)):
        missing = [p for p in found or [] if not p.is_file()]
        if missing:
            raise DatasetFormatError(
                f"segmentation folder {maps_split_dir} exists but {len(missing)} of {len(found)} {label} maps are "
                f"missing, first: {missing[0]} (one PNG per image, mirroring the image tree)"
            )
    log.info("opened %r from %s", dataset, source)
    return dataset


def _notes_or_none(notes: list[str] | None) -> list[str] | None:
    return notes if notes is not None and any(notes) else None


Reader = Literal["auto", "folder", "mat", "msls", "vprbench", "gsv-lists"]


def open_dataset(*args: Any, **kwargs: Any) -> PlaceDataset:
    """The `PlaceDataset` of :func:`open_dataset_with_source` (same arguments), without its source."""
    return open_dataset_with_source(*args, **kwargs)[0]


def open_dataset_with_source(
    path: str | Path,
    split: str | None = "test",
    reader: Reader = "auto",
    skip_bad_images: bool = False,
    image_root: str | Path | None = None,
    name: str | None = None,
    segmentation_dir: str = DEFAULT_SEGMENTATION_DIR,
    queries_root: str | Path | None = None,
) -> tuple[PlaceDataset, DatasetSource]:
    """Open one split of a dataset in either format of METHODS.md §2, and tell which file or folder was read.

    ``path`` is a folder-format root, a root holding ``<name>_<split>.mat`` (in
    it or in ``datasets/``), or a ``.mat`` file. ``reader="auto"`` picks the
    folder format when ``path/images/<split>`` exists, else a ``.mat`` file.

    A ``.mat`` file opens the split asked for: ``pitts30k_train.mat`` with
    ``split="val"`` reads ``pitts30k_val.mat`` beside it (see
    :func:`mat_file_for_split`), and a file whose ``whichSet`` is not ``split``
    is an error. ``split=None`` opens a ``.mat`` file as it is (its own split)
    and a root's ``test`` split. ``name`` (e.g. ``pitts30k``) chooses the set in
    a root holding several; given with a file or a folder-format root, it must
    be that dataset's name. ``skip_bad_images`` checks every image and leaves
    out (with a warning naming each) those that are missing or corrupt.
    ``image_root`` overrides where a ``.mat`` file's relative paths start, and
    ``queries_root`` where its query paths start (see :func:`read_mat_dataset`).
    ``segmentation_dir`` is the maps folder of the root (default ``segmentation``,
    optional; another name, e.g. ``segmentation-predicted``, must exist).
    """
    segmentation_dir = check_segmentation_dir(segmentation_dir)
    path = Path(path).expanduser()
    name = name or None
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if reader == "auto":
        reader = _detect_reader(path, split or "test", name)
    if reader == "folder":
        if image_root is not None or queries_root is not None:
            raise ValueError(
                "image_root and queries_root apply to the .mat reader only; folder-format paths come from the folder"
            )
        if not path.is_dir():
            raise DatasetFormatError(f"{path}: the folder reader needs a dataset root folder, not a file")
        dataset = read_folder_dataset(path, split or "test", skip_bad_images, segmentation_dir)
        if name is not None and dataset.name != name:
            raise DatasetFormatError(
                f"{path}: a folder-format dataset is named after its folder, {dataset.name!r}, "
                f"but dataset name {name!r} was asked for"
            )
        return dataset, DatasetSource("folder", path / "images" / dataset.split)
    if reader == "mat":
        struct = None
        if path.is_dir():
            split = split or "test"
            path, image_root = find_mat_file(path, split, name), image_root or path
        else:
            struct = load_db_struct(path)
            own = _mat_own_split(path, struct)
            file_set = path.stem.removesuffix(f"_{own}")
            if name is not None and file_set != name:
                raise DatasetFormatError(
                    f"{path} is a file of dataset {file_set!r}, not of {name!r} (expected {name}_<split>.mat)"
                )
            if split is not None and own != split:
                path, struct = _file_for_split(path, own, split), None
        return _read_mat(path, image_root, skip_bad_images, split, struct, segmentation_dir, queries_root)
    if reader not in LIST_READERS:
        raise ValueError(f"unknown reader {reader!r}; expected auto, folder, mat, {', '.join(LIST_READERS)}")
    # MSLS (vprdistill.data.msls) and the ground-truth lists readers (vprdistill.data.ground_truth_lists).
    if segmentation_dir != DEFAULT_SEGMENTATION_DIR or queries_root is not None:
        raise ValueError(f"segmentation_dir and queries_root do not apply to the {reader} reader")
    if image_root is not None and reader != "gsv-lists":
        raise ValueError(f"image_root applies to the gsv-lists reader only, not to {reader}")
    if reader == "msls":
        if name not in (None, "msls"):
            raise DatasetFormatError(f"{path}: an MSLS root holds dataset 'msls', not {name!r}")
        # split: val (the 740-query protocol), val-full, train; "test" is refused (no positions).
        return read_msls_split(path, split, skip_bad_images), DatasetSource("msls", msls_split_dir(path))
    if reader == "vprbench":
        return read_vprbench(path, skip_bad_images, name), DatasetSource("vprbench", path)
    folder, set_name = find_gsv_lists(path, name)
    dataset = read_gsv_lists(folder, image_root, set_name, skip_bad_images)
    return dataset, DatasetSource("gsv-lists", folder / f"{set_name}_qImages.npy")


LIST_READERS = ("msls", "vprbench", "gsv-lists")


def _detect_reader(path: Path, split: str, name: str | None = None) -> Reader:
    if path.is_file():
        if path.suffix.lower() == ".mat":
            return "mat"
        if is_gsv_lists_file(path):
            return "gsv-lists"
        raise DatasetFormatError(f"{path} is a file but not a NetVLAD .mat structure file nor a gsv-cities list")
    if (path / "images" / split).is_dir():
        return "folder"
    if _mat_candidates(path, split, name):
        return "mat"
    if is_msls_root(path):
        return "msls"
    if is_vprbench_dir(path):
        return "vprbench"
    if is_gsv_lists_dir(path, name):
        return "gsv-lists"
    raise DatasetFormatError(
        f"no dataset recognised at {path}: looked for {path / 'images' / split}/ (folder format) "
        f"and {name or '*'}_{split}.mat in {path} or {path / 'datasets'} (NetVLAD .mat format), "
        f"train_val/<city>/ (MSLS), ref/ + query/ + ground_truth_new.npy (VPR-Bench) and "
        f"<name>_qImages.npy (gsv-cities lists){_other_mat_files_hint(path)}"
    )

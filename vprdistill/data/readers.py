"""Readers of the two dataset formats of METHODS.md §2, both giving a `PlaceDataset`.

- Folder format: ``ROOT/images/<split>/{database,queries}/*.jpg`` with the UTM
  position and more in each file name:
  ``@east@north@zone@letter@lat@lon@pano@tile@heading@pitch@roll@height@timestamp@note@.jpg``.
- NetVLAD ``.mat`` structure files (Pittsburgh 30k/250k layout): a ``dbStruct``
  listing database paths relative to the image root and query paths relative to
  ``ROOT/queries_real/``.

Segmentation maps, when present, mirror the image tree under
``ROOT/segmentation/<split>/{database,queries}/`` with the image's relative
path and a ``.png`` suffix, for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from vprdistill.data.images import verify_image
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.utils.logging import get_logger

__all__ = [
    "DatasetFormatError",
    "PlaceFilename",
    "find_mat_file",
    "open_dataset",
    "parse_place_filename",
    "read_folder_dataset",
    "read_mat_dataset",
]

log = get_logger("data.readers")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SUBSETS = ("database", "queries")
FILENAME_FIELDS = (
    "east", "north", "zone_number", "zone_letter", "latitude", "longitude", "pano_id",
    "tile_num", "heading", "pitch", "roll", "height", "timestamp", "note",
)  # fmt: skip
MAT_FIELDS = (
    "whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
    "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr",
)  # fmt: skip
_FLOAT_FIELDS = {"latitude", "longitude", "heading", "pitch", "roll", "height"}


@dataclass(frozen=True)
class PlaceFilename:
    """The fields of a folder-format file name; only ``east`` and ``north`` are always present."""

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


def parse_place_filename(name: str | Path) -> PlaceFilename:
    """Parse ``@east@north@...@note@.jpg`` (trailing fields may be left out or empty).

    Raises ``DatasetFormatError`` naming the file and the field on a malformed name.
    """
    file_name = Path(name).name
    parts = file_name.split("@")
    if len(parts) < 4 or parts[0] != "" or (parts[-1] and not parts[-1].startswith(".")):
        raise DatasetFormatError(
            f"{name}: not a folder-format image name; expected '@east@north@...@note@.jpg' "
            "(UTM metres first, fields separated by '@', the extension after the last '@')"
        )
    texts = parts[1:-1]
    if len(texts) > len(FILENAME_FIELDS):
        raise DatasetFormatError(f"{name}: {len(texts)} '@'-separated fields, at most {len(FILENAME_FIELDS)} expected")
    values: dict[str, Any] = {}
    for field_name, text in zip(FILENAME_FIELDS, texts):
        text = text.strip()
        if field_name in ("east", "north"):
            number = _parse_number(text, field_name, name)
            if number is None or not np.isfinite(number):
                raise DatasetFormatError(f"{name}: field {field_name} must be a finite number of metres, got {text!r}")
            values[field_name] = number
        elif field_name in _FLOAT_FIELDS:
            values[field_name] = _parse_number(text, field_name, name)
        elif field_name == "zone_number":
            number = _parse_number(text, field_name, name)
            if number is not None and not float(number).is_integer():
                raise DatasetFormatError(f"{name}: field zone_number must be an integer, got {text!r}")
            values[field_name] = None if number is None else int(number)
        else:
            values[field_name] = text
    return PlaceFilename(**values)


def _parse_number(text: str, field_name: str, name: str | Path) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{name}: field {field_name} is not a number: {text!r}") from None


@dataclass
class _Subset:
    """Database or queries of one split while a reader assembles it."""

    label: str
    paths: list[Path]
    relative: list[Path]  # mirrored by the segmentation tree
    utm: np.ndarray
    notes: list[str] | None = None

    def keep(self, indices: list[int]) -> _Subset:
        return _Subset(
            self.label,
            [self.paths[i] for i in indices],
            [self.relative[i] for i in indices],
            self.utm[indices],
            None if self.notes is None else [self.notes[i] for i in indices],
        )


def read_folder_dataset(root: str | Path, split: str = "test", skip_bad_images: bool = False) -> PlaceDataset:
    """Read ``ROOT/images/<split>/{database,queries}`` (files in sorted path order)."""
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
    for label in SUBSETS:
        folder = split_dir / label
        if not folder.is_dir():
            raise DatasetFormatError(f"no folder {folder} (each split needs database/ and queries/)")
        relative = _list_images(folder)
        if not relative:
            raise DatasetFormatError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        paths = [folder / r for r in relative]
        parsed = [parse_place_filename(p) for p in paths]
        utm = np.array([(p.east, p.north) for p in parsed], dtype=np.float64)
        subsets[label] = _Subset(label, paths, relative, utm, [p.note for p in parsed])
    return _assemble(root.resolve().name, root, split, subsets, skip_bad_images)


def _list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` as sorted relative paths; hidden files (``._x.jpg`` of macOS) are skipped."""
    found = [
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: p.as_posix())


def find_mat_file(root: str | Path, split: str = "test") -> Path:
    """The NetVLAD ``*_<split>.mat`` in ``root`` or ``root/datasets`` (e.g. ``pitts30k_test.mat``).

    Raises ``DatasetFormatError`` when there is none, or several (pass the file itself then).
    """
    root = Path(root)
    candidates = _mat_candidates(root, split)
    if not candidates:
        raise DatasetFormatError(f"no NetVLAD structure file *_{split}.mat in {root} or {root / 'datasets'}")
    if len(candidates) > 1:
        raise DatasetFormatError(
            f"several NetVLAD structure files match split {split!r}: {', '.join(map(str, candidates))}; "
            "pass the one to use as the dataset path"
        )
    return candidates[0]


def _mat_candidates(root: Path, split: str) -> list[Path]:
    return sorted(p for folder in (root, root / "datasets") if folder.is_dir() for p in folder.glob(f"*_{split}.mat"))


def read_mat_dataset(
    mat_path: str | Path, image_root: str | Path | None = None, skip_bad_images: bool = False
) -> PlaceDataset:
    """Read a NetVLAD ``dbStruct`` file (Pittsburgh layout).

    ``image_root`` defaults to the folder holding ``datasets/`` when the file lies
    in a ``datasets`` folder, else to the file's folder. Database paths are
    relative to it, query paths to ``image_root/queries_real``. The split is the
    file's ``whichSet``. A listed image that does not exist raises
    ``FileNotFoundError`` naming it, unless ``skip_bad_images`` drops it.
    """
    mat_path = Path(mat_path)
    struct = _load_db_struct(mat_path)
    if image_root is None:
        image_root = mat_path.parent.parent if mat_path.parent.name == "datasets" else mat_path.parent
    image_root = Path(image_root)
    which_set = _mat_string(struct["whichSet"], "whichSet", mat_path)
    split = which_set or mat_path.stem.rsplit("_", 1)[-1]
    name = mat_path.stem[: -len(f"_{split}")] if mat_path.stem.endswith(f"_{split}") else mat_path.stem

    subsets = {}
    for label, names_field, utm_field, count_field, folder in (
        ("database", "dbImageFns", "utmDb", "numImages", image_root),
        ("queries", "qImageFns", "utmQ", "numQueries", image_root / "queries_real"),
    ):
        relative = [Path(n) for n in _mat_strings(struct[names_field], names_field, mat_path)]
        utm = _mat_utm(struct[utm_field], utm_field, len(relative), mat_path)
        count = _mat_scalar(struct[count_field], count_field, mat_path)
        if count != len(relative):
            raise DatasetFormatError(
                f"{mat_path}: {count_field} is {count:g} but {names_field} lists {len(relative)} images"
            )
        subsets[label] = _Subset(label, [folder / r for r in relative], relative, utm)
    for field_name in ("posDistThr", "posDistSqThr", "nonTrivPosDistSqThr"):
        _mat_scalar(struct[field_name], field_name, mat_path)

    if not skip_bad_images:
        for subset in subsets.values():
            missing = [p for p in subset.paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{mat_path}: {len(missing)} of {len(subset.paths)} {subset.label} images are missing, "
                    f"first: {missing[0]} (image root {image_root}; use skip_bad_images to leave them out)"
                )
    return _assemble(name, image_root, split, subsets, skip_bad_images)


def _load_db_struct(mat_path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    if not mat_path.is_file():
        raise FileNotFoundError(f"NetVLAD structure file {mat_path} does not exist")
    try:
        contents = loadmat(mat_path)
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise DatasetFormatError(
            f"{mat_path}: unsupported MATLAB file version ({exc}); save it with -v7 or older"
        ) from exc
    except Exception as exc:
        raise DatasetFormatError(f"{mat_path} is not a readable MATLAB .mat file: {type(exc).__name__}: {exc}") from exc
    if "dbStruct" not in contents:
        variables = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetFormatError(f"{mat_path}: no variable dbStruct (variables: {', '.join(variables) or 'none'})")
    struct = contents["dbStruct"]
    if struct.dtype.names is None or struct.size != 1:
        raise DatasetFormatError(
            f"{mat_path}: dbStruct is not a single MATLAB struct (dtype {struct.dtype}, shape {struct.shape})"
        )
    missing = [f for f in MAT_FIELDS if f not in struct.dtype.names]
    if missing:
        raise DatasetFormatError(f"{mat_path}: dbStruct lacks field {missing[0]} (all missing: {', '.join(missing)})")
    record = struct.reshape(-1)[0]
    return {f: record[f] for f in MAT_FIELDS}


def _mat_string(value: Any, field_name: str, mat_path: Path) -> str:
    array = np.asarray(value)
    if array.dtype.kind != "U" or array.size > 1:
        raise DatasetFormatError(
            f"{mat_path}: dbStruct.{field_name} must be a string, got {array.dtype} of shape {array.shape}"
        )
    return str(array.reshape(-1)[0]).strip() if array.size else ""


def _mat_strings(value: Any, field_name: str, mat_path: Path) -> list[str]:
    """A MATLAB cell of strings (or a char matrix) as a list of Python strings."""
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return [str(s).strip() for s in array.reshape(-1)]
    if array.dtype != object:
        raise DatasetFormatError(f"{mat_path}: dbStruct.{field_name} must be a cell of strings, got {array.dtype}")
    return [_mat_string(item, f"{field_name}[{i}]", mat_path) for i, item in enumerate(array.reshape(-1))]


def _mat_utm(value: Any, field_name: str, count: int, mat_path: Path) -> np.ndarray:
    """A 2×N MATLAB matrix of (east; north) as an ``(N, 2)`` float64 array."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.shape != (2, count):
        raise DatasetFormatError(
            f"{mat_path}: dbStruct.{field_name} must be a 2×{count} numeric matrix (east; north per image), "
            f"got {array.dtype} of shape {array.shape}"
        )
    return np.ascontiguousarray(array.T, dtype=np.float64)


def _mat_scalar(value: Any, field_name: str, mat_path: Path) -> float:
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 1:
        raise DatasetFormatError(
            f"{mat_path}: dbStruct.{field_name} must be a number, got {array.dtype} of shape {array.shape}"
        )
    return float(array.reshape(-1)[0])


def _assemble(name: str, root: Path, split: str, subsets: dict[str, _Subset], skip_bad_images: bool) -> PlaceDataset:
    if skip_bad_images:
        subsets = {label: _drop_bad_images(subset, f"{name}/{split}") for label, subset in subsets.items()}
    segmentation = _segmentation_paths(root / "segmentation" / split, subsets)
    database, queries = subsets["database"], subsets["queries"]
    dataset = PlaceDataset(
        name=name,
        root=root,
        split=split,
        database_paths=database.paths,
        query_paths=queries.paths,
        database_utm=database.utm,
        query_utm=queries.utm,
        database_seg_paths=None if segmentation is None else segmentation["database"],
        query_seg_paths=None if segmentation is None else segmentation["queries"],
        database_notes=_notes_or_none(database.notes),
        query_notes=_notes_or_none(queries.notes),
    )
    log.info("opened %r", dataset)
    return dataset


def _notes_or_none(notes: list[str] | None) -> list[str] | None:
    return notes if notes is not None and any(notes) else None


def _drop_bad_images(subset: _Subset, where: str) -> _Subset:
    keep = []
    progress = tqdm(subset.paths, desc=f"checking {where} {subset.label}", unit="img", leave=False, disable=None)
    for index, path in enumerate(progress):
        reason = verify_image(path)
        if reason is None:
            keep.append(index)
        else:
            log.warning("skipping unreadable %s image %s: %s", subset.label, path, reason)
    skipped = len(subset.paths) - len(keep)
    if skipped:
        log.warning("skipped %d of %d %s images of %s", skipped, len(subset.paths), subset.label, where)
    return subset.keep(keep)


def _segmentation_paths(split_dir: Path, subsets: dict[str, _Subset]) -> dict[str, list[Path]] | None:
    """Maps mirroring the image tree, all or none: a present split folder must hold a map for every image."""
    if not split_dir.is_dir():
        return None
    found = {}
    for label, subset in subsets.items():
        maps = [split_dir / label / r.with_suffix(".png") for r in subset.relative]
        missing = [p for p in maps if not p.is_file()]
        if missing:
            raise DatasetFormatError(
                f"segmentation folder {split_dir} exists but {len(missing)} of {len(maps)} {label} maps are missing, "
                f"first: {missing[0]} (one PNG per image, mirroring the image tree)"
            )
        found[label] = maps
    return found


Reader = Literal["auto", "folder", "mat"]


def open_dataset(
    path: str | Path,
    split: str = "test",
    reader: Reader = "auto",
    skip_bad_images: bool = False,
    image_root: str | Path | None = None,
) -> PlaceDataset:
    """Open one split of a dataset in either format of METHODS.md §2.

    ``path`` is a folder-format root, a root holding ``*_<split>.mat`` (in it or
    in ``datasets/``), or a ``.mat`` file. ``reader="auto"`` picks the folder
    format when ``path/images/<split>`` exists, else a ``.mat`` file.
    ``skip_bad_images`` checks every image and leaves out (with a warning naming
    each) those that are missing or corrupt. ``image_root`` overrides where a
    ``.mat`` file's relative paths start.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if reader == "auto":
        reader = _detect_reader(path, split)
    if reader == "folder":
        if image_root is not None:
            raise ValueError("image_root applies to the .mat reader only; folder-format paths come from the folder")
        if not path.is_dir():
            raise DatasetFormatError(f"{path}: the folder reader needs a dataset root folder, not a file")
        return read_folder_dataset(path, split, skip_bad_images)
    if reader == "mat":
        if path.is_dir():
            return read_mat_dataset(find_mat_file(path, split), image_root or path, skip_bad_images)
        return read_mat_dataset(path, image_root, skip_bad_images)
    raise ValueError(f"unknown reader {reader!r}; expected auto, folder or mat")


def _detect_reader(path: Path, split: str) -> Reader:
    if path.is_file():
        if path.suffix.lower() == ".mat":
            return "mat"
        raise DatasetFormatError(f"{path} is a file but not a NetVLAD .mat structure file")
    if (path / "images" / split).is_dir():
        return "folder"
    if _mat_candidates(path, split):
        return "mat"
    raise DatasetFormatError(
        f"no dataset recognised at {path}: looked for {path / 'images' / split}/ (folder format) "
        f"and *_{split}.mat in {path} or {path / 'datasets'} (NetVLAD .mat format)"
    )

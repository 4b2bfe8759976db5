"""Readers of datasets whose ground truth is a list of positives per query, giving a `PlaceDataset`.

- VPR-Bench: ``ROOT/ref/*.jpg`` (database), ``ROOT/query/*.jpg`` and
  ``ROOT/ground_truth_new.npy``, a ``(Q, 2)`` object array whose row ``i`` is
  ``[i, [indices of the right ref images]]``. Images are numbered by their
  file name (``0000000.jpg``, ...) and ordered by that number, as VPR-Bench's
  ``evaluate_vpr_techniques.py`` does (only ``*.jpg`` files count there).
- gsv-cities lists: ``<name>_dbImages.npy`` and ``<name>_qImages.npy`` (arrays
  of image paths relative to the dataset's image root) with either
  ``<name>_gt.npy`` (per query, the positive database indices: an object array
  of integer arrays, or a ``(Q, k)`` integer array; later releases name it
  e.g. ``msls_val_gt_25m.npy``) or, as gsv-cities' MSLS-val,
  ``<name>_qIdx.npy`` (the queries evaluated, indices into the query list) and
  ``<name>_pIdx.npy`` (their positives).

These datasets carry no positions: the dataset has ``has_positions=False`` and
its ``query_positives`` are the ground truth (evaluation only; no mining).

Some of these files are object arrays, which NumPy stores as a pickle stream.
They are never unpickled: :func:`load_npy` reads the stream with
``pickletools.genops`` (a parser that executes nothing) and understands only
what such files hold (numbers, strings, lists, tuples and NumPy arrays of
numbers), refusing any other instruction or imported name.
"""

from __future__ import annotations

import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from vprdistill.data.images import readable_indices
from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.utils.logging import get_logger

__all__ = [
    "VPRBENCH_GROUND_TRUTH",
    "find_gsv_lists",
    "is_gsv_lists_dir",
    "is_gsv_lists_file",
    "is_vprbench_dir",
    "keep_readable_images",
    "load_npy",
    "read_gsv_lists",
    "read_vprbench",
]

log = get_logger("data.ground_truth_lists")

VPRBENCH_GROUND_TRUTH = "ground_truth_new.npy"
GSV_SUFFIXES = {"database": "_dbImages.npy", "queries": "_qImages.npy", "gt": "_gt.npy"}
GSV_MSLS_SUFFIXES = {"query_indices": "_qIdx.npy", "positives": "_pIdx.npy"}
# <name>_<list>.npy; the shortest name that leaves a known list suffix (set names hold underscores: msls_val).
_GSV_FILE = re.compile(r"^(?P<name>.+?)_(?:dbImages|qImages|gt|gt_[^.]+|qIdx|pIdx)\.npy$")


# ---------------------------------------------------------------- .npy without unpickling


class _Global(str):
    """A name a pickle stream imports (what it stands for, a value of :data:`_GLOBALS`, the only ones accepted)."""


# (module, name) -> what the name stands for. numpy._core is NumPy 2's name for numpy.core.
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("builtins", "range"): "range",
    ("__builtin__", "xrange"): "range",
    ("_codecs", "encode"): "encode",  # how Python 3 writes bytes at pickle protocol 2
}
# NumPy kinds an array inside such a file may have: bool, integers, floats, objects (lists of arrays).
_ARRAY_KINDS = "biufO"
_MAX_RANGE = 10**7
# Encodings Python 3 names when it writes bytes at pickle protocol 2.
_BYTE_ENCODINGS = {"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"}


class _ArrayStub:
    """An array created by ``_reconstruct`` and filled in by its ``BUILD`` state."""

    value: np.ndarray | None = None


class _DtypeStub:
    """A dtype created from its type string (``i8``, ``O8``...); its ``BUILD`` state sets the byte order."""

    def __init__(self, descr: str, where: str) -> None:
        try:
            self.value = np.dtype(descr)  # a type string names a type; nothing is imported or run
        except TypeError:
            raise DatasetFormatError(f"{where}: unknown dtype {descr!r} in the stored object array") from None
        if self.value.kind not in _ARRAY_KINDS:
            raise DatasetFormatError(f"{where}: holds an array of dtype {descr!r}; only numbers and objects are read")


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _call(function: _Global, args: tuple, where: str) -> Any:
    """``REDUCE``: the few calls such files make, done here without importing anything."""
    kind = str(function)
    if kind == "reconstruct":
        return _ArrayStub()
    if kind == "dtype":
        return _DtypeStub(_text(args[0]), where)
    if kind == "scalar":
        dtype = args[0].value if isinstance(args[0], _DtypeStub) else None
        data = args[1].encode("latin-1") if isinstance(args[1], str) else args[1]
        if dtype is None or dtype.kind not in "biuf" or not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise DatasetFormatError(f"{where}: malformed NumPy scalar in the stored object array")
        return np.frombuffer(data, dtype=dtype)[0].item()
    if kind == "range":
        values = range(*[int(a) for a in args])
        if len(values) > _MAX_RANGE:
            raise DatasetFormatError(f"{where}: a stored range of {len(values)} values is implausibly long")
        return list(values)
    if kind == "encode":
        encoding = str(args[1]).lower() if len(args) > 1 else "utf-8"
        if encoding not in _BYTE_ENCODINGS:
            raise DatasetFormatError(f"{where}: stored bytes in an unexpected encoding {encoding!r}")
        return str(args[0]).encode(encoding)
    raise DatasetFormatError(f"{where}: {kind} cannot be called")


def _build(target: Any, state: Any, where: str) -> Any:
    """``BUILD``: NumPy's ``__setstate__`` of an array or a dtype, as plain data."""
    if isinstance(target, _DtypeStub):
        # dtype state: (version, byte order, subarray, names, fields, elsize, alignment, flags)
        order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else "|"
        if order in "<>":
            target.value = target.value.newbyteorder(order)
        return target
    if isinstance(target, _ArrayStub):
        if not isinstance(state, tuple) or len(state) != 5:
            raise DatasetFormatError(f"{where}: malformed NumPy array state in the stored object array")
        _, shape, dtype, fortran, data = state
        if not isinstance(dtype, _DtypeStub):
            raise DatasetFormatError(f"{where}: a stored array has no dtype")
        shape = tuple(int(n) for n in shape)
        count = int(np.prod(shape, dtype=np.int64))
        order = "F" if fortran else "C"
        if dtype.value.kind == "O":
            if not isinstance(data, list) or len(data) != count:
                raise DatasetFormatError(f"{where}: an object array of shape {shape} does not hold {count} items")
            array = np.empty(count, dtype=object)
            for index, item in enumerate(data):  # one by one: a slice assignment would broadcast nested arrays
                array[index] = _plain(item)
            target.value = array.reshape(shape, order=order)
        else:
            raw = data.encode("latin-1") if isinstance(data, str) else data  # Python 2 wrote bytes as str
            if not isinstance(raw, bytes) or len(raw) != count * dtype.value.itemsize:
                raise DatasetFormatError(f"{where}: a stored {dtype.value} array of shape {shape} has the wrong size")
            target.value = np.frombuffer(raw, dtype=dtype.value).reshape(shape, order=order).copy()
        return target
    raise DatasetFormatError(f"{where}: the stored object array sets the state of something other than an array")


def _plain(value: Any) -> Any:
    """Replace the stubs by the arrays they stand for, inside lists and tuples too."""
    if isinstance(value, (_ArrayStub, _DtypeStub)):
        return value.value  # an object array's items were made plain when it was built
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


# The opcodes that push their argument (a number, a string or bytes), from pickletools' own table of opcodes.
_PUSH_ARG = {
    op.name
    for op in pickletools.opcodes
    if op.arg is not None
    and not op.stack_before
    and len(op.stack_after) == 1
    and op.stack_after[0].name in {"int", "int_or_bool", "float", "str", "bytes", "bytes_or_str"}
}
_IGNORED = {"PROTO", "FRAME"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}


def _decode_pickle(data: bytes, where: str) -> Any:
    """The value of a pickle stream made of plain data and NumPy arrays, computed without unpickling."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        if not marks:
            raise DatasetFormatError(f"{where}: malformed pickle stream (no MARK)")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in _IGNORED:
                continue
            if name == "STOP":
                if len(stack) != 1:
                    raise DatasetFormatError(f"{where}: malformed pickle stream")
                return _plain(stack[0])
            if name in _PUSH_ARG:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, attribute = str(arg).partition(" ")
                else:
                    attribute, module = str(stack.pop()), str(stack.pop())  # the name is on top
                kind = _GLOBALS.get((module, attribute))
                if kind is None:
                    raise DatasetFormatError(
                        f"{where}: the stored object array refers to {module}.{attribute}, which is not read "
                        "(only NumPy arrays of numbers, lists and numbers are)"
                    )
                stack.append(_Global(kind))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[int(arg)])
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                size = int(name[-1])
                items = tuple(stack[-size:])
                del stack[-size:]
                stack.append(items)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name in ("TUPLE", "LIST"):
                items = pop_mark()
                stack.append(tuple(items) if name == "TUPLE" else items)
            elif name == "APPEND":
                item = stack.pop()
                _list(stack[-1], where).append(item)
            elif name == "APPENDS":
                items = pop_mark()
                _list(stack[-1], where).extend(items)
            elif name == "REDUCE":
                args = stack.pop()
                function = stack.pop()
                if not isinstance(function, _Global) or not isinstance(args, tuple):
                    raise DatasetFormatError(f"{where}: malformed pickle stream (REDUCE)")
                stack.append(_call(function, args, where))
            elif name == "BUILD":
                state = stack.pop()
                stack.append(_build(stack.pop(), state, where))
            else:
                raise DatasetFormatError(
                    f"{where}: the stored object array uses pickle instruction {name}, which is not read "
                    "(only NumPy arrays of numbers, lists and numbers are)"
                )
    except DatasetFormatError:
        raise
    # RecursionError: a list that holds itself (memo references can build one).
    except (ValueError, IndexError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise DatasetFormatError(f"{where}: malformed object array ({type(exc).__name__}: {exc})") from exc
    raise DatasetFormatError(f"{where}: the pickle stream of the object array ends without STOP")


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise DatasetFormatError(f"{where}: malformed pickle stream (APPEND to something not a list)")
    return value


def load_npy(path: str | Path) -> np.ndarray:
    """Load a ``.npy`` file, object arrays included, without unpickling anything.

    Arrays of numbers and strings are read by NumPy with ``allow_pickle=False``;
    an object array's pickle stream is decoded by a reader that knows only
    numbers, strings, lists, tuples and NumPy arrays of numbers (see the module
    docstring), so a file cannot run code. Raises ``DatasetFormatError`` naming
    the file for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with open(path, "rb") as handle:
        try:
            # NumPy's own header parser (a dict literal, read with literal_eval); 3.0 differs from 2.0 in its encoding only.
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            if dtype.kind != "O":
                handle.seek(0)
                return np.load(handle, allow_pickle=False)
        except ValueError as exc:  # a bad magic string or header, or e.g. a structured dtype with an object field
            raise DatasetFormatError(f"{path}: unreadable .npy file ({exc})") from exc
        data = handle.read()
    value = _decode_pickle(data, str(path))
    if not isinstance(value, np.ndarray):
        raise DatasetFormatError(f"{path}: the stored object is a {type(value).__name__}, not an array")
    if value.shape != shape:
        raise DatasetFormatError(f"{path}: the stored array has shape {value.shape}, the header says {shape}")
    return value


# ---------------------------------------------------------------- positives as arrays


def _positives_row(value: Any, where: str, num_database: int) -> np.ndarray:
    """One query's positives (a list, an array or one integer) as a sorted int64 array inside the database."""
    array = np.asarray(value if not isinstance(value, (int, np.integer)) else [value])
    if array.dtype == object:
        try:
            array = np.asarray([int(v) for v in array.reshape(-1)], dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{where}: positives must be database indices, got {value!r}") from exc
    if array.size and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DatasetFormatError(f"{where}: positives must be whole database indices, got {array[:5].tolist()}")
    elif array.size and array.dtype.kind not in "iub":
        raise DatasetFormatError(f"{where}: positives must be database indices, got dtype {array.dtype}")
    array = array.astype(np.int64).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= num_database):
        bad = int(array.min() if array.min() < 0 else array.max())
        raise DatasetFormatError(
            f"{where}: database index {bad} is outside the {num_database} database images [0, {num_database})"
        )
    return np.unique(array)


def _positives_table(values: np.ndarray, path: Path, num_queries: int, num_database: int) -> list[np.ndarray]:
    """Per query, its positives, from a gsv-cities gt/pIdx array: object (Q,) or integer (Q,) / (Q, k)."""
    if values.dtype != object and values.ndim not in (1, 2):
        raise DatasetFormatError(f"{path}: expected one row of positives per query, got shape {values.shape}")
    if len(values) != num_queries:
        raise DatasetFormatError(f"{path}: {len(values)} rows of positives for {num_queries} queries")
    return [_positives_row(row, f"{path} row {i}", num_database) for i, row in enumerate(values)]


# ---------------------------------------------------------------- images


def keep_readable_images(dataset: PlaceDataset, skip_bad_images: bool, where: str) -> PlaceDataset:
    """``dataset`` if all its images are there; else raise naming the first missing one.

    With ``skip_bad_images`` every image is checked (:func:`~vprdistill.data.images.verify_image`)
    and unreadable ones are left out with a warning each; explicit positives follow
    the database images to their new indices (``PlaceDataset.subset``).
    """
    labelled = (("database", dataset.database_paths), ("query", dataset.query_paths))
    if not skip_bad_images:
        for label, paths in labelled:
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{where}: {len(missing)} of {len(paths)} {label} images are missing, first: {missing[0]} "
                    "(use skip_bad_images to leave them out)"
                )
        return dataset
    keep = {label: np.asarray(readable_indices(paths, label, where), dtype=np.int64) for label, paths in labelled}
    if len(keep["database"]) == dataset.num_database and len(keep["query"]) == dataset.num_queries:
        return dataset
    if not len(keep["database"]) or not len(keep["query"]):
        raise DatasetFormatError(f"{where}: no readable {'database' if not len(keep['database']) else 'query'} image")
    return dataset.subset(query_indices=keep["query"], database_indices=keep["database"])


def _without_positions(
    name: str,
    root: Path,
    database: list[Path],
    queries: list[Path],
    positives: list[np.ndarray],
    skip_bad_images: bool,
    where: str | None = None,
) -> PlaceDataset:
    """The ``test`` split of a dataset whose ground truth is ``positives``, without positions, images checked."""
    dataset = PlaceDataset(
        name=name,
        root=root,
        split="test",
        database_paths=database,
        query_paths=queries,
        database_utm=np.zeros((len(database), 2)),
        query_utm=np.zeros((len(queries), 2)),
        query_positives=positives,
        has_positions=False,
    )
    return keep_readable_images(dataset, skip_bad_images, str(root) if where is None else where)


# ---------------------------------------------------------------- VPR-Bench


def is_vprbench_dir(path: Path) -> bool:
    """Whether ``path`` looks like a VPR-Bench dataset folder (``ref/``, ``query/``, ``ground_truth_new.npy``)."""
    return (path / VPRBENCH_GROUND_TRUTH).is_file() and (path / "ref").is_dir() and (path / "query").is_dir()


def _numbered_jpgs(folder: Path) -> list[Path]:
    """``*.jpg`` of ``folder`` ordered by the number of their name, as VPR-Bench orders them."""
    if not folder.is_dir():
        raise DatasetFormatError(
            f"no folder {folder} (VPR-Bench layout: ROOT/ref/, ROOT/query/, ROOT/{VPRBENCH_GROUND_TRUTH})"
        )
    files = [p for p in folder.glob("*.jpg") if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise DatasetFormatError(f"no .jpg images in {folder}")
    numbers = []
    for path in files:
        stem = path.name.split(".")[0]
        if not stem.isdigit():
            raise DatasetFormatError(
                f"{path}: VPR-Bench numbers its images by file name (0000000.jpg, ...), "
                f"and {path.name!r} is not a number"
            )
        numbers.append(int(stem))
    if len(set(numbers)) != len(numbers):
        raise DatasetFormatError(f"{folder}: two images carry the same number")
    others = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.suffix != ".jpg"]
    if others:
        # VPR-Bench globs '*.jpg': other images are not part of its index numbering.
        log.warning("%s: %d images other than *.jpg (e.g. %s) are not part of VPR-Bench's numbering; left out",
                    folder, len(others), others[0].name)  # fmt: skip
    return [path for _, path in sorted(zip(numbers, files))]


def read_vprbench(root: str | Path, skip_bad_images: bool = False, name: str | None = None) -> PlaceDataset:
    """Read a VPR-Bench dataset folder: ``ref/`` (database), ``query/``, ``ground_truth_new.npy``.

    Row ``i`` of the ground truth, ``[i, [ref indices]]``, gives the positives of
    the ``i``-th query (rows may come in any order; the first column says which
    query). The split is ``test``; the name is the folder's unless ``name`` is given.

    Returns:
        A :class:`PlaceDataset` without positions whose ``query_positives`` are the
        lists of the file (``positives(threshold)`` ignores the threshold).
    """
    root = Path(root)
    gt_path = root / VPRBENCH_GROUND_TRUTH
    if not gt_path.is_file():
        raise DatasetFormatError(f"no {VPRBENCH_GROUND_TRUTH} in {root} (VPR-Bench layout: ROOT/ref/, ROOT/query/)")
    database = _numbered_jpgs(root / "ref")
    queries = _numbered_jpgs(root / "query")
    table = load_npy(gt_path)
    if table.ndim != 2 or table.shape[1] != 2:
        raise DatasetFormatError(
            f"{gt_path}: expected a (queries, 2) array of [query index, [ref indices]] rows, got shape {table.shape}"
        )
    if len(table) != len(queries):
        raise DatasetFormatError(f"{gt_path}: {len(table)} rows for the {len(queries)} images in {root / 'query'}")
    positives: list[np.ndarray | None] = [None] * len(queries)
    for row, (query, found) in enumerate(table):
        try:
            query = int(query)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{gt_path} row {row}: the query index is {query!r}, not a number") from None
        if not 0 <= query < len(queries) or positives[query] is not None:
            raise DatasetFormatError(
                f"{gt_path} row {row}: query index {query} is outside [0, {len(queries)}) or given twice"
            )
        positives[query] = _positives_row(found, f"{gt_path} row {row}", len(database))
    dataset = _without_positions(name or root.resolve().name, root, database, queries, positives, skip_bad_images)  # type: ignore[arg-type]
    log.info("opened %r from %s (VPR-Bench layout, %d queries without a positive)", dataset, root,
             sum(len(p) == 0 for p in dataset.positives(0.0)))  # fmt: skip
    return dataset


# ---------------------------------------------------------------- gsv-cities lists


def _gsv_names(folder: Path) -> list[str]:
    suffix = GSV_SUFFIXES["queries"]
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}") if p.is_file())


def is_gsv_lists_file(path: Path) -> bool:
    """Whether ``path`` is named as one of the gsv-cities list files (``<name>_qImages.npy``, ``_gt.npy``...)."""
    try:
        find_gsv_lists(path)
    except DatasetFormatError:
        return False
    return True


def is_gsv_lists_dir(path: Path, name: str | None = None) -> bool:
    """Whether ``path`` holds gsv-cities lists (``<name>_qImages.npy`` and ``<name>_dbImages.npy``)."""
    if not path.is_dir():
        return False
    names = [name] if name else _gsv_names(path)
    return any(
        (path / f"{n}{GSV_SUFFIXES['queries']}").is_file() and (path / f"{n}{GSV_SUFFIXES['database']}").is_file()
        for n in names
    )


def find_gsv_lists(path: str | Path, name: str | None = None) -> tuple[Path, str]:
    """The folder and set name of gsv-cities lists from a folder (and ``name``) or one of the files.

    ``Nordland_qImages.npy`` gives its folder and ``Nordland``. A folder holding
    the lists of several sets needs ``name``. Raises ``DatasetFormatError`` naming what is missing.
    """
    path = Path(path)
    if path.is_file():
        match = _GSV_FILE.match(path.name)
        if match is None:
            raise DatasetFormatError(
                f"{path}: not a gsv-cities list file "
                "(<name>_dbImages.npy, _qImages.npy, _gt.npy, _gt_<x>.npy, _qIdx.npy or _pIdx.npy)"
            )
        own = match["name"]
        if name is not None and own != name:
            raise DatasetFormatError(f"{path} is a list of set {own!r}, not of {name!r}")
        return path.parent, own
    names = _gsv_names(path)
    if name is not None:
        if name not in names:
            raise DatasetFormatError(
                f"no {name}_qImages.npy in {path}; sets there: {', '.join(names) if names else 'none'}"
            )
        return path, name
    if not names:
        raise DatasetFormatError(
            f"{path}: no gsv-cities lists (<name>_qImages.npy, <name>_dbImages.npy, <name>_gt.npy)"
        )
    if len(names) > 1:
        raise DatasetFormatError(f"{path}: several sets of gsv-cities lists ({', '.join(names)}); choose one by name")
    return path, names[0]


def _image_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetFormatError(
            f"no {path} (gsv-cities lists: <name>_dbImages.npy, <name>_qImages.npy, <name>_gt.npy)"
        )
    values = load_npy(path)
    if values.ndim != 1 or values.dtype.kind not in "US":
        raise DatasetFormatError(
            f"{path}: expected a 1-D array of image paths, got {values.dtype} of shape {values.shape}"
        )
    return [_text(v) for v in values.tolist()]


def _gt_file(folder: Path, name: str) -> Path:
    """``<name>_gt.npy``, else the one ``<name>_gt_<something>.npy`` (e.g. ``msls_val_gt_25m.npy``)."""
    exact = folder / f"{name}{GSV_SUFFIXES['gt']}"
    if exact.is_file():
        return exact
    variants = sorted(p for p in folder.glob(f"{name}_gt_*.npy") if p.is_file())
    if len(variants) == 1:
        return variants[0]
    if variants:
        raise DatasetFormatError(
            f"{folder}: several ground-truth files for {name!r} ({', '.join(p.name for p in variants)}) and no "
            f"{exact.name}; keep the one to use"
        )
    raise DatasetFormatError(f"no {exact} (nor {name}_gt_*.npy, nor {name}_qIdx.npy with {name}_pIdx.npy)")


def read_gsv_lists(
    path: str | Path,
    image_root: str | Path | None = None,
    name: str | None = None,
    skip_bad_images: bool = False,
) -> PlaceDataset:
    """Read gsv-cities evaluation lists (``<name>_dbImages.npy``, ``_qImages.npy``, ``_gt.npy``).

    Args:
        path: the folder holding the lists, or one of the files.
        image_root: the folder the listed paths are relative to (gsv-cities'
            ``DATASET_ROOT``, e.g. a VPR-Bench dataset folder holding ``ref/`` and
            ``query/``, or the MSLS root holding ``train_val/``); default the lists' folder.
        name: the set (``Nordland``, ``msls_val``...) when the folder holds several.
        skip_bad_images: leave out unreadable images instead of raising.

    With ``<name>_qIdx.npy`` and ``<name>_pIdx.npy`` (gsv-cities' MSLS-val) the
    queries are ``qImages[qIdx]`` with positives ``pIdx``; otherwise all of
    ``qImages`` with positives ``gt``. Database and queries keep the lists' order.

    Returns:
        A :class:`PlaceDataset` (split ``test``) without positions whose
        ``query_positives`` are the lists' positives.
    """
    folder, name = find_gsv_lists(path, name)
    image_root = Path(image_root) if image_root is not None else folder
    files = {key: folder / f"{name}{suffix}" for key, suffix in {**GSV_SUFFIXES, **GSV_MSLS_SUFFIXES}.items()}
    database = _image_list(files["database"])
    queries = _image_list(files["queries"])
    if files["query_indices"].is_file() or files["positives"].is_file():
        for key in ("query_indices", "positives"):
            if not files[key].is_file():
                raise DatasetFormatError(f"{files[key]} is missing (the qIdx and pIdx lists come together)")
        chosen = load_npy(files["query_indices"])
        if chosen.ndim != 1 or chosen.dtype.kind not in "iu":
            raise DatasetFormatError(f"{files['query_indices']}: expected a 1-D integer array, got {chosen.dtype}")
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(queries)):
            raise DatasetFormatError(f"{files['query_indices']}: query index outside [0, {len(queries)})")
        queries = [queries[int(i)] for i in chosen]
        gt_file = files["positives"]
    else:
        gt_file = _gt_file(folder, name)
    positives = _positives_table(load_npy(gt_file), gt_file, len(queries), len(database))
    database_paths, query_paths = [image_root / p for p in database], [image_root / p for p in queries]
    dataset = _without_positions(
        name, image_root, database_paths, query_paths, positives, skip_bad_images, f"{folder}/{name}"
    )
    log.info("opened %r from %s (gsv-cities lists, images under %s)", dataset, gt_file, image_root)
    return dataset

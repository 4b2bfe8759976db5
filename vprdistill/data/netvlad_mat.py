"""The ``dbStruct`` of a NetVLAD ``.mat`` structure file, from either MATLAB file format.

MATLAB writes ``.mat`` files in two formats: v5/v7 (read by ``scipy.io.loadmat``)
and v7.3 (``save -v7.3``, an HDF5 file after a 512-byte header, read here with
h5py). Both come out in the shapes ``scipy.io.loadmat`` gives, so the reader
checks and uses one form:

- char arrays: a ``str`` numpy array, one string per row of the MATLAB matrix;
- cell arrays: an object array of the converted elements, in MATLAB's shape;
- numbers and logicals: a numpy array in MATLAB's shape (``2×N`` stays ``2×N``).

In a v7.3 file a struct is an HDF5 group (attribute ``MATLAB_class`` =
``struct``) with one dataset per field. HDF5 stores arrays in row-major order
and MATLAB in column-major, so every array is written transposed: a ``2×N``
matrix is an ``(N, 2)`` dataset, the char row ``'test'`` a ``(4, 1)`` uint16
dataset of UTF-16 code units. A cell array is a dataset of object references
to the elements, which live in the group ``#refs#``. An empty array is stored
as its dimensions with the attribute ``MATLAB_empty``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vprdistill.data.place_dataset import DatasetFormatError

__all__ = ["MAT_FIELDS", "is_mat_v73", "load_db_struct"]

MAT_FIELDS = (
    "whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
    "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr",
)  # fmt: skip
# double, single, logical and the integer classes int8 ... uint64.
_NUMERIC_CLASSES = {"double", "single", "logical", *(f"{u}int{bits}" for u in ("", "u") for bits in (8, 16, 32, 64))}


def is_mat_v73(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file (MATLAB v7.3), by h5py's check of the HDF5 signature (after a user
    block too; MATLAB writes a 512-byte one)."""
    import h5py

    return bool(h5py.is_hdf5(str(path)))


def load_db_struct(mat_path: str | Path) -> dict[str, Any]:
    """The fields ``MAT_FIELDS`` of the file's ``dbStruct``, in ``scipy.io.loadmat`` form (see the module docstring).

    Raises ``FileNotFoundError`` when the file does not exist and
    ``DatasetFormatError`` naming the file (and the field) when it is not a
    MATLAB file, has no single struct ``dbStruct``, or lacks a field.
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"NetVLAD structure file {mat_path} does not exist")
    if is_mat_v73(mat_path):
        return _load_v73(mat_path)
    return _load_v7(mat_path)


def _load_v7(mat_path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        contents = loadmat(mat_path)
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
    _check_fields(mat_path, struct.dtype.names)
    record = struct.reshape(-1)[0]
    return {f: record[f] for f in MAT_FIELDS}


def _check_fields(mat_path: Path, present: Any) -> None:
    missing = [f for f in MAT_FIELDS if f not in present]
    if missing:
        raise DatasetFormatError(f"{mat_path}: dbStruct lacks field {missing[0]} (all missing: {', '.join(missing)})")


def _load_v73(mat_path: Path) -> dict[str, Any]:
    import h5py

    try:
        handle = h5py.File(mat_path, "r")
    except OSError as exc:
        raise DatasetFormatError(f"{mat_path} is not a readable MATLAB v7.3 (HDF5) file: {exc}") from exc
    with handle:
        if "dbStruct" not in handle:
            variables = sorted(k for k in handle if not k.startswith("#"))
            raise DatasetFormatError(f"{mat_path}: no variable dbStruct (variables: {', '.join(variables) or 'none'})")
        group = handle["dbStruct"]
        if not isinstance(group, h5py.Group) or _matlab_class(group) != "struct":
            raise DatasetFormatError(
                f"{mat_path}: dbStruct is not a MATLAB struct (MATLAB_class {_matlab_class(group)!r})"
            )
        _check_fields(mat_path, list(group.keys()))
        fields = {}
        for name in MAT_FIELDS:
            node = group[name]
            # In a struct array each field is a cell-like dataset of references, one per element.
            is_refs = isinstance(node, h5py.Dataset) and h5py.check_dtype(ref=node.dtype) is not None
            if is_refs and _matlab_class(node) != "cell":
                raise DatasetFormatError(
                    f"{mat_path}: dbStruct is a struct array (field {name} holds one value per element); "
                    "expected a single struct"
                )
            fields[name] = _convert(node, handle, f"dbStruct.{name}", mat_path)
        return fields


def _matlab_class(node: Any) -> str:
    value = node.attrs.get("MATLAB_class", b"")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _convert(node: Any, handle: Any, where: str, mat_path: Path, depth: int = 0) -> Any:
    """One MATLAB value of a v7.3 file in ``scipy.io.loadmat`` form."""
    import h5py

    if depth > 8:  # the NetVLAD fields nest one cell deep; deeper is not a structure file
        raise DatasetFormatError(f"{mat_path}: {where} nests cells more than 8 deep")
    matlab_class = _matlab_class(node)
    if isinstance(node, h5py.Group):
        raise DatasetFormatError(
            f"{mat_path}: {where} is a MATLAB {matlab_class or 'group'}, expected a string, cell or number"
        )
    if node.attrs.get("MATLAB_empty", 0):
        # The data is the array's MATLAB dimensions, not its contents.
        dims = tuple(int(d) for d in np.asarray(node[()]).reshape(-1)) or (0, 0)
        if matlab_class == "char":
            return np.empty((0,), dtype="<U1")
        return np.empty(dims, dtype=object if matlab_class == "cell" else np.float64)
    data = np.asarray(node[()])
    if matlab_class == "cell" or h5py.check_dtype(ref=data.dtype) is not None:
        matlab = data.T  # back to MATLAB's dimensions
        cell = np.empty(matlab.shape, dtype=object)
        for index in np.ndindex(matlab.shape):
            ref = matlab[index]
            if not ref:
                raise DatasetFormatError(f"{mat_path}: {where}{list(index)} is a null reference")
            cell[index] = _convert(handle[ref], handle, f"{where}{list(index)}", mat_path, depth + 1)
        return cell
    if matlab_class == "char":
        return _chars(data, where, mat_path)
    if matlab_class in _NUMERIC_CLASSES or (not matlab_class and data.dtype.kind in "iufb"):
        if data.dtype.kind not in "iufb":
            raise DatasetFormatError(f"{mat_path}: {where} is MATLAB {matlab_class} but stored as {data.dtype}")
        return data.T
    raise DatasetFormatError(
        f"{mat_path}: {where} is of MATLAB class {matlab_class!r} (dtype {data.dtype}); "
        "expected char, cell or a numeric class"
    )


def _chars(data: np.ndarray, where: str, mat_path: Path) -> np.ndarray:
    """A MATLAB char matrix (UTF-16 code units, stored transposed) as one string per row."""
    if data.dtype.kind not in "iu":
        raise DatasetFormatError(f"{mat_path}: {where} is MATLAB char but stored as {data.dtype}")
    matlab = np.atleast_2d(data.T).astype("<u2")
    try:
        rows = [row.tobytes().decode("utf-16-le") for row in matlab]
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{mat_path}: {where} is not valid UTF-16 text ({exc})") from exc
    return np.array(rows, dtype=str)

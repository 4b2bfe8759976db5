"""Tiny NetVLAD ``dbStruct`` files (Pittsburgh layout) with their images, written with scipy.io.savemat,
or with h5py in the layout of MATLAB's ``save -v7.3`` (:func:`write_db_struct_v73`)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

DB_UTM = np.array([[100.0, 5000.0], [110.0, 5000.0], [300.0, 5200.0]])
Q_UTM = np.array([[104.0, 5001.0], [900.0, 9000.0]])
DB_NAMES = ["000/000000_pitch1_yaw1.jpg", "000/000001_pitch1_yaw1.jpg", "001/001000_pitch2_yaw3.jpg"]
Q_NAMES = ["000/000000_yaw1.jpg", "000/000001_yaw1.jpg"]


def tiny_jpeg(path: Path, shade: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (shade, 40, 200)).save(path)
    return path


def write_db_struct(path: Path, fields: dict) -> None:
    """A MATLAB struct ``dbStruct`` whose fields keep the given order."""
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[0, 0][name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"dbStruct": struct})


def netvlad_fields(db_names: list[str], q_names: list[str], which_set: str = "test") -> dict:
    return {
        "whichSet": which_set,
        "dbImageFns": np.array([[n] for n in db_names], dtype=object),
        "utmDb": DB_UTM[: len(db_names)].T.copy(),
        "qImageFns": np.array([[n] for n in q_names], dtype=object),
        "utmQ": Q_UTM[: len(q_names)].T.copy(),
        "numImages": len(db_names),
        "numQueries": len(q_names),
        "posDistThr": 25,
        "posDistSqThr": 625,
        "nonTrivPosDistSqThr": 100,
    }


def write_images(root: Path) -> None:
    """Every database image under ``root`` and every query under ``root/queries_real``."""
    for n in DB_NAMES:
        tiny_jpeg(root / n)
    for n in Q_NAMES:
        tiny_jpeg(root / "queries_real" / n)


def write_split(root: Path, file_name: str, which_set: str, num_database: int = 3, num_queries: int = 2) -> Path:
    """``root/datasets/<file_name>`` listing the first database images and queries; returns its path.

    The counts tell the files of a test apart once read.
    """
    path = root / "datasets" / file_name
    write_db_struct(path, netvlad_fields(DB_NAMES[:num_database], Q_NAMES[:num_queries], which_set))
    return path


def make_two_sets(root: Path) -> Path:
    """The NetVLAD release layout: pitts30k and pitts250k, train/val/test each, in one datasets/ folder.

    Query counts tell the files apart: pitts30k train 2, val 1, test 2; pitts250k
    train 1, val 2, test 1; pitts250k's database holds 2 images, pitts30k's 3.
    """
    write_images(root)
    for split, queries in (("train", 2), ("val", 1), ("test", 2)):
        write_split(root, f"pitts30k_{split}.mat", split, num_queries=queries)
    for split, queries in (("train", 1), ("val", 2), ("test", 1)):
        write_split(root, f"pitts250k_{split}.mat", split, num_database=2, num_queries=queries)
    return root


# MATLAB's v7.3 header: 116 bytes of text, 8 bytes of subsystem offset, version 0x0200, endian mark "IM".
_V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_db_struct_v73(path: Path, fields: dict) -> None:
    """``dbStruct`` as MATLAB's ``save -v7.3`` writes it (HDF5 after a 512-byte header).

    A group ``dbStruct`` (``MATLAB_class`` struct) with one dataset per field,
    every array transposed (HDF5 is row-major, MATLAB column-major): a string
    is a ``(len, 1)`` uint16 dataset of UTF-16 code units, a number a ``(1, 1)``
    double, a ``2×N`` matrix an ``(N, 2)`` dataset, and a cell array a dataset
    of object references to its elements, stored in the group ``#refs#``.
    """
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        names = (f"r{i}" for i in itertools.count())
        group = handle.create_group("dbStruct")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        for name, value in fields.items():
            _write_v73(group, name, value, refs, names)
    with open(path, "r+b") as raw:
        raw.write(_V73_HEADER.ljust(116, b" ") + bytes(8) + b"\x00\x02IM")


def _write_v73(parent, name: str, value, refs, names) -> None:
    import h5py

    if isinstance(value, str):
        units = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
        if not units.size:
            dataset = parent.create_dataset(name, data=np.array([1, 0], dtype=np.uint64))
            dataset.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            dataset = parent.create_dataset(name, data=units.reshape(-1, 1))
        dataset.attrs["MATLAB_class"] = np.bytes_("char")
        dataset.attrs["MATLAB_int_decode"] = np.int32(2)
        return
    array = np.asarray(value)
    if array.dtype == object:
        cell = np.atleast_2d(array)
        references = np.empty(cell.shape, dtype=h5py.ref_dtype)
        for index in np.ndindex(cell.shape):
            element = cell[index]
            element = str(np.asarray(element).reshape(-1)[0]) if not isinstance(element, str) else element
            key = next(names)
            _write_v73(refs, key, element, refs, names)
            references[index] = refs[key].ref
        dataset = parent.create_dataset(name, data=references.T)
        dataset.attrs["MATLAB_class"] = np.bytes_("cell")
        return
    matlab = np.atleast_2d(array.astype(np.float64))
    dataset = parent.create_dataset(name, data=matlab.T)
    dataset.attrs["MATLAB_class"] = np.bytes_("double")


TOKYO_DB = ["03814/381408_000.jpg", "03814/381408_001.jpg", "03815/381509_000.jpg"]
TOKYO_Q = ["247query_v3/00001.jpg", "247query_v3/00002.jpg"]


def write_tokyo(root: Path, v73: bool = False, queries_under: Path | None = None) -> Path:
    """Tokyo 24/7 as distributed: ``root/tokyo247.mat`` lists ``.jpg`` database images stored as ``.png``,
    and query paths ``247query_v3/...`` relative to the root (or to ``queries_under``). Returns the .mat path."""
    for name in TOKYO_DB:
        png = (root / name).with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), (30, 140, 60)).save(png)
    for name in TOKYO_Q:
        tiny_jpeg((queries_under or root) / name)
    fields = netvlad_fields(TOKYO_DB, TOKYO_Q, "test")
    path = root / "tokyo247.mat"
    (write_db_struct_v73 if v73 else write_db_struct)(path, fields)
    return path

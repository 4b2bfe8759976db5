"""Tiny NetVLAD ``dbStruct`` files (Pittsburgh layout) with their images, written with scipy.io.savemat."""

from __future__ import annotations

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

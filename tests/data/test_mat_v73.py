"""NetVLAD structure files saved by MATLAB with -v7.3 (HDF5), read with h5py (vprdistill.data.netvlad_mat)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.data.netvlad_files import (
    DB_NAMES,
    Q_NAMES,
    netvlad_fields,
    tiny_jpeg,
    write_db_struct,
    write_db_struct_v73,
    write_images,
)
from vprdistill.data.netvlad_mat import MAT_FIELDS, is_mat_v73, load_db_struct
from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.data.readers import open_dataset_with_source, read_mat_dataset


def pair(tmp_path: Path, fields: dict) -> tuple[Path, Path]:
    """The same dbStruct as a scipy-written (v5) file and as a v7.3 file, beside each other."""
    v5 = tmp_path / "v5" / "pitts30k_test.mat"
    v73 = tmp_path / "v73" / "pitts30k_test.mat"
    write_db_struct(v5, fields)
    write_db_struct_v73(v73, fields)
    return v5, v73


def test_v73_file_is_hdf5_after_matlab_header(tmp_path: Path) -> None:
    v5, v73 = pair(tmp_path, netvlad_fields(DB_NAMES, Q_NAMES))
    assert is_mat_v73(v73) and not is_mat_v73(v5)
    assert v73.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and h5py.is_hdf5(v73)
    with h5py.File(v73, "r") as handle:
        # MATLAB's layout: strings are uint16 columns, cells are references into #refs#, matrices transposed.
        assert handle["dbStruct/whichSet"].dtype == np.uint16 and handle["dbStruct/whichSet"].shape == (4, 1)
        assert h5py.check_dtype(ref=handle["dbStruct/dbImageFns"].dtype) is not None
        assert handle["dbStruct/dbImageFns"].shape == (1, 3) and "#refs#" in handle
        assert handle["dbStruct/utmDb"].shape == (3, 2)


def test_v73_fields_come_out_as_scipy_gives_them(tmp_path: Path) -> None:
    v5, v73 = pair(tmp_path, netvlad_fields(DB_NAMES, Q_NAMES))
    a, b = load_db_struct(v5), load_db_struct(v73)
    assert tuple(a) == tuple(b) == MAT_FIELDS
    for field in MAT_FIELDS:
        x, y = np.asarray(a[field]), np.asarray(b[field])
        assert x.shape == y.shape, field
        if x.dtype == object:
            assert [str(np.asarray(e).reshape(-1)[0]) for e in x.reshape(-1)] == [
                str(np.asarray(e).reshape(-1)[0]) for e in y.reshape(-1)
            ], field
        else:
            assert x.dtype.kind == y.dtype.kind or {x.dtype.kind, y.dtype.kind} <= set("iuf"), field
            np.testing.assert_array_equal(x, y, err_msg=field)


def test_v73_reader_returns_the_same_dataset(tmp_path: Path) -> None:
    fields = netvlad_fields(DB_NAMES, Q_NAMES)
    v5, v73 = pair(tmp_path, fields)
    for root in (v5.parent, v73.parent):
        write_images(root)
    a, b = read_mat_dataset(v5), read_mat_dataset(v73)
    assert (a.name, a.split) == (b.name, b.split) == ("pitts30k", "test")
    assert [p.relative_to(v5.parent) for p in a.database_paths] == [p.relative_to(v73.parent) for p in b.database_paths]
    assert [p.relative_to(v5.parent) for p in a.query_paths] == [p.relative_to(v73.parent) for p in b.query_paths]
    np.testing.assert_array_equal(a.database_utm, b.database_utm)
    np.testing.assert_array_equal(a.query_utm, b.query_utm)
    assert [x.tolist() for x in a.positives(25)] == [x.tolist() for x in b.positives(25)]


def test_v73_split_siblings_and_non_ascii_names(tmp_path: Path) -> None:
    # A root of v7.3 files: the split asked for opens its sibling, names outside ASCII survive UTF-16.
    root = tmp_path / "Zürich"
    names = ["000/straße_0.jpg", "000/東京_1.jpg"]
    for name in names:
        tiny_jpeg(root / name)
    for name in Q_NAMES[:1]:
        tiny_jpeg(root / "queries_real" / name)
    for split in ("train", "val"):
        write_db_struct_v73(root / "datasets" / f"zur_{split}.mat", netvlad_fields(names, Q_NAMES[:1], split))
    dataset, source = open_dataset_with_source(root / "datasets" / "zur_train.mat", split="val")
    assert source.path.name == "zur_val.mat" and source.which_set == "val"
    assert [p.name for p in dataset.database_paths] == ["straße_0.jpg", "東京_1.jpg"]
    dataset, source = open_dataset_with_source(root, split="train")
    assert source.path.name == "zur_train.mat" and dataset.num_database == 2


def test_v73_errors_name_the_file(tmp_path: Path) -> None:
    fields = netvlad_fields(DB_NAMES, Q_NAMES)
    other = tmp_path / "other_test.mat"
    with h5py.File(other, "w", userblock_size=512) as handle:
        handle.create_dataset("something", data=np.zeros((2, 2)))
    with pytest.raises(DatasetFormatError, match=r"other_test.mat: no variable dbStruct \(variables: something\)"):
        load_db_struct(other)

    incomplete = tmp_path / "incomplete_test.mat"
    write_db_struct_v73(incomplete, {k: v for k, v in fields.items() if k != "utmQ"})
    with pytest.raises(DatasetFormatError, match=r"incomplete_test.mat: dbStruct lacks field utmQ"):
        load_db_struct(incomplete)

    # A struct array stores each field as references, one per element, without MATLAB_class cell.
    array = tmp_path / "array_test.mat"
    write_db_struct_v73(array, fields)
    with h5py.File(array, "r+") as handle:
        del handle["dbStruct/whichSet"]
        refs = np.array([[handle["dbStruct/utmDb"].ref]], dtype=h5py.ref_dtype)
        handle["dbStruct"].create_dataset("whichSet", data=refs)
    with pytest.raises(DatasetFormatError, match=r"array_test.mat: dbStruct is a struct array"):
        load_db_struct(array)

    wrong = tmp_path / "wrong_test.mat"
    write_db_struct_v73(wrong, {**fields, "utmDb": np.zeros((3, 3))})
    with pytest.raises(DatasetFormatError, match=r"wrong_test.mat: dbStruct.utmDb must be a 2×3 numeric matrix"):
        read_mat_dataset(wrong)

    broken = tmp_path / "broken_test.mat"
    broken.write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(DatasetFormatError, match=r"broken_test.mat is not a readable MATLAB v7.3"):
        load_db_struct(broken)

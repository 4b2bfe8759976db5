"""`open_dataset` finds MSLS, VPR-Bench and gsv-cities lists by their layout, as `eval --dataset` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data import test_ground_truth_lists as lists_helpers
from tests.data import test_msls as msls_helpers
from vprdistill.data.readers import DatasetFormatError, open_dataset, open_dataset_with_source


def test_msls_root_is_detected_and_its_protocols_open(tmp_path: Path) -> None:
    root = tmp_path / "MSLS"
    for seed, (city, folders) in enumerate(msls_helpers.CITIES.items()):
        for name, rows in folders.items():
            msls_helpers.write_city_folder(root / "train_val" / city / name, rows, seed)
    val, source = open_dataset_with_source(root, split="val")
    full = open_dataset(root, split="val-full", reader="msls")
    assert source.format == "msls"
    # The fixture's val740 rule keeps 4 of its 6 queries (test_msls.py).
    assert (val.num_queries, full.num_queries) == (4, 6)
    with pytest.raises((DatasetFormatError, ValueError)):
        open_dataset(root, split="test")  # MSLS test cities have no positions


def test_vprbench_and_gsv_lists_are_detected(tmp_path: Path) -> None:
    bench = tmp_path / "Toy"
    for i in range(3):
        lists_helpers.write_jpeg(bench / "ref" / f"{i}.jpg", i)
    for i in range(2):
        lists_helpers.write_jpeg(bench / "query" / f"{i}.jpg", 10 + i)
    (bench / "ground_truth_new.npy").write_bytes(lists_helpers.python2_ground_truth([(0, [0]), (1, [1, 2])]))
    dataset, source = open_dataset_with_source(bench)
    assert source.format == "vprbench"
    assert [p.tolist() for p in dataset.positives(25)] == [[0], [1, 2]]

    folder, images = tmp_path / "lists", tmp_path / "images"
    lists_helpers.gsv_set(folder, images)
    np.save(folder / "Toy_gt.npy", np.arange(5).reshape(5, 1))
    from_folder, source = open_dataset_with_source(folder, image_root=images)
    from_file = open_dataset(folder / "Toy_gt.npy", image_root=images)
    assert source.format == "gsv-lists"
    assert [p.tolist() for p in from_file.positives(25)] == [[0], [1], [2], [3], [4]]
    assert from_folder.num_database == from_file.num_database == 10

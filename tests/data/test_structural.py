from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vprdistill.data.structural import IGNORE_ID, StructuralClassMap


def test_default_classes() -> None:
    class_map = StructuralClassMap.from_yaml()
    assert class_map.num_classes == 10
    assert class_map.names == (
        "road", "sidewalk", "building", "wall_fence", "pole_sign",
        "vegetation", "terrain", "sky", "vehicle", "person",
    )  # fmt: skip
    assert class_map.lookup.shape == (256,) and class_map.lookup.dtype == np.uint8


def test_every_cityscapes_train_id_maps_and_void_is_ignored() -> None:
    class_map = StructuralClassMap.from_yaml(source="cityscapes")
    mapped = class_map.map_ids(np.arange(256, dtype=np.uint8))
    assert np.all(mapped[:19] < class_map.num_classes)
    assert np.all(mapped[19:] == IGNORE_ID)
    assert set(mapped[:19].tolist()) == set(range(class_map.num_classes))  # no structural class left unused
    names = class_map.names
    for train_id, expected in ((0, "road"), (4, "wall_fence"), (7, "pole_sign"), (12, "person"), (18, "vehicle")):
        assert names[mapped[train_id]] == expected


def test_one_hot() -> None:
    class_map = StructuralClassMap.from_yaml()
    ids = np.random.default_rng(0).integers(0, 19, size=(9, 11)).astype(np.uint8)
    ids[0, :] = 255
    ids[1, 0] = 200  # not a Cityscapes trainId: ignored too
    one_hot = class_map.one_hot(ids)
    assert one_hot.shape == (10, 9, 11) and one_hot.dtype == torch.float32
    known = class_map.lookup[ids] != IGNORE_ID
    sums = one_hot.sum(dim=0).numpy()
    assert np.all(sums[known] == 1) and np.all(sums[~known] == 0)
    np.testing.assert_array_equal(one_hot.argmax(dim=0).numpy()[known], class_map.map_ids(ids)[known])
    with pytest.raises(ValueError, match="0..255"):
        class_map.map_ids(np.array([[300]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        class_map.one_hot(np.zeros((2, 2, 3), dtype=np.uint8))


def test_bad_yaml_names_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "classes.yaml"
    path.write_text("classes: [road, sky]\nsources:\n  mine:\n    0: road\n    1: river\n")
    with pytest.raises(ValueError, match=r"classes\.yaml.*sources\.mine\.1.*river"):
        StructuralClassMap.from_yaml(path, source="mine")
    with pytest.raises(ValueError, match="no mapping for source 'cityscapes'"):
        StructuralClassMap.from_yaml(path)

"""The structural class map stored with a seg-branch checkpoint, and its use by evaluation and teachers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vprdistill.data.readers import open_dataset
from vprdistill.data.structural import IGNORE_ID, StructuralClassMap
from vprdistill.data.structural_store import class_map_for_model, class_map_from_dict, class_map_to_dict
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.checkpoint import CheckpointError, load_model, save_model
from vprdistill.models.registry import build_model
from vprdistill.train.teacher import FrozenTeacher


def _permuted_map() -> StructuralClassMap:
    """The package's Cityscapes map with its channels in reverse order: same ids, other channels."""
    default = StructuralClassMap.from_yaml(source="cityscapes")
    names = tuple(reversed(default.names))
    lookup = np.full(256, IGNORE_ID, dtype=np.uint8)
    for source_id, index in enumerate(default.lookup):
        if index != IGNORE_ID:
            lookup[source_id] = names.index(default.names[index])
    return StructuralClassMap(names, lookup, "cityscapes")


def test_dict_round_trip_keeps_names_lookup_and_source() -> None:
    for class_map in (StructuralClassMap.from_yaml(), _permuted_map(), StructuralClassMap.identity(4)):
        data = json.loads(json.dumps(class_map_to_dict(class_map)))
        again = class_map_from_dict(data, "test")
        assert again.names == class_map.names and again.source == class_map.source
        np.testing.assert_array_equal(again.lookup, class_map.lookup)
    # Cityscapes trainId 13 (car) is a vehicle, 255 (void) is ignored.
    data = class_map_to_dict(StructuralClassMap.from_yaml())
    assert data["ids"]["13"] == "vehicle" and "255" not in data["ids"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"names": []}, "names"),
        ({"ids": {"300": "road"}}, "ids"),
        ({"ids": {"1": "river"}}, "ids.1"),
        ({"source": 3}, "source"),
    ],
)
def test_bad_stored_maps_name_the_field(change, field) -> None:
    data = dict(class_map_to_dict(StructuralClassMap.from_yaml()), **change)
    with pytest.raises(ValueError, match=f"where.{field}"):
        class_map_from_dict(data, "where")


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory):
    """An untrained seg-branch saved as a run folder with the permuted class map."""
    torch.manual_seed(0)
    model = build_model("structvpr-seg-tiny").eval()
    model.structural_class_map = _permuted_map()
    folder = tmp_path_factory.mktemp("seg-run")
    save_model(model, folder / "best")
    return folder, model


def test_checkpoint_round_trip_and_evaluation_use_the_stored_map(seg_checkpoint, synth_tiny) -> None:
    folder, model = seg_checkpoint
    stored = json.loads((folder / "best.json").read_text())["structural_classes"]
    assert stored["names"] == list(reversed(StructuralClassMap.from_yaml().names))
    loaded = load_model(folder)
    assert loaded.structural_class_map.names == _permuted_map().names
    np.testing.assert_array_equal(loaded.structural_class_map.lookup, _permuted_map().lookup)

    paths = open_dataset(synth_tiny, split="test").query_seg_paths[:6]
    plain = build_model("structvpr-seg-tiny").eval()
    plain.load_state_dict(model.state_dict())
    common = {"image_size": 64, "input_kind": "seg", "progress": False}
    with_stored = compute_descriptors(loaded, paths, **common)
    explicit = compute_descriptors(plain, paths, seg_class_map=_permuted_map(), **common)
    package_map = compute_descriptors(plain, paths, **common)
    np.testing.assert_allclose(with_stored, explicit, atol=1e-6)
    assert not np.allclose(with_stored, package_map, atol=1e-3), "the permuted channels must change descriptors"


def test_a_frozen_seg_teacher_reads_maps_with_the_stored_map(seg_checkpoint, synth_tiny) -> None:
    folder, model = seg_checkpoint
    paths = open_dataset(synth_tiny, split="test").database_seg_paths[:5]
    teacher = FrozenTeacher(folder, input_kind="seg", image_size=(64, 64), device=torch.device("cpu"), progress=False)
    expected = compute_descriptors(
        model, paths, image_size=64, input_kind="seg", seg_class_map=_permuted_map(), progress=False
    )
    np.testing.assert_allclose(teacher.describe_paths(paths).numpy(), expected, atol=1e-6)


def test_models_without_a_stored_map_use_the_package_mapping() -> None:
    model = build_model("structvpr-seg-tiny")
    assert class_map_for_model(model, "cityscapes").names == StructuralClassMap.from_yaml().names
    model.structural_class_map = _permuted_map()
    assert class_map_for_model(model, "cityscapes") is model.structural_class_map
    with pytest.raises(ValueError, match="no mapping for source"):
        class_map_for_model(model, "ade20k")


def test_a_stored_map_that_does_not_fit_the_model_is_refused(tmp_path) -> None:
    model = build_model("structvpr-seg-tiny")
    model.structural_class_map = StructuralClassMap.identity(4)
    save_model(model, tmp_path / "best")
    with pytest.raises(CheckpointError, match="4 classes but the model takes 10"):
        load_model(tmp_path)

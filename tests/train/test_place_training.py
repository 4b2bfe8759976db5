"""Place-batched training through the one loop: multi-similarity alone, and teachers on in-batch tuples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vprdistill.data.synth import generate
from vprdistill.models.checkpoint import load_model, save_model
from vprdistill.models.registry import build_model
from vprdistill.train import loop
from vprdistill.train.config import load_config

SIZE = 32
PLACES, VIEWS = 8, 3


@pytest.fixture(scope="module")
def synth_places(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_places")
    return generate(
        out,
        preset="tiny",
        seed=3,
        image_size=SIZE,
        workers=1,
        progress=False,
        train_places=PLACES,
        views_per_place=VIEWS,
    )


def _config(root: Path, *overrides: str):
    return load_config(
        "baseline/synth-resnet18-gem",
        [
            f"data.dataset={root}",
            f"data.places={root / 'places'}",
            f"data.image_size=[{SIZE}, {SIZE}]",
            "model=resnet18-gem",
            "epochs=1",
            "device=cpu",
            "progress=false",
            "optim.lr=0.001",
            "data.places_per_batch=4",
            "data.views_per_place=3",
            "mining.num_negatives=3",
            "data.max_val_queries=8",
            *overrides,
        ],
    )


def _teacher(folder: Path, preset: str, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model(build_model(preset), folder / "best")
    return folder


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_place_batches_train_with_multi_similarity_and_validate_on_the_dataset(synth_places, tmp_path):
    config = _config(synth_places, "epochs=2")
    torch.manual_seed(0)
    before = build_model({"preset": "resnet18-gem", "image_size": [SIZE, SIZE]})
    result = loop.train(config, tmp_path / "run")
    records = _records(result.run_dir)
    assert [r["steps"] for r in records] == [PLACES // 4] * 2  # one pass over the places per epoch
    assert records[0]["tuples"] == PLACES // 4 * 4 * 3  # images trained on
    assert set(records[0]["loss"]) >= {"ms", "mined_pairs", "total"}
    assert 0.0 < records[0]["loss"]["mined_pairs"] <= 1.0
    assert records[0]["val_recall"] is not None  # validation still comes from data.dataset
    trained = load_model(result.run_dir)
    changed = [
        name
        for name, value in trained.state_dict().items()
        if value.dtype.is_floating_point and not torch.equal(value, before.state_dict()[name])
    ]
    assert changed, "training changed no weight"


def test_same_seed_gives_the_same_place_run(synth_places, tmp_path):
    first = load_model(loop.train(_config(synth_places), tmp_path / "a").run_dir)
    second = load_model(loop.train(_config(synth_places), tmp_path / "b").run_dir)
    assert all(torch.equal(first.state_dict()[k], v) for k, v in second.state_dict().items())


def test_teachers_apply_to_in_batch_tuples_and_their_place_caches_are_kept(synth_places, tmp_path):
    rgb = _teacher(tmp_path / "rgb-teacher", "resnet18-gem", 1)
    seg = _teacher(tmp_path / "seg-teacher", "structvpr-seg-tiny", 2)
    teachers = [
        {"run": str(rgb), "input": "rgb", "loss": {"name": "soft_cross_metric", "w_hard": 0.0}},
        {
            "run": str(seg),
            "input": "seg",
            "loss": {"name": "structural", "w_hard": 0.0, "weighting": {"name": "partition"}},
        },
    ]
    method = yaml.safe_dump({"name": "distill", "teachers": teachers}, default_flow_style=True, width=10_000).strip()
    result = loop.train(_config(synth_places, f"method={method}"), tmp_path / "run")
    terms = _records(result.run_dir)[0]["loss"]
    assert {"ms", "rgb0/soft", "rgb0/cross_metric", "seg1/kl"} <= set(terms)
    caches = sorted((Path(os.environ["VPRDISTILL_CACHE"]) / "teacher_descriptors").glob("*.safetensors"))
    rows = {tuple(load_file(str(c)).keys()) for c in caches}
    assert ("places",) in rows  # the place images' teacher descriptors were cached


def test_place_batch_settings_are_checked(synth_places, tmp_path):
    with pytest.raises(ValueError, match="places_per_batch"):
        _config(synth_places, "data.places_per_batch=1")
    with pytest.raises(ValueError, match="places_per_batch is 99"):
        loop.train(_config(synth_places, "data.places_per_batch=99"), tmp_path / "run")
    with pytest.raises(ValueError, match="multi_similarity needs place batches"):
        loop.train(
            load_config(
                "baseline/synth-resnet18-gem",
                [
                    f"data.dataset={synth_places}",
                    "method={name: triplet, loss: {name: multi_similarity}}",
                    "device=cpu",
                    "progress=false",
                ],
            ),
            tmp_path / "run2",
        )


def test_place_batches_validate_on_two_folders(synth_places, tmp_path):
    """data.database + data.queries (any two folders, @east@north@ names) replace data.dataset's val split."""
    from vprdistill.data.readers import open_dataset

    val = open_dataset(synth_places, split="val")
    config = _config(synth_places, "data.dataset=", f"data.database={val.database_paths[0].parent}",
                     f"data.queries={val.query_paths[0].parent}")  # fmt: skip
    result = loop.train(config, tmp_path / "run")
    (record,) = _records(result.run_dir)
    assert record["val_recall"] is not None
    # The same validation as the split opened as a dataset: the same weights give the same recall.
    reference = loop.train(_config(synth_places), tmp_path / "reference")
    assert _records(reference.run_dir)[0]["val_recall"] == record["val_recall"]


def test_a_seg_input_place_run_without_maps_is_refused_before_training(synth_places, tmp_path):
    empty = synth_places / "places" / "Segmentation-empty"
    empty.mkdir(exist_ok=True)
    config = _config(synth_places, "data.input=seg", "data.places_segmentation_dir=Segmentation-empty")
    with pytest.raises(ValueError, match="needs a class map of every place image"):
        loop.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

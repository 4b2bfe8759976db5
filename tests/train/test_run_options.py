"""Training-loop options on the tiny SynthCity split: mining logs, carried negatives, init_from, stored class maps."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import tiny_config
from vprdistill.data.structural import StructuralClassMap
from vprdistill.data.structural_store import class_map_to_dict
from vprdistill.models.checkpoint import CheckpointError, load_model
from vprdistill.models.registry import build_model
from vprdistill.train.init_from import init_weights_from
from vprdistill.train.loop import train


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def rgb_run(synth_tiny, tmp_path_factory):
    """One epoch of the StructVPR RGB branch, mining refreshed every 10 of the 32 training queries."""
    config = tiny_config(synth_tiny, model="structvpr-rgb-tiny", **{"mining.refresh_every": 10, "mining.margin": 0.0})
    return train(config, tmp_path_factory.mktemp("runs") / "rgb").run_dir


def test_each_mining_round_reports_its_skipped_share(rgb_run):
    (record,) = [json.loads(line) for line in (rgb_run / "metrics.jsonl").read_text().splitlines()]
    rounds = record["mining_rounds"]
    # 32 training queries (all have a positive in the tiny split) in rounds of refresh_every = 10.
    assert [r["queries"] for r in rounds] == [10, 10, 10, 2]
    for r in rounds:
        assert r["skipped_share"] == pytest.approx(r["skipped"] / r["queries"])
    skipped = sum(r["skipped"] for r in rounds)
    assert record["queries_skipped_no_violation"] == skipped
    assert record["queries_skipped_share"] == pytest.approx(skipped / 32)
    # With mining margin 0 an untrained model still leaves some queries with a violating negative.
    assert record["tuples"] == 32 - skipped > 0
    log = (rgb_run / "train.log").read_text()
    assert log.count("mining round") == 4
    assert f"epoch 1, mining round 4: {rounds[3]['skipped']} of 2 queries skipped" in log
    assert "mining: margin 0, rule margin" in log and "loss margin 0.1" in log


def test_init_from_starts_from_the_runs_best_weights(synth_tiny, rgb_run, tmp_path):
    best = load_file(str(rgb_run / "best.safetensors"))
    seen = {}

    def first_step(info):
        # With lr 0 the first step leaves the parameters where init_from put them.
        seen.update({k: v.detach().clone() for k, v in info.model.named_parameters()})
        raise _Stop()

    for name, extra in (("init", {"init_from": str(rgb_run)}), ("fresh", {})):
        config = tiny_config(synth_tiny, model="structvpr-rgb-tiny", **{"optim.lr": 0.0, **extra})
        seen.clear()
        with pytest.raises(_Stop):
            train(config, tmp_path / name, step_callbacks=[first_step])
        matches = [torch.equal(seen[k], best[k]) for k in seen]
        if name == "init":
            assert all(matches) and len(matches) == len([k for k in best if k in seen]) > 0
        else:
            assert not all(matches), "without init_from the run must not start from the run's weights"
    assert "model weights from" in (tmp_path / "init" / "train.log").read_text()


def test_init_from_refuses_another_architecture_or_a_run_without_checkpoint(rgb_run, tmp_path):
    other = build_model({"preset": "structvpr-rgb-tiny", "aggregator": {"name": "gem", "p": 4.0}})
    with pytest.raises(CheckpointError, match=r"another architecture.*aggregator\.p"):
        init_weights_from(other, rgb_run)
    with pytest.raises(CheckpointError, match="another architecture"):
        init_weights_from(build_model("resnet18-gem"), rgb_run)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        init_weights_from(build_model("structvpr-rgb-tiny"), tmp_path / "empty-run")
    with pytest.raises(FileNotFoundError, match="no such run"):
        init_weights_from(build_model("structvpr-rgb-tiny"), tmp_path / "missing")
    # The image size a model was trained at is not part of its architecture.
    init_weights_from(build_model("structvpr-rgb-tiny", image_size=[32, 48]), rgb_run)


def test_a_seg_branch_run_stores_its_class_map(synth_tiny, rgb_run, tmp_path):
    config = tiny_config(synth_tiny, model="structvpr-seg-tiny", **{"data.input": "seg"})
    run_dir = train(config, tmp_path / "seg").run_dir
    expected = class_map_to_dict(StructuralClassMap.from_yaml(source="cityscapes"))
    for stem in ("best", "last"):
        meta = json.loads((run_dir / f"{stem}.json").read_text())
        assert meta["structural_classes"] == expected
    loaded = load_model(run_dir)
    assert loaded.structural_class_map.names == StructuralClassMap.from_yaml().names
    assert "structural_classes" not in json.loads((rgb_run / "best.json").read_text()), "an RGB run stores none"


def test_resume_with_carried_negatives_gives_the_same_weights(synth_tiny, tmp_path):
    # 20 of the 96 database images sampled per query, so carried negatives add to the candidates.
    config = tiny_config(
        synth_tiny,
        epochs=2,
        **{"mining.carry_negatives": True, "mining.violation_rule": "sqrt_margin", "mining.negative_samples": 20},
    )
    full = train(config, tmp_path / "full")
    epoch_2 = json.loads((full.run_dir / "metrics.jsonl").read_text().splitlines()[1])
    assert epoch_2["mining_rounds"][0]["carried_negatives"] > 0
    state = torch.load(full.run_dir / "last_state.pt", weights_only=True)
    assert (state["miner"]["carried_negatives"] >= 0).any(), "the carried negatives are saved with the loop state"

    def interrupt_in_epoch_2(info):
        if info.epoch == 2 and info.step == 1:
            raise _Stop()

    with pytest.raises(_Stop):
        train(config, tmp_path / "interrupted", step_callbacks=[interrupt_in_epoch_2])
    resumed = train(config, tmp_path / "interrupted", resume=True)
    a = load_file(str(full.run_dir / "last.safetensors"))
    b = load_file(str(resumed.run_dir / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (full.run_dir / "train.log").read_text()
    assert "rule sqrt_margin" in log and "carried to the next round" in log

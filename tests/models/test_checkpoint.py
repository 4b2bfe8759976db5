"""Checkpoints: safetensors + JSON round trip, fingerprints, run folders and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vprdistill.models import (
    CheckpointError,
    build_model,
    load_model,
    load_state_from_safetensors,
    model_fingerprint,
    save_model,
)


def _trained_like(name: str) -> torch.nn.Module:
    """A model whose BatchNorm statistics moved away from their initial values, as after training."""
    torch.manual_seed(0)
    model = build_model(name)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, model.input_channels, 64, 64))
    return model.eval()


def test_round_trip_gives_identical_outputs_and_fingerprint(tmp_path: Path) -> None:
    model = _trained_like("tscm-student-tiny")
    weights, config = save_model(model, tmp_path / "best")
    assert (weights.name, config.name) == ("best.safetensors", "best.json")
    meta = json.loads(config.read_text())
    assert meta["format"] == "vprdistill-model" and meta["version"] == 1
    assert meta["descriptor_dim"] == 512 and meta["fingerprint"] == model_fingerprint(model)
    x = torch.rand(2, 3, 64, 64)
    for source in (tmp_path, weights, config, tmp_path / "best"):
        loaded = load_model(source, verify_fingerprint=True)
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
            assert torch.equal(loaded.local_features(x), model.local_features(x))
        assert model_fingerprint(loaded) == model_fingerprint(model)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_fingerprint_follows_weights_and_config() -> None:
    model = build_model("structvpr-rgb-tiny")
    before = model_fingerprint(model)
    with torch.no_grad():
        model.net.aggregator.p.add_(0.5)
    assert model_fingerprint(model) != before
    other = build_model("structvpr-rgb-tiny", name="renamed")
    other.load_state_dict(model.state_dict())
    assert model_fingerprint(other) != model_fingerprint(model)


def test_run_folder_prefers_best_then_last(tmp_path: Path) -> None:
    last = _trained_like("structvpr-rgb-tiny")
    save_model(last, tmp_path / "last")
    assert model_fingerprint(load_model(tmp_path)) == model_fingerprint(last)
    best = build_model("structvpr-rgb-tiny")
    save_model(best, tmp_path / "best")
    assert model_fingerprint(load_model(tmp_path)) == model_fingerprint(best)


def test_checkpoint_of_another_preset_names_the_offending_key(tmp_path: Path) -> None:
    weights, _ = save_model(build_model("tscm-student-tiny"), tmp_path / "student")
    with pytest.raises(CheckpointError, match=r"student\.safetensors: missing key 'net\.cnn_proj\.bias'"):
        load_state_from_safetensors(build_model("tscm-teacher-tiny"), weights)
    with pytest.raises(CheckpointError, match=r"'net\.patch_embed\.proj\.bias' has shape \(192,\) in the file but \(96,\)"):
        load_state_from_safetensors(build_model("tscm-student-tiny", patch_dim=96), weights)


def test_json_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    _, config = save_model(build_model("structvpr-rgb-tiny"), tmp_path / "model")
    meta = json.loads(config.read_text())
    meta["config"]["aggregator"] = {"name": "netvlad", "clusters": 4}
    config.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing key 'net\.aggregator\.assignment\.weight'"):
        load_model(config)
    config.write_text(json.dumps(dict(meta, format="something-else")))
    with pytest.raises(CheckpointError, match="'format'"):
        load_model(config)


def test_missing_files_are_named(tmp_path: Path) -> None:
    weights, config = save_model(build_model("structvpr-rgb-tiny"), tmp_path / "model")
    config.unlink()
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(weights)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run holds no model"):
        load_model(tmp_path / "empty_run")

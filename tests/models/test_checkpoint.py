"""Checkpoints: safetensors + JSON round trip, fingerprints, run folders and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

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
    with pytest.raises(
        CheckpointError,
        match=r"student\.safetensors: missing key 'net\.cnn_proj\.bias'",
    ):
        load_state_from_safetensors(build_model("tscm-teacher-tiny"), weights)
    with pytest.raises(
        CheckpointError,
        match=r"'net\.patch_embed\.proj\.bias' has shape \(192,\) in the file but \(96,\)",
    ):
        load_state_from_safetensors(build_model("tscm-student-tiny", patch_dim=96), weights)


def test_json_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    _, config = save_model(build_model("structvpr-rgb-tiny"), tmp_path / "model")
    meta = json.loads(config.read_text())
    meta["config"]["aggregator"] = {"name": "netvlad", "clusters": 4}
    config.write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: missing key 'net\.aggregator\.assignment\.weight'",
    ):
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


def _flip_a_byte_of_the_largest_tensor(weights: Path) -> str:
    """Flip one byte in the middle of a tensor's data, leaving the safetensors header intact.

    Returns the name of the tensor that was changed.
    """
    raw = bytearray(weights.read_bytes())
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])
    name, entry = max(
        ((key, value) for key, value in header.items() if key != "__metadata__"),
        key=lambda item: item[1]["data_offsets"][1] - item[1]["data_offsets"][0],
    )
    start, end = entry["data_offsets"]
    raw[8 + header_size + (start + end) // 2] ^= 0x5A
    weights.write_bytes(bytes(raw))
    return name


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    model = _trained_like("structvpr-rgb-tiny")
    weights, _ = save_model(model, tmp_path / "best")
    changed = _flip_a_byte_of_the_largest_tensor(weights)
    # The file still parses: only a tensor's value differs.
    assert not torch.equal(load_file(str(weights))[changed], model.state_dict()[changed])
    with pytest.raises(CheckpointError, match=r"best\.safetensors.*(corrupt|fingerprint)"):
        load_model(tmp_path)
    # Every loader of a weights file checks it, not only load_model (init_from, resume).
    with pytest.raises(CheckpointError, match=r"best\.safetensors.*(corrupt|fingerprint)"):
        load_state_from_safetensors(build_model("structvpr-rgb-tiny"), weights)
    # The check can be skipped on purpose (it reads every weight once more).
    load_model(tmp_path, verify_fingerprint=False)


def test_a_checkpoint_written_before_weight_digests_is_checked_against_its_json_fingerprint(
    tmp_path: Path,
) -> None:
    # The previous format: safetensors metadata without a digest, the model fingerprint in the JSON only.
    model = _trained_like("structvpr-rgb-tiny")
    tensors = {key: value.contiguous() for key, value in model.state_dict().items()}
    weights = tmp_path / "best.safetensors"
    save_file(tensors, str(weights), metadata={"format": "vprdistill-model", "version": "1"})
    meta = {
        "format": "vprdistill-model",
        "version": 1,
        "config": model.config,
        "descriptor_dim": int(model.descriptor_dim),
        "fingerprint": model_fingerprint(model),
    }
    (tmp_path / "best.json").write_text(json.dumps(meta))
    assert model_fingerprint(load_model(tmp_path)) == model_fingerprint(model)  # intact: loads
    _flip_a_byte_of_the_largest_tensor(weights)
    with pytest.raises(CheckpointError, match=r"best\.safetensors.*fingerprint"):
        load_model(tmp_path)


def test_weights_and_json_of_two_different_saves_are_refused(tmp_path: Path) -> None:
    # What a save killed between its two files used to leave: new weights, the previous JSON.
    first = _trained_like("structvpr-rgb-tiny")
    save_model(first, tmp_path / "a")
    second = build_model("structvpr-rgb-tiny")
    save_model(second, tmp_path / "b")
    (tmp_path / "b.json").replace(tmp_path / "a.json")
    with pytest.raises(CheckpointError, match=r"a\.json.*a\.safetensors"):
        load_model(tmp_path / "a")

"""Model files: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (config), written atomically.

The JSON is the only thing needed to rebuild the architecture; weights are
never unpickled. A run folder holds ``best`` and ``last`` stems;
``load_model`` prefers ``best``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vprdistill.models.place_model import PlaceModel
from vprdistill.models.registry import build_model
from vprdistill.utils.atomic import atomic_path, atomic_write_json

FORMAT = "vprdistill-model"
VERSION = 1
RUN_FOLDER_STEMS = ("best", "last")


class CheckpointError(ValueError):
    """A checkpoint that does not fit: bad JSON, unknown format, or weights that do not match the model."""


def model_fingerprint(model: PlaceModel) -> str:
    """A short hex hash of the model's config and every tensor of its state dict (sorted by key).

    Two models with the same fingerprint compute the same function; it changes
    with any weight, buffer (BatchNorm statistics included) or config change.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(getattr(model, "config", {}), sort_keys=True).encode())
    state = model.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def save_model(model: PlaceModel, path_stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; return both paths.

    The weights are written first, so a JSON file never points at weights that are not there yet.
    """
    stem = _strip_suffix(Path(path_stem))
    weights_path, json_path = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(VERSION)})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config,
        "descriptor_dim": int(model.descriptor_dim),
        "fingerprint": model_fingerprint(model),
    }
    atomic_write_json(json_path, meta)
    return weights_path, json_path


def load_state_from_safetensors(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load a safetensors state dict into ``model``.

    Returns:
        (missing keys, unexpected keys); both empty when ``strict``.

    Raises:
        CheckpointError: naming the file and the first offending key when a key is
            missing or unexpected (``strict``) or a shape differs (always).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {path} do not exist")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    expected = model.state_dict()
    missing = sorted(key for key in expected if key not in state)
    unexpected = sorted(key for key in state if key not in expected)
    if strict and missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r} ({len(missing)} missing) for this model")
    if strict and unexpected:
        raise CheckpointError(f"{path}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected) for this model")
    for key in sorted(state):
        if key in expected and tuple(state[key].shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)} in the file "
                f"but {tuple(expected[key].shape)} in the model"
            )
    model.load_state_dict(state, strict=False)
    return missing, unexpected


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``(weights .safetensors, config .json)`` for a run folder, a ``.safetensors``/``.json`` file or a stem."""
    path = Path(path)
    if path.is_dir():
        for stem_name in RUN_FOLDER_STEMS:
            if (path / f"{stem_name}.safetensors").is_file() or (path / f"{stem_name}.json").is_file():
                stem = path / stem_name
                break
        else:
            raise FileNotFoundError(f"run folder {path} holds no model (no best.safetensors or last.safetensors)")
    else:
        stem = _strip_suffix(path)
    weights_path, json_path = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {weights_path} do not exist")
    if not json_path.is_file():
        raise FileNotFoundError(f"checkpoint config {json_path} does not exist (it must sit next to {weights_path.name})")
    return weights_path, json_path


def read_checkpoint_meta(json_path: str | Path) -> dict[str, Any]:
    """The checkpoint JSON, validated (format, version, config)."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{json_path}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{json_path}: must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: field 'format' must be {FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{json_path}: field 'version' is {meta.get('version')!r}; this vprdistill reads version {VERSION}"
        )
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{json_path}: field 'config' must be the model's config dict")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu", verify_fingerprint: bool = False) -> PlaceModel:
    """Rebuild a saved model in eval mode.

    Args:
        path: a run folder (uses ``best``, else ``last``), a ``.safetensors`` file, a ``.json`` file or a stem.
        device: where to put the model.
        verify_fingerprint: recompute the fingerprint and compare it with the JSON's.

    Raises:
        FileNotFoundError: the weights or the JSON are missing (the message names the file).
        CheckpointError: the JSON or the weights do not describe a model of this package.
    """
    weights_path, json_path = resolve_checkpoint(path)
    meta = read_checkpoint_meta(json_path)
    try:
        model = build_model(meta["config"], pretrained=False)
    except ValueError as error:
        raise CheckpointError(f"{json_path}: field 'config' does not build a model: {error}") from error
    load_state_from_safetensors(model, weights_path, strict=True)
    if meta.get("descriptor_dim") is not None and int(meta["descriptor_dim"]) != model.descriptor_dim:
        raise CheckpointError(
            f"{json_path}: field 'descriptor_dim' is {meta['descriptor_dim']} but the config builds {model.descriptor_dim}"
        )
    if verify_fingerprint and meta.get("fingerprint") != model_fingerprint(model):
        raise CheckpointError(f"{json_path}: field 'fingerprint' does not match the weights in {weights_path.name}")
    return model.to(device).eval()


def _strip_suffix(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path

"""``init_from``: start training from the weights of an earlier run.

StructVPR's stage 2 can start its RGB branch from an RGB run trained with the
triplet loss alone, instead of from ImageNet weights. The run's best
checkpoint is loaded into the freshly built model; the two model configs must
describe the same architecture (only the name and the training image size may
differ), and every weight must fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vprdistill.models.checkpoint import (
    CheckpointError,
    load_state_from_safetensors,
    read_checkpoint_meta,
    resolve_checkpoint,
)
from vprdistill.models.place_model import PlaceModel
from vprdistill.models.registry import METADATA_KEYS

# Keys that say what a model is called or how it was used, not how it is built.
_NOT_ARCHITECTURE = ("name", *METADATA_KEYS)


def _differences(run: Any, ours: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two config trees differ, with both values."""
    if isinstance(run, dict) and isinstance(ours, dict):
        found = []
        for key in sorted(set(run) | set(ours)):
            if not prefix and key in _NOT_ARCHITECTURE:
                continue
            name = f"{prefix}{key}"
            if key not in run or key not in ours:
                where = "this config" if key not in run else "the run"
                found.append(f"{name} only in {where}")
            else:
                found.extend(_differences(run[key], ours[key], f"{name}."))
        return found
    return [] if run == ours else [f"{prefix.rstrip('.')}: {run!r} in the run, {ours!r} in this config"]


def init_weights_from(model: PlaceModel, source: str | Path) -> Path:
    """Load the best weights of run folder ``source`` (or of a checkpoint file) into ``model``.

    Args:
        model: the freshly built model of the new run.
        source: a run folder (its ``best`` checkpoint is used) or a ``.safetensors``/``.json`` file.

    Returns:
        The weights file that was loaded.

    Raises:
        FileNotFoundError: ``source`` does not exist, or the run folder has no best checkpoint.
        CheckpointError: the run's model config describes another architecture, or a weight
            is missing, unexpected or of another shape.
    """
    source = Path(source).expanduser()
    if not source.exists() and not source.with_name(source.name + ".json").exists():
        raise FileNotFoundError(f"init_from {source}: no such run folder or checkpoint")
    if source.is_dir():
        weights, json_path = source / "best.safetensors", source / "best.json"
        if not weights.is_file() or not json_path.is_file():
            raise FileNotFoundError(
                f"init_from {source}: the run folder has no best checkpoint (best.safetensors and best.json); "
                "it has not finished an epoch"
            )
    else:
        weights, json_path = resolve_checkpoint(source)
    meta = read_checkpoint_meta(json_path)
    differences = _differences(meta["config"], dict(model.config))
    if differences:
        raise CheckpointError(
            f"init_from {source}: the run's model is another architecture than this config's model "
            f"({'; '.join(differences[:5])}{'; ...' if len(differences) > 5 else ''})"
        )
    try:
        load_state_from_safetensors(model, weights, strict=True)
    except CheckpointError as error:
        raise CheckpointError(f"init_from {source}: {error}") from error
    return weights

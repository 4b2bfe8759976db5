"""Rows a trained model is read against: the thumbnail baseline and the same network before training.

A trained model has learnt something only where it beats both: the
``thumbnail-16`` preset (no parameters, models/thumbnail.py) and its own
network as training started it — the same config, the same seed, the same
ImageNet weights or none, but no training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.structural import StructuralClassMap
from vprdistill.eval.evaluate import evaluate_model
from vprdistill.eval.recall import DEFAULT_QUERIES_WITHOUT_POSITIVE, QueriesWithoutPositive
from vprdistill.experiments.rows import ResultRow, row_from_result
from vprdistill.models.checkpoint import load_model
from vprdistill.models.place_model import PlaceModel
from vprdistill.models.registry import build_model
from vprdistill.train.config import TrainConfig
from vprdistill.utils.seed import seed_everything

THUMBNAIL_PRESET = "thumbnail-16"
THUMBNAIL_NAME = "thumbnail-16 (no training)"
THUMBNAIL_DESCRIPTION = (
    "Baseline without parameters: the image shrunk to 16x16 by area averaging, each colour channel centred on "
    "its own mean, L2-normalised; searched by inner product like every model."
)


def evaluate_model_row(
    model: PlaceModel,
    test_set: PlaceDataset,
    name: str,
    description: str,
    image_size: tuple[int, int],
    device: torch.device | str,
    input_kind: str = "rgb",
    batch_size: int = 32,
    queries_without_positive: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
    **row_options: Any,
) -> ResultRow:
    """Evaluate ``model`` on ``test_set`` into a row with per-query hits and 95 % bootstrap intervals.

    ``queries_without_positive``: ``count-as-miss`` or ``exclude``, as in
    :func:`~vprdistill.eval.recall.recall_at_n`. ``row_options`` (``command``, ``run_dir``, ``kind``,
    ``baseline_for``, ...) are those of :func:`~vprdistill.experiments.rows.row_from_result`.
    """
    result = evaluate_model(
        model,
        test_set,
        image_size=image_size,
        batch_size=batch_size,
        device=device,
        input_kind=input_kind,
        progress=False,
        queries_without_positive=queries_without_positive,
    )
    return row_from_result(result, name, description, sum(p.numel() for p in model.parameters()), **row_options)


def evaluate_run_row(
    run_dir: Path,
    test_set: PlaceDataset,
    name: str,
    description: str,
    image_size: tuple[int, int],
    device: torch.device | str,
    **options: Any,
) -> ResultRow:
    """:func:`evaluate_model_row` of the best checkpoint of ``run_dir`` (options as there)."""
    model = load_model(run_dir, device=device)
    return evaluate_model_row(model, test_set, name, description, image_size, device, run_dir=str(run_dir), **options)


def untrained_model(config: TrainConfig) -> PlaceModel:
    """The network ``train(config)`` starts from: seeded with ``config.seed``, built as training builds it.

    ImageNet weights are loaded when the config asks for them (and has no
    ``init_from``); a seg-input model carries the config's structural class map,
    so that it reads the segmentation maps as the trained one does.
    """
    model_config = config.model if isinstance(config.model, dict) else {"preset": config.model}
    seed_everything(config.seed)
    pretrained = bool(config.pretrained) and not config.init_from
    model = build_model(dict(model_config, image_size=list(config.data.image_size)), pretrained=pretrained)
    if config.data.input == "seg":
        model.structural_class_map = StructuralClassMap.from_yaml(source=config.data.structural_source)
    return model.eval()


def untrained_row(
    config: TrainConfig, test_set: PlaceDataset, trained_name: str, image_size: tuple[int, int],
    device: torch.device | str, **options: Any,
) -> ResultRow:  # fmt: skip
    """The row of ``trained_name``'s network before training (``<name>, untrained``).

    ``options`` as :func:`evaluate_model_row` (``input_kind``, ``command``, ...).
    """
    model = untrained_model(config).to(device)
    start = "ImageNet weights" if config.pretrained and not config.init_from else "random initialisation"
    description = f"The network of '{trained_name}' at its {start} (seed {config.seed}), before any training step."
    name = f"{trained_name}, untrained"
    return evaluate_model_row(
        model, test_set, name, description, image_size, device, kind="untrained", baseline_for=trained_name, **options
    )


def thumbnail_row(
    test_set: PlaceDataset, image_size: tuple[int, int], device: torch.device | str, command: str = ""
) -> ResultRow:
    """The ``thumbnail-16`` baseline on ``test_set`` (photos, fed at ``image_size`` as the models are)."""
    model = build_model(THUMBNAIL_PRESET).to(device)
    return evaluate_model_row(
        model, test_set, THUMBNAIL_NAME, THUMBNAIL_DESCRIPTION, image_size, device, command=command, kind="baseline"
    )

"""A tiny training config shared by the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vprdistill.train.config import TrainConfig, load_config

IMAGE_SIZE = 64


def tiny_config(dataset: Path, extra_overrides: Sequence[str] = (), **extra) -> TrainConfig:
    """The baseline preset shrunk to a tiny ResNet-18 run on CPU (1 epoch unless ``epochs=`` says otherwise)."""
    overrides = [
        f"data.dataset={dataset}",
        f"data.image_size=[{IMAGE_SIZE}, {IMAGE_SIZE}]",
        "model=resnet18-gem",
        "epochs=1",
        "batch_size=4",
        "mining.negative_samples=100",
        "mining.num_negatives=4",
        "optim.lr=0.001",
        "device=cpu",
        "progress=false",
        *extra_overrides,
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config("baseline/synth-resnet18-gem", overrides)

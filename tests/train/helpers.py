"""A tiny training config shared by the training tests, and helpers to compare run folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from vprdistill.train.config import Override, TrainConfig, load_config

IMAGE_SIZE = 64


def tiny_config(dataset: Path, extra_overrides: Sequence[Override] = (), **extra) -> TrainConfig:
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


def copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of a run folder (its links kept as links) that a test may change."""
    shutil.copytree(run_dir, destination, symlinks=True)
    return destination


def metric_epochs(run_dir: Path) -> list[int]:
    """The epochs of a run's metrics.jsonl, in file order."""
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two ``.safetensors`` files hold bit-identical tensors under the same names."""
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

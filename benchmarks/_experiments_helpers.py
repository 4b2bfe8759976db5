"""Shared machinery of the ablation benchmarks: train a variant (or reuse its run), aggregate over seeds."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vprdistill.train.config import TrainConfig, load_config
from vprdistill.train.loop import train


@dataclass
class Budget:
    """The training budget every variant of an ablation gets, identical across variants."""

    image_size: int = 64
    epochs: int = 4
    max_train_queries: int = 400
    max_val_queries: int = 150
    num_negatives: int = 6
    negative_samples: int = 300

    def overrides(self) -> list[str]:
        return [
            f"data.image_size=[{self.image_size}, {self.image_size}]",
            f"epochs={self.epochs}",
            f"data.max_train_queries={self.max_train_queries}",
            f"data.max_val_queries={self.max_val_queries}",
            f"mining.num_negatives={self.num_negatives}",
            f"mining.negative_samples={self.negative_samples}",
            "progress=false",
        ]


def teachers_override(teachers: Sequence[dict]) -> str:
    return "method.teachers=" + yaml.safe_dump(list(teachers), default_flow_style=True, width=10_000).strip()


def train_variant(preset: str, overrides: Sequence[str], run_dir: Path) -> tuple[Path, str]:
    """Train ``preset`` with ``overrides`` into ``run_dir`` (resuming a finished or interrupted run).

    Returns the run folder and the command that reproduces it.
    """
    train_config(load_config(preset, list(overrides)), run_dir)
    command = f"vprdistill train {preset} " + " ".join(shlex.quote(o) for o in overrides) + f" --out {run_dir}"
    return run_dir, command


def train_config(config: TrainConfig, run_dir: Path) -> Path:
    """Train a resolved ``config`` into ``run_dir``, resuming a finished or interrupted run; returns ``run_dir``.

    A finished run resumes with no epoch left to train, so calling this again costs only the loading.
    """
    resume = (run_dir / "last_state.pt").is_file()
    if not resume and run_dir.exists():
        # Interrupted before its first epoch finished: nothing in it can be resumed.
        shutil.rmtree(run_dir)
    train(config, run_dir, resume=resume)
    return run_dir


def train_from_config_file(
    config_path: Path, overrides: Sequence[str | Mapping[str, Any]], run_dir: Path
) -> tuple[Path, str]:
    """:func:`train_variant` of a run's ``config.yaml`` (or any config file) instead of a packaged preset.

    ``overrides`` are ``key=value`` strings or mappings (``load_config``'s). Returns the run folder and the
    command that reproduces it (mappings written as ``key=<flow YAML>``).
    """
    train_config(load_config(config_path, list(overrides)), run_dir)
    return run_dir, train_command(config_path, overrides, run_dir)


def train_command(config_path: Path, overrides: Sequence[str | Mapping[str, Any]], run_dir: Path) -> str:
    """The ``vprdistill train`` command line of ``config_path`` with ``overrides`` into ``run_dir``."""
    words = []
    for item in overrides:
        if isinstance(item, Mapping):
            words += [
                f"{key}={yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()}"
                for key, value in item.items()
            ]
        else:
            words.append(item)
    return f"vprdistill train {config_path} " + " ".join(shlex.quote(w) for w in words) + f" --out {run_dir}"


def mean_and_spread(values: Sequence[float]) -> str:
    """``mean ± std`` over seeds (population std; one seed gives ± 0.0)."""
    array = np.asarray(values, dtype=float)
    return f"{array.mean():.1f} ± {array.std():.1f}"

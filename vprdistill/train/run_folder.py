"""A training run's folder: resolved config, log, metrics, best and last checkpoints.

Layout::

    RUN/config.yaml          the resolved configuration
    RUN/train.log            the log, appended across resumes
    RUN/metrics.jsonl        one JSON line per epoch
    RUN/best.safetensors     weights of the best validation R@1 (+ best.json: model config)
    RUN/last.safetensors     weights after the last finished epoch (+ last.json)
    RUN/last_state.pt        optimizer, scheduler and loop counters (tensors and plain
                             values only, read back with ``weights_only=True``)

Every file is written atomically, and ``last_state.pt`` is written after
``last.safetensors`` and records its fingerprint, so a run interrupted between
the two is detected instead of resumed from mismatched parts.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import torch

from vprdistill.models.checkpoint import load_state_from_safetensors, model_fingerprint, save_model
from vprdistill.utils.atomic import atomic_path, atomic_write_bytes


def timestamped_run_dir(base: str | Path, name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(base) / f"{name}_{stamp}"


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def state_path(self) -> Path:
        return self.path / "last_state.pt"

    def create(self, exist_ok: bool = False) -> None:
        if self.path.exists() and any(self.path.iterdir()) and not exist_ok:
            raise FileExistsError(
                f"run folder {self.path} already exists and is not empty; use --resume {self.path} "
                "to continue it, or choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        probe = self.path / ".write_test"
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise ValueError(f"run folder {self.path} is not writable: {error}") from error

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's metrics; the file is rewritten atomically so a crash never truncates it."""
        existing = self.metrics_path.read_bytes() if self.metrics_path.exists() else b""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        atomic_write_bytes(self.metrics_path, existing + line)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop metric lines of epochs after ``last_epoch`` (they belong to an interrupted epoch)."""
        kept = [m for m in self.read_metrics() if m.get("epoch", 0) <= last_epoch]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in kept).encode())

    def save_best(self, model: torch.nn.Module) -> None:
        save_model(model, self.path / "best")

    def save_last(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        save_model(model, self.path / "last")
        state = dict(state, model_fingerprint=model_fingerprint(model))
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def load_last(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the last checkpoint's weights into ``model`` and return the loop state."""
        weights = self.path / "last.safetensors"
        if not weights.is_file() or not self.state_path.is_file():
            raise FileNotFoundError(
                f"cannot resume {self.path}: no finished epoch yet (missing {weights.name} or {self.state_path.name})"
            )
        load_state_from_safetensors(model, weights, strict=True)
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if state.get("model_fingerprint") != model_fingerprint(model):
            raise ValueError(
                f"cannot resume {self.path}: {self.state_path.name} does not belong to {weights.name} "
                "(the run was interrupted while saving); delete both to restart from scratch"
            )
        return state

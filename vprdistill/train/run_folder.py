"""A training run's folder: resolved config, log, metrics, and one checkpoint replaced as a unit.

Layout::

    RUN/config.yaml          the resolved configuration
    RUN/train.log            the log, appended across resumes
    RUN/metrics.jsonl        one JSON line per epoch
    RUN/checkpoint/          the checkpoint of the last finished epoch, replaced as one unit:
        checkpoint.json        what it holds: epoch, best epoch, file sizes
        last.safetensors       weights after that epoch (+ last.json: the model config)
        last_state.pt          optimizer, scheduler and loop counters (tensors and plain
                               values only, read back with ``weights_only=True``)
        best.safetensors       weights of the best validation R@1 so far (+ best.json)
    RUN/last.safetensors, RUN/last.json, RUN/last_state.pt, RUN/best.safetensors, RUN/best.json
                             links into ``checkpoint/``, where tools have always found them

Saving an epoch writes every file of the new checkpoint into a hidden staging
folder, then swaps it for ``checkpoint/`` (``vprdistill.utils.atomic_folder``):
the previous checkpoint stays complete until the new one is, so a kill or a
full disk at any moment leaves one complete checkpoint, the new one or the
previous one, and the next ``--resume`` recovers it. An unchanged best
checkpoint is hard-linked into the new folder, not copied; a save needs the
space of one more checkpoint while it runs.

One training process writes a run folder at a time: ``lock`` takes the run's
folder lock (``vprdistill.utils.locking``), and a second process is refused.

Run folders of the previous layout (every file flat in ``RUN/``, replaced one
by one) still resume; their first new save moves them to this layout.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vprdistill.models.checkpoint import (
    RUN_CHECKPOINT_DIR,
    RUN_CHECKPOINT_MANIFEST,
    CheckpointError,
    file_fingerprint,
    load_state_from_safetensors,
    model_fingerprint,
    read_checkpoint_meta,
    save_model,
)
from vprdistill.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from vprdistill.utils.atomic_folder import atomic_folder, locked_folder
from vprdistill.utils.locking import folder_lock
from vprdistill.utils.logging import get_logger

logger = get_logger("train.run_folder")

CHECKPOINT_FORMAT = "vprdistill-run-checkpoint"
CHECKPOINT_VERSION = 1
STATE_NAME = "last_state.pt"
LINKED_FILES = (
    "last.safetensors",
    "last.json",
    STATE_NAME,
    "best.safetensors",
    "best.json",
)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CheckpointSaveError(RuntimeError):
    """An epoch's checkpoint could not be written (full disk, I/O error); the previous one is intact.

    ``errno`` is that of the underlying ``OSError``.
    """

    def __init__(self, message: str, errno_value: int | None) -> None:
        super().__init__(message)
        self.errno = errno_value


def timestamped_run_dir(base: str | Path, name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(base) / f"{name}_{stamp}"


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.log_path = self.path / "train.log"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_dir = self.path / RUN_CHECKPOINT_DIR
        self.state_path = self.path / STATE_NAME  # the loop state of the last checkpoint (a link into checkpoint/)

    @contextlib.contextmanager
    def lock(self) -> Iterator[Path]:
        """Hold the run's lock for the block; another process holding it is refused at once.

        Raises:
            FolderLockedError: another process trains into this folder (its pid and command are named).
        """
        hint = (
            "One training writes a run folder at a time: wait for that one to finish (or stop it), "
            "or train into another --out."
        )
        with folder_lock(self.path, what="training run", timeout=0.0, hint=hint) as path:
            yield path

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
        self._write_metrics([*self.read_metrics(), record])

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop metric lines of epochs after ``last_epoch`` (they belong to an interrupted epoch)."""
        self._write_metrics([m for m in self.read_metrics() if m.get("epoch", 0) <= last_epoch])

    def _write_metrics(self, records: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in records).encode())

    # -- checkpoints ---------------------------------------------------------------------------

    def _is_previous_layout(self) -> bool:
        """Flat checkpoint files of the previous layout, and no ``checkpoint/`` folder."""
        if (self.checkpoint_dir / RUN_CHECKPOINT_MANIFEST).is_file():
            return False
        files = (self.path / "last.safetensors", self.state_path)
        return all(p.is_file() and not p.is_symlink() for p in files)

    def _checkpoint_source(self) -> Path:
        """The folder holding the last checkpoint's files: ``checkpoint/``, or ``RUN`` in the previous layout."""
        if (self.checkpoint_dir / RUN_CHECKPOINT_MANIFEST).is_file():
            return self.checkpoint_dir
        if self._is_previous_layout():
            return self.path
        if not self.path.is_dir():
            raise FileNotFoundError(f"cannot resume {self.path}: no such run folder")
        raise FileNotFoundError(
            f"cannot resume {self.path}: it holds no checkpoint ({RUN_CHECKPOINT_DIR}/{RUN_CHECKPOINT_MANIFEST} "
            "is missing): no epoch has finished yet. Start a new run instead"
        )

    def recover(self) -> None:
        """Finish or undo a checkpoint swap a killed process left half done (call it holding ``lock``)."""
        if not self.path.is_dir():
            return
        with locked_folder(self.checkpoint_dir, RUN_CHECKPOINT_MANIFEST, what="checkpoint"):
            pass

    def require_checkpoint(self) -> None:
        """Check, before anything is written, that a checkpoint to resume from exists and is whole.

        Raises:
            FileNotFoundError: the run holds no checkpoint yet.
            CheckpointError: a file of it is missing or has the wrong size, or (previous
                layout) its files come from different saves.
        """
        if self._checkpoint_source() == self.checkpoint_dir:
            self._check_manifest()
            return
        # The previous layout replaced its files one by one: see that they belong together.
        weights, json_path = self.path / "last.safetensors", self.path / "last.json"
        state = _load_state(self.state_path)
        meta = read_checkpoint_meta(json_path) if json_path.is_file() else {}
        recorded = {state.get("model_fingerprint"), meta.get("fingerprint")}
        if "config" not in meta or len(recorded) != 1 or file_fingerprint(weights, meta["config"]) not in recorded:
            raise self._interrupted_previous_layout()

    def _interrupted_previous_layout(self) -> CheckpointError:
        return CheckpointError(
            f"cannot resume {self.path}: its checkpoint was written by an earlier version of vprdistill, "
            f"one file at a time, and that save was interrupted: {STATE_NAME} does not belong to "
            f"last.safetensors (or last.json). The epoch cannot be resumed exactly; start a new run from "
            f"these weights with init_from={self.path / 'last.safetensors'}, or from scratch"
        )

    def checkpoint_epoch(self) -> int | None:
        """The epoch of the last complete checkpoint, or None when there is none."""
        manifest = self.checkpoint_dir / RUN_CHECKPOINT_MANIFEST
        try:
            if manifest.is_file():
                return int(json.loads(manifest.read_text())["epoch"])
            if self._is_previous_layout():
                return int(torch.load(self.state_path, map_location="cpu", weights_only=True)["epoch"])
        except (OSError, ValueError, KeyError, RuntimeError):
            return None
        return None

    def save_epoch(
        self,
        record: dict[str, Any],
        model: torch.nn.Module,
        state: dict[str, Any],
        is_best: bool,
    ) -> None:
        """Append an epoch's metrics, then replace the checkpoint with this epoch's, as one unit.

        Args:
            record: the epoch's metrics line.
            model: the model after the epoch (saved as ``last``, and as ``best`` when ``is_best``).
            state: the loop state (``epoch``, optimizer, scheduler, counters).
            is_best: this epoch is the best so far; otherwise the previous best is kept.

        Raises:
            CheckpointSaveError: the disk is full or a write failed; the message says which
                checkpoint is still in place (the previous one, complete).
        """
        epoch = int(state["epoch"])
        try:
            self.append_metrics(record)
            self._write_checkpoint(model, state, is_best)
        except OSError as error:
            raise self._save_error(epoch, error) from error
        try:
            self._link_files()
        except OSError as error:
            # The checkpoint is in place and complete; only the links beside it are missing.
            logger.warning(
                "checkpoint of epoch %d saved in %s, but the links to it in %s could not be made: %s",
                epoch,
                self.checkpoint_dir,
                self.path,
                error,
            )

    def _save_error(self, epoch: int, error: OSError) -> CheckpointSaveError:
        previous = self.checkpoint_epoch()
        kept = (
            f"The previous checkpoint (epoch {previous}) is intact: once that is fixed, continue with "
            f"`vprdistill train --resume {self.path}`."
            if previous is not None
            else "No earlier checkpoint exists: start the run again once that is fixed."
        )
        reason = "the disk is full" if error.errno in _DISK_FULL else "a write failed"
        return CheckpointSaveError(
            f"{reason}: the checkpoint of epoch {epoch} could not be saved in {self.path} ({error}). {kept}",
            error.errno,
        )

    def _write_checkpoint(self, model: torch.nn.Module, state: dict[str, Any], is_best: bool) -> None:
        state = dict(state, model_fingerprint=model_fingerprint(model))
        with atomic_folder(self.checkpoint_dir, RUN_CHECKPOINT_MANIFEST, what="checkpoint") as staging:
            save_model(model, staging / "last")
            with atomic_path(staging / STATE_NAME) as tmp:
                torch.save(state, tmp)
            best_source = staging / "last" if is_best else self._previous_best()
            if best_source is not None:
                for suffix in (".safetensors", ".json"):
                    _link_or_copy(
                        best_source.with_name(best_source.name + suffix),
                        staging / f"best{suffix}",
                    )
            manifest = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "epoch": int(state["epoch"]),
                "best_epoch": int(state.get("best_epoch", 0)),
                "files": {p.name: p.stat().st_size for p in sorted(staging.iterdir())},  # before the manifest
            }
            atomic_write_json(staging / RUN_CHECKPOINT_MANIFEST, manifest)

    def _previous_best(self) -> Path | None:
        """The stem of the best checkpoint in place (``checkpoint/best`` or, previous layout, ``RUN/best``)."""
        for folder in (self.checkpoint_dir, self.path):
            if (folder / "best.safetensors").is_file() and (folder / "best.json").is_file():
                return folder / "best"
        return None

    def _link_files(self) -> None:
        """Point ``RUN/<name>`` at ``checkpoint/<name>`` for every checkpoint file."""
        for name in LINKED_FILES:
            target = self.checkpoint_dir / name
            link = self.path / name
            relative = os.path.join(RUN_CHECKPOINT_DIR, name)
            if not target.is_file() or (link.is_symlink() and os.readlink(link) == relative):
                continue  # nothing to link, or linked already
            tmp = self.path / f".{name}.link.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.symlink(relative, tmp)
            except OSError:
                # A file system without symbolic links: a hard link, renewed after every save.
                os.link(target, tmp)
            os.replace(tmp, link)

    def load_last(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the last checkpoint's weights into ``model`` and return the loop state.

        Raises:
            FileNotFoundError: the run holds no checkpoint yet.
            CheckpointError: a file is missing, corrupt, or belongs to another save (the message names it).
        """
        folder = self._checkpoint_source()
        previous_layout = folder == self.path
        if not previous_layout:
            self._check_manifest()
        weights, state_path = folder / "last.safetensors", folder / STATE_NAME
        load_state_from_safetensors(model, weights, strict=True)
        state = _load_state(state_path)
        if state.get("model_fingerprint") != model_fingerprint(model):
            if previous_layout:
                raise self._interrupted_previous_layout()
            raise CheckpointError(
                f"{state_path} does not belong to {weights}: the checkpoint was changed after it was saved"
            )
        return state

    def _check_manifest(self) -> None:
        path = self.checkpoint_dir / RUN_CHECKPOINT_MANIFEST
        try:
            manifest = json.loads(path.read_text())
            files = dict(manifest["files"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: not a readable checkpoint manifest ({error})") from error
        if manifest.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path}: field 'format' must be {CHECKPOINT_FORMAT!r}, got {manifest.get('format')!r}"
            )
        for name, size in files.items():
            file = self.checkpoint_dir / name
            if not file.is_file():
                raise CheckpointError(f"{path}: the checkpoint lists {name}, but {file} is missing")
            if file.stat().st_size != size:
                raise CheckpointError(f"{file}: {file.stat().st_size} bytes, but the checkpoint recorded {size}")


def _link_or_copy(source: Path, destination: Path) -> None:
    """A hard link (no space used) where the file system allows it, else a copy."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _load_state(path: Path) -> dict[str, Any]:
    """A loop state file, read with ``weights_only=True``; CheckpointError naming it when damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises anything from EOFError to an unpickling error
        raise CheckpointError(f"{path}: not a readable loop state ({error})") from error

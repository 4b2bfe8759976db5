"""Descriptors of image lists larger than memory: written shard by shard, resumable, shareable between processes.

A folder of sharded descriptors holds

- ``manifest.json``: static facts only (model fingerprint, image list hash,
  count, dim, shard size, image size, input kind), identical for every process;
- ``paths.json``: the image of each row;
- ``shard_00000.npy``…: ``(rows, D)`` float32, rows ``[i·shard_size, (i+1)·shard_size)``;
- ``shard_00000.done``: written after its shard, naming the manifest it belongs to.

Every file is written atomically and a shard counts as finished only with its
``.done`` marker for this manifest and a ``.npy`` of the right shape, so a run
killed at any moment resumes where it stopped. Several processes (``rank`` of
``world_size``, e.g. ``torchrun``) take shards ``i % world_size == rank``; no
file is written by two of them except ``manifest.json`` and ``paths.json``, whose
contents they agree on.

What stays out of memory is the extraction: a shard's images are described and
written before the next shard starts. Using the result is up to the reader:
``chunks()`` feeds ``retrieval.approximate.build_index`` a shard at a time and
``take`` reads only the shards holding the wanted rows, while ``to_array()`` (what
``vprdistill index build --shards`` does before building the map index) puts all
``N × D`` float32 in memory and refuses above ``max_bytes``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vprdistill.data.transforms import image_size_hw
from vprdistill.eval.evaluate import default_image_size
from vprdistill.eval.extract import INPUT_KINDS, compute_descriptors
from vprdistill.models.checkpoint import model_fingerprint
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.logging import get_logger

FORMAT = "vprdistill-sharded-descriptors"
VERSION = 1
MANIFEST_FILE = "manifest.json"
PATHS_FILE = "paths.json"
# Fields that define the descriptors: a folder is reused only when all of them agree.
_IDENTITY_FIELDS = (
    "format",
    "version",
    "model_fingerprint",
    "image_list_hash",
    "count",
    "dim",
    "shard_size",
    "image_size",
    "input_kind",
)

_SHARD_NAME = re.compile(r"shard_(\d+)\.(?:npy|done)")

logger = get_logger(__name__)


class ShardedDescriptorsError(ValueError):
    """A sharded descriptor folder that is missing files, unfinished, or made by another model/image list."""


def shard_file(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:05d}.npy"


def done_file(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:05d}.done"


def image_list_hash(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 of the image paths as given, in order (the same files listed differently hash differently)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fspath(path).encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} holds no sharded descriptors")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShardedDescriptorsError(f"{path} is not valid JSON: {error}") from error
    missing = [name for name in (*_IDENTITY_FIELDS, "num_shards", "run_key") if name not in manifest]
    if missing:
        raise ShardedDescriptorsError(f"{path} lacks the field(s) {', '.join(missing)}")
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise ShardedDescriptorsError(
            f"{path} is format {manifest['format']!r} version {manifest['version']}; "
            f"this code reads {FORMAT!r} version {VERSION}"
        )
    return manifest


def _shard_is_done(folder: Path, manifest: dict[str, Any], shard: int) -> bool:
    """Marker of this manifest, and a float32 ``.npy`` of the expected shape (its header only is read)."""
    try:
        marker = json.loads(done_file(folder, shard).read_text())
        array = np.load(shard_file(folder, shard), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    start, stop = _shard_range(manifest, shard)
    return (
        marker.get("run_key") == manifest["run_key"]
        and array.dtype == np.float32
        and array.shape == (stop - start, manifest["dim"])
    )


def _shard_range(manifest: dict[str, Any], shard: int) -> tuple[int, int]:
    start = shard * manifest["shard_size"]
    return start, min(start + manifest["shard_size"], manifest["count"])


@dataclass(frozen=True)
class ShardedDescriptors:
    """Read-only view of a sharded descriptor folder: ``N`` rows of ``(D,)`` float32 in ``num_shards`` files."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ShardedDescriptors:
        """The descriptors in ``folder`` (finished or not: see :attr:`complete`)."""
        folder = Path(folder)
        return cls(folder, _read_manifest(folder))

    def __len__(self) -> int:
        return int(self.manifest["count"])

    dim = property(lambda self: int(self.manifest["dim"]), doc="Descriptor size D.")
    num_shards = property(lambda self: int(self.manifest["num_shards"]))
    model_fingerprint = property(lambda self: str(self.manifest["model_fingerprint"]))

    @property
    def paths(self) -> list[str]:
        """The image of each row, as given to :func:`extract_sharded`."""
        path = self.folder / PATHS_FILE
        try:
            paths = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ShardedDescriptorsError(f"cannot read {path}: {error}") from error
        if image_list_hash(paths) != self.manifest["image_list_hash"]:
            raise ShardedDescriptorsError(f"{path} does not match the image list hash in {MANIFEST_FILE}")
        return paths

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` held by ``shard``."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range 0..{self.num_shards - 1}")
        return _shard_range(self.manifest, shard)

    def missing_shards(self) -> list[int]:
        """Shards not finished (no valid ``.done`` marker and ``.npy`` for this manifest)."""
        return [s for s in range(self.num_shards) if not _shard_is_done(self.folder, self.manifest, s)]

    @property
    def complete(self) -> bool:
        return not self.missing_shards()

    def load_shard(self, shard: int) -> np.ndarray:
        """Shard ``shard`` as a read-only ``(rows, D)`` float32 memmap."""
        start, stop = self.shard_range(shard)
        if not _shard_is_done(self.folder, self.manifest, shard):
            raise ShardedDescriptorsError(
                f"{shard_file(self.folder, shard)} is not finished (rows {start}..{stop - 1}); "
                "run the extraction again to complete it"
            )
        return np.load(shard_file(self.folder, shard), mmap_mode="r", allow_pickle=False)

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, (rows, D) memmap)`` of every shard, in order; raises on an unfinished shard."""
        missing = self.missing_shards()
        if missing:
            raise ShardedDescriptorsError(
                f"{self.folder}: {len(missing)} of {self.num_shards} shards are unfinished "
                f"(first: {missing[:5]}); run the extraction again (every rank) to complete them"
            )
        for shard in range(self.num_shards):
            yield self.shard_range(shard)[0], self.load_shard(shard)

    def chunks(self) -> list[np.ndarray]:
        """The shards as ``(rows, D)`` memmaps (read when used), e.g. for ``retrieval.approximate.build_index``."""
        return [shard for _, shard in self.iter_shards()]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order) as ``(len(rows), D)`` float32, reading only the shards they fall in."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row indices must lie in 0..{len(self) - 1}")
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        shard_of_row = rows // self.manifest["shard_size"]
        for shard in np.unique(shard_of_row):
            selected = shard_of_row == shard
            out[selected] = self.load_shard(int(shard))[rows[selected] - self.shard_range(int(shard))[0]]
        return out

    def verify(self) -> list[int]:
        """Finished shards whose data no longer match the checksum written with them (reads every shard)."""
        corrupt = []
        for shard in range(self.num_shards):
            if not _shard_is_done(self.folder, self.manifest, shard):
                continue
            marker = json.loads(done_file(self.folder, shard).read_text())
            data = np.ascontiguousarray(self.load_shard(shard))
            if hashlib.sha256(data.tobytes()).hexdigest() != marker.get("sha256"):
                corrupt.append(shard)
        return corrupt

    __getitem__ = take  # self[rows], so the shards can serve as a re-ranking database

    def to_array(self, max_bytes: int = 4 * 2**30) -> np.ndarray:
        """All descriptors as one in-memory ``(N, D)`` float32 array; refuses above ``max_bytes``."""
        size = len(self) * self.dim * 4
        if size > max_bytes:
            raise MemoryError(
                f"{self.folder}: {len(self)} × {self.dim} float32 is {size / 2**30:.1f} GiB, above max_bytes "
                f"({max_bytes / 2**30:.1f} GiB); use iter_shards() or raise max_bytes"
            )
        out = np.empty((len(self), self.dim), dtype=np.float32)
        for start, shard in self.iter_shards():
            out[start : start + len(shard)] = shard
        return out


def _new_manifest(
    model: torch.nn.Module, paths: Sequence[str], shard_size: int, size: tuple[int, int], input_kind: str
) -> dict[str, Any]:
    dim = getattr(model, "descriptor_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"model {type(model).__name__} has no positive integer descriptor_dim (got {dim!r})")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model_fingerprint": model_fingerprint(model),
        "model_config": getattr(model, "config", None),
        "image_list_hash": image_list_hash(paths),
        "count": len(paths),
        "dim": dim,
        "shard_size": int(shard_size),
        "num_shards": -(-len(paths) // shard_size),
        "image_size": list(size),
        "input_kind": input_kind,
    }
    identity = {name: manifest[name] for name in _IDENTITY_FIELDS}
    manifest["run_key"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return manifest


def _prepare_folder(folder: Path, manifest: dict[str, Any], paths: Sequence[str], overwrite: bool) -> None:
    """Write manifest and paths, or check the ones already there belong to this run."""
    if (folder / MANIFEST_FILE).is_file():
        try:
            old = _read_manifest(folder)
        except ShardedDescriptorsError:
            if not overwrite:
                raise
            old = None
        if old is not None and old["run_key"] == manifest["run_key"]:
            return
        if not overwrite:
            differences = [
                f"{name}: {old.get(name)!r} there, {manifest[name]!r} now"
                for name in _IDENTITY_FIELDS
                if old.get(name) != manifest[name]
            ]
            raise ShardedDescriptorsError(
                f"{folder / MANIFEST_FILE} belongs to other descriptors ({'; '.join(differences)}); "
                "pass overwrite=True to recompute them here, or choose another folder"
            )
        # Shards past the new end would never be rewritten; the others are
        # ignored (their markers name the old run) until recomputed.
        for stale in folder.iterdir():
            match = _SHARD_NAME.fullmatch(stale.name)
            if match and int(match.group(1)) >= manifest["num_shards"]:
                stale.unlink(missing_ok=True)
    # paths first: the manifest is what makes the folder valid.
    atomic_write_json(folder / PATHS_FILE, list(paths))
    atomic_write_json(folder / MANIFEST_FILE, manifest)


def extract_sharded(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    shard_size: int = 10_000,
    image_size: tuple[int, int] | int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    input_kind: str = "rgb",
    progress: bool = True,
    *,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    max_shards: int | None = None,
    on_shard_done: Callable[[int], None] | None = None,
) -> ShardedDescriptors:
    """Compute descriptors of ``paths`` into ``out_dir``, one ``.npy`` shard at a time, skipping finished shards.

    Args:
        model: a place model ``(B, C, H, W) -> (B, D)`` with ``descriptor_dim``.
        paths: N image files (or segmentation maps for ``input_kind="seg"``).
        out_dir: the shard folder (created if needed).
        shard_size: rows per shard; the unit of resumption and of work sharing.
        image_size: ``(H, W)`` or a side; default the size the model's config
            records, else 224 (as ``vprdistill eval``).
        batch_size, device, num_workers, input_kind: as in
            :func:`vprdistill.eval.extract.compute_descriptors`.
        progress: progress bars over shards and images.
        rank, world_size: this process computes shards ``i % world_size == rank``.
        overwrite: recompute a folder made by another model or image list
            instead of raising :class:`ShardedDescriptorsError`.
        max_shards: stop after computing this many shards (a time-limited job).
        on_shard_done: called with each shard index this call computed.

    Returns:
        The folder's :class:`ShardedDescriptors` (``complete`` once every rank
        has finished); rows in the order of ``paths``, ``(N, D)`` float32.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path_strings = [os.fspath(p) for p in paths]
    size = default_image_size(model) if image_size is None else image_size_hw(image_size)
    manifest = _new_manifest(model, path_strings, shard_size, size, input_kind)
    _prepare_folder(folder, manifest, path_strings, overwrite)

    mine = [s for s in range(manifest["num_shards"]) if s % world_size == rank]
    todo = [s for s in mine if not _shard_is_done(folder, manifest, s)]
    if len(todo) < len(mine):
        logger.info("%s: %d of this rank's %d shards already done", folder, len(mine) - len(todo), len(mine))
    if max_shards is not None:
        todo = todo[: max(0, max_shards)]
    with tqdm(total=len(todo), desc=f"shards (rank {rank}/{world_size})", unit="shard", disable=not progress) as bar:
        for shard in todo:
            # Temporary files a killed run left for this shard (only this rank writes them).
            for name in (shard_file(folder, shard).name, done_file(folder, shard).name):
                for orphan in folder.glob(f".{name}.*.tmp"):
                    orphan.unlink(missing_ok=True)
            start, stop = _shard_range(manifest, shard)
            descriptors = compute_descriptors(
                model,
                path_strings[start:stop],
                size,
                batch_size=batch_size,
                device=device,
                num_workers=num_workers,
                input_kind=input_kind,
                progress=progress,
                desc=f"shard {shard + 1}/{manifest['num_shards']}",
            )
            if descriptors.shape != (stop - start, manifest["dim"]):
                raise ShardedDescriptorsError(
                    f"the model gave descriptors of shape {descriptors.shape} for shard {shard}, "
                    f"expected {(stop - start, manifest['dim'])} (its descriptor_dim)"
                )
            with atomic_path(shard_file(folder, shard)) as tmp, open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(descriptors, dtype=np.float32), allow_pickle=False)
            # The marker comes second: a shard without it is recomputed, never trusted half-written.
            sha256 = hashlib.sha256(descriptors.astype(np.float32).tobytes()).hexdigest()
            marker = {"run_key": manifest["run_key"], "shard": shard, "rows": stop - start, "sha256": sha256}
            atomic_write_json(done_file(folder, shard), marker)
            bar.update(1)
            if on_shard_done is not None:
                on_shard_done(shard)
    return ShardedDescriptors(folder, manifest)

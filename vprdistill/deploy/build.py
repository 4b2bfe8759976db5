"""Build a map index from images: a dataset split's database, or a folder of photos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vprdistill.data import readers
from vprdistill.data.readers import parse_place_filename
from vprdistill.deploy.index import MapIndex
from vprdistill.eval.extract import compute_descriptors
from vprdistill.utils.logging import get_logger

log = get_logger("deploy.build")


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (sorted, hidden skipped)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(path / relative for relative in readers.list_images(path))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image or folder {path} does not exist")
    return found


def positions_from_names(paths: Sequence[str | Path]) -> np.ndarray:
    """`(N, 2)` UTM (east, north) read from ``@east@north@...@.jpg`` names; NaN for names without '@' fields.

    A name that starts with '@' but does not parse is an error naming the file,
    since it most likely holds a typo rather than no position.
    """
    positions = np.full((len(paths), 2), np.nan)
    for row, path in enumerate(paths):
        if Path(path).name.startswith("@"):
            parsed = parse_place_filename(path)
            positions[row] = (parsed.east, parsed.north)
    return positions


def zone_from_names(paths: Sequence[str | Path]) -> str | None:
    """The one UTM zone the ``@east@north@zone@letter@…`` names give, ``None`` when they give none.

    Raises ``ValueError`` naming a file of each zone when they give several.
    """
    zones: dict[str, Path] = {}
    for path in paths:
        if Path(path).name.startswith("@"):
            zone = parse_place_filename(path).zone
            if zone:
                zones.setdefault(zone, Path(path))
    if len(zones) > 1:
        named = ", ".join(f"{zone} ({path.name})" for zone, path in zones.items())
        raise ValueError(f"the images' names give several UTM zones, which one map cannot mix: {named}")
    return next(iter(zones), None)


def compute_index_descriptors(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    image_size: tuple[int, int],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    shard_dir: str | Path | None = None,
    shard_size: int = 10000,
) -> np.ndarray:
    """Descriptors `(N, D)` of the images to index (the same extraction as evaluation).

    With ``shard_dir``, extraction writes shards to disk and resumes after an
    interruption without recomputing finished shards (large maps); the finished
    shards are then read back into one in-memory array (refused above 4 GiB by
    ``ShardedDescriptors.to_array``), since the map index is built from memory.
    """
    options = {"image_size": image_size, "batch_size": batch_size, "device": device, "progress": progress}
    if shard_dir is not None:
        from vprdistill.eval.sharded import extract_sharded

        return extract_sharded(model, list(paths), shard_dir, shard_size=shard_size, **options).to_array()
    return compute_descriptors(model, list(paths), desc="index", **options)


def build_map_index(
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    positions: np.ndarray,
    image_size: tuple[int, int],
    *,
    index_type: str = "flat",
    dtype: str = "float32",
    pca_dim: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    model_path: str | Path | None = None,
    progress: bool = True,
    shard_dir: str | Path | None = None,
    shard_size: int = 10000,
    utm_zone: str | None = None,
) -> MapIndex:
    """Describe ``paths`` with ``model`` and index them with their `(N, 2)` positions (not yet saved).

    ``utm_zone``: the positions' zone, recorded so answers also come in latitude and longitude.
    """
    from vprdistill.models.checkpoint import model_fingerprint

    if not paths:
        raise ValueError("no images to index")
    paths = [Path(p).resolve() for p in paths]
    descriptors = compute_index_descriptors(
        model, paths, image_size, batch_size, device, progress, shard_dir=shard_dir, shard_size=shard_size
    )
    index = MapIndex.create(
        descriptors,
        positions,
        paths,
        model_fingerprint=model_fingerprint(model),
        model_config=dict(getattr(model, "config", {})),
        image_size=image_size,
        index_type=index_type,
        dtype=dtype,
        pca_dim=pca_dim,
        model_path=None if model_path is None else str(Path(model_path).resolve()),
        utm_zone=utm_zone,
    )
    if "neighbour_recall_at_10" in index.manifest:
        log.info("neighbour recall@10 of the %s/%s index against exact search: %.3f",
                 index_type, dtype, index.manifest["neighbour_recall_at_10"])  # fmt: skip
    return index


def add_to_index(
    index: MapIndex,
    model: torch.nn.Module,
    paths: Sequence[str | Path],
    positions: np.ndarray,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> MapIndex:
    """Describe ``paths`` and append them to ``index`` (checked to be ``model``'s index)."""
    index.check_model(model)
    paths = [Path(p).resolve() for p in paths]
    descriptors = compute_index_descriptors(model, paths, index.image_size, batch_size, device, progress)
    index.add(descriptors, positions, paths)
    return index

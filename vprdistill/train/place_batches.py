"""Place-batched training data: each batch is P places × K views of each (GSV-Cities style).

The sampler draws the places of an epoch as a seeded permutation, so every
place is seen once per pass, and K distinct views of each (with repetition only
for a place that has fewer than K images). All randomness comes from the
generator the loop seeds by ``(seed, epoch)``, so a resumed epoch replays
exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class PlaceBatch:
    images: torch.Tensor  # (P·K, C, H, W)
    labels: torch.Tensor  # (P·K,) long, place labels
    image_index: torch.Tensor  # (P·K,) long, into the place set's images

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> PlaceBatch:
        return PlaceBatch(self.images.to(device, non_blocking=True), self.labels, self.image_index)


def place_batches(
    members: Sequence[np.ndarray], places_per_batch: int, views_per_place: int, steps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``steps`` batches of image indices, each ``places_per_batch`` places × ``views_per_place`` views.

    Args:
        members: per place label, the indices of its images (at least one each).
        rng: the epoch's generator.

    Returns:
        A list of ``(P·K,)`` int64 arrays, views of one place adjacent.
    """
    if places_per_batch > len(members):
        raise ValueError(
            f"data.places_per_batch is {places_per_batch}, but the place set has only {len(members)} places"
        )
    if places_per_batch < 2 or views_per_place < 2:
        raise ValueError(
            f"place batches need at least 2 places and 2 views per place, got "
            f"places_per_batch={places_per_batch}, views_per_place={views_per_place}"
        )
    batches: list[np.ndarray] = []
    order = rng.permutation(len(members))
    cursor = 0
    for _ in range(steps):
        if cursor + places_per_batch > len(order):
            order, cursor = rng.permutation(len(members)), 0
        chosen = order[cursor : cursor + places_per_batch]
        cursor += places_per_batch
        views = [
            rng.choice(members[place], size=views_per_place, replace=len(members[place]) < views_per_place)
            for place in chosen
        ]
        batches.append(np.concatenate(views).astype(np.int64))
    return batches


class PlaceImageDataset(Dataset):
    """Image index → (index, label, input tensor), with a given loader (RGB or one-hot segmentation)."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, load: Callable[[Path], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels)
        self.load = load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, int, torch.Tensor]:
        return int(index), int(self.labels[index]), self.load(self.paths[index])


def collate_places(samples: list[tuple[int, int, torch.Tensor]]) -> PlaceBatch:
    """Stack ``PlaceImageDataset`` items into a :class:`PlaceBatch`."""
    return PlaceBatch(
        images=torch.stack([s[2] for s in samples]),
        labels=torch.tensor([s[1] for s in samples], dtype=torch.long),
        image_index=torch.tensor([s[0] for s in samples], dtype=torch.long),
    )

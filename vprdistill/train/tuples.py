"""Mined tuples as a torch dataset, and the batch layout every method receives.

A batch holds B tuples with a variable number of negatives each. Images are
stacked flat — B queries, then B positives, then every tuple's negatives in
order — so the model runs once per batch with no padding images; the
descriptors are then split back into ``TupleDescriptors`` with a mask over
the padded negative slots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vprdistill.losses.types import TupleDescriptors
from vprdistill.train.mining import MinedTuple


@dataclass
class TupleBatch:
    images: torch.Tensor  # (B + B + sum(k_b), C, H, W): queries, positives, negatives
    query_index: torch.Tensor  # (B,) long, into the split's queries
    positive_index: torch.Tensor  # (B,) long, into the split's database
    negative_index: torch.Tensor  # (B, Nn) long, into the split's database; -1 where padded
    negative_mask: torch.Tensor  # (B, Nn) bool

    @property
    def batch_size(self) -> int:
        return int(self.query_index.shape[0])

    def to(self, device: torch.device) -> TupleBatch:
        return replace(
            self, images=self.images.to(device, non_blocking=True), negative_mask=self.negative_mask.to(device)
        )


class TupleDataset(Dataset):
    """Loads the images of mined tuples with a given loader (RGB or one-hot segmentation)."""

    def __init__(
        self,
        tuples: Sequence[MinedTuple],
        query_paths: Sequence[Path],
        database_paths: Sequence[Path],
        load: Callable[[Path], torch.Tensor],
    ) -> None:
        self.tuples = list(tuples)
        self.query_paths = query_paths
        self.database_paths = database_paths
        self.load = load

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, index: int):
        item = self.tuples[index]
        query = self.load(self.query_paths[item.query])
        positive = self.load(self.database_paths[item.positive])
        negatives = [self.load(self.database_paths[n]) for n in item.negatives]
        return item, query, positive, negatives


def collate_tuples(samples: list) -> TupleBatch:
    """Stack a list of ``TupleDataset`` items into a ``TupleBatch``."""
    items = [s[0] for s in samples]
    negatives = [torch.as_tensor(item.negatives, dtype=torch.long) for item in items]
    negative_index = torch.nn.utils.rnn.pad_sequence(negatives, batch_first=True, padding_value=-1)
    images = [s[1] for s in samples] + [s[2] for s in samples] + [n for s in samples for n in s[3]]
    return TupleBatch(
        images=torch.stack(images),
        query_index=torch.tensor([i.query for i in items], dtype=torch.long),
        positive_index=torch.tensor([i.positive for i in items], dtype=torch.long),
        negative_index=negative_index,
        negative_mask=negative_index >= 0,
    )


def split_tuple_descriptors(descriptors: torch.Tensor, batch: TupleBatch) -> TupleDescriptors:
    """Split flat descriptors ``(B + B + sum(k_b), D)`` into anchors, positives and padded negatives."""
    size = batch.batch_size
    anchor = descriptors[:size]
    positive = descriptors[size : 2 * size]
    flat_negatives = descriptors[2 * size :]
    negatives = descriptors.new_zeros((size, batch.negative_mask.shape[1], descriptors.shape[1]))
    # Scatter the flat negatives into their padded slots; rows of the mask are
    # filled left to right, which matches the flat order of collate_tuples.
    negatives = negatives.masked_scatter(batch.negative_mask.unsqueeze(-1), flat_negatives)
    return TupleDescriptors(anchor=anchor, positive=positive, negatives=negatives, negative_mask=batch.negative_mask)


def gather_cached_descriptors(
    query_descriptors: torch.Tensor, database_descriptors: torch.Tensor, batch: TupleBatch
) -> TupleDescriptors:
    """Look up a frozen model's cached descriptors for a batch: (M, D) and (N, D) tables → tuple layout."""
    mask = batch.negative_mask
    negatives = database_descriptors[batch.negative_index.clamp(min=0)] * mask.cpu().unsqueeze(-1)
    anchor, positive = query_descriptors[batch.query_index], database_descriptors[batch.positive_index]
    return TupleDescriptors(anchor, positive, negatives, mask).map(lambda rows: rows.to(mask.device))

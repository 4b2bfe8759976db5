"""Small tuple batches for the loss tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vprdistill.losses import TupleDescriptors


def random_tuples(
    batch: int = 3,
    num_negatives: int = 4,
    dim: int = 8,
    seed: int = 0,
    with_mask: bool = True,
    requires_grad: bool = False,
) -> TupleDescriptors:
    """L2-normalised random tuples; the mask (if any) drops the last negative of every other query."""
    generator = torch.Generator().manual_seed(seed)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1).requires_grad_(requires_grad)

    mask = None
    if with_mask:
        mask = torch.ones(batch, num_negatives, dtype=torch.bool)
        mask[::2, -1] = False
    return TupleDescriptors(unit(batch, dim), unit(batch, dim), unit(batch, num_negatives, dim), mask)


def tensor(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)

"""Data-parallel training on several processes: launch detection, collectives, BatchNorm modes.

``torchrun`` starts one process per GPU (or CPU worker) and sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`distributed_context` reads them,
joins the process group (NCCL on CUDA, gloo on the CPU) and leaves it at the
end. Without those variables it yields a one-process context whose
collectives do nothing, so the training loop has a single code path.

How the loop divides the work (docs/DISTRIBUTED.md):

- descriptor caches (mining, validation) are computed in contiguous shards,
  one per rank, and gathered, so every rank holds the same full cache;
- every rank mines the whole chunk with the same seeded generator, then takes
  its share of the tuples (:meth:`DistributedContext.share`);
- only rank 0 writes files; its result is broadcast, and a failure on any rank
  stops every rank instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vprdistill.train.config import BATCHNORM_MODES
from vprdistill.utils.device import resolve_device
from vprdistill.utils.logging import get_logger

logger = get_logger("distributed")

T = TypeVar("T")


class RankFailedError(RuntimeError):
    """Another rank failed; this one stops too (the cause is in that rank's log)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0

    def shard(self, total: int, rank: int | None = None) -> slice:
        """This rank's (or ``rank``'s) contiguous share of ``range(total)`` (sizes differ by at most one)."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(total, self.world_size)
        start = rank * base + min(rank, extra)
        return slice(start, start + base + (1 if rank < extra else 0))

    def share(self, items: Sequence[T]) -> list[T]:
        """Every ``world_size``-th item from this rank's offset, after dropping the remainder.

        Dropping the last ``len(items) % world_size`` items gives every rank the
        same number of items, so all ranks take the same number of optimiser
        steps (DDP needs each step on every rank). With batch size B per rank, the
        union of the ranks' k-th batches is items ``[kBW, (k+1)BW)``: the batch a
        single process with batch size B·W would take.
        """
        usable = len(items) - len(items) % self.world_size
        return list(items[self.rank : usable : self.world_size])

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks of a list of numbers (float64)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        # NCCL moves CUDA tensors only; gloo moves CPU tensors.
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def gather_rows(self, local: np.ndarray, total: int) -> np.ndarray:
        """Concatenate every rank's :meth:`shard` rows: local ``(n_r, D)`` → ``(total, D)`` float32 on every rank."""
        if not self.is_distributed:
            return local
        parts: list[np.ndarray | None] = [None] * self.world_size
        dist.all_gather_object(parts, np.ascontiguousarray(local, dtype=np.float32))
        for rank, part in enumerate(parts):
            share = self.shard(total, rank)
            if part.shape[0] != share.stop - share.start:
                raise ValueError(
                    f"rank {rank}: expected {share.stop - share.start} rows for its shard, got {part.shape[0]}"
                )
        return np.concatenate(parts)

    def raise_if_any_failed(self, error: BaseException | None) -> None:
        """Re-raise ``error`` here, and stop every other rank too when any rank failed."""
        failed = self.all_reduce_sum([1.0 if error is not None else 0.0])[0]
        if error is not None:
            raise error
        if failed:
            raise RankFailedError(f"rank {self.rank}: stopping because {int(failed)} other rank(s) failed")

    def run_where(self, run_here: bool, fn: Callable[[], T]) -> T | None:
        """Call ``fn`` on the ranks where ``run_here`` is true, then wait for all; a failure stops every rank."""
        result, error = None, None
        if run_here:
            try:
                result = fn()
            except Exception as caught:  # re-raised below, after the other ranks have been told
                error = caught
        self.raise_if_any_failed(error)
        return result

    def main_result(self, fn: Callable[[], T]) -> T:
        """``fn()`` computed on rank 0 only; every rank receives its value."""
        return self.broadcast_object(self.run_where(self.is_main, fn))

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        In training mode each rank updates its running statistics from its own
        batch after DDP broadcast rank 0's; without this the ranks would describe
        images with slightly different networks when they compute shards of a cache.
        """
        if not self.is_distributed:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``DistributedDataParallel(model)`` across ranks (gradients averaged); ``model`` itself alone."""
        if not self.is_distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)


def _launch_environment() -> tuple[int, int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set: start distributed training with "
            "torchrun (see docs/DISTRIBUTED.md)"
        )
    return int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(name: str, local_rank: int, distributed: bool) -> torch.device:
    """The device of a process: ``resolve_device(name)``, or ``cuda:LOCAL_RANK`` when distributed on CUDA."""
    device = resolve_device(name)
    if not distributed:
        return device
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible: "
                "use --nproc_per_node <= the number of GPUs"
            )
        return torch.device("cuda", local_rank)
    if device.type != "cpu":
        raise ValueError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device.type}")
    return device


@contextlib.contextmanager
def distributed_context(device_name: str = "auto", timeout_minutes: float = 30.0) -> Iterator[DistributedContext]:
    """Join the process group torchrun describes in the environment (or use one already joined).

    A group this function created is destroyed on exit; a group the caller
    created is left to the caller. Outside torchrun (``WORLD_SIZE`` unset or 1)
    it yields a one-process context on ``resolve_device(device_name)``.
    """
    joined = dist.is_available() and dist.is_initialized()
    if joined:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        rank, world_size, local_rank = _launch_environment()
    device = rank_device(device_name, local_rank, world_size > 1)
    if device.type == "cuda" and (joined or world_size > 1):
        torch.cuda.set_device(device)
    if joined or world_size == 1:
        yield DistributedContext(rank, world_size, local_rank, device)
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support; train with one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("rank %d of %d (local rank %d) on %s, backend %s", rank, world_size, local_rank, device, backend)
    try:
        yield DistributedContext(rank, world_size, local_rank, device)
    finally:
        dist.destroy_process_group()


def prepare_batchnorm(model: torch.nn.Module, mode: str, context: DistributedContext) -> torch.nn.Module:
    """Apply ``config.batchnorm`` before training: ``sync`` converts to ``SyncBatchNorm`` (CUDA, several ranks).

    ``batch``: each process normalises with its own batch's statistics (standard
    DDP); ``sync``: statistics of the global batch; ``frozen``: running
    statistics are kept fixed (see :func:`set_training_mode`), which makes the
    forward pass independent of how the batch is split.
    """
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {mode!r}")
    if mode != "sync" or not context.is_distributed:
        return model
    if context.device.type != "cuda":
        # torch's SyncBatchNorm raises on CPU tensors, so gloo runs cannot use it.
        raise ValueError("batchnorm: sync needs CUDA devices; on the CPU use batchnorm: batch or frozen")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def set_training_mode(model: torch.nn.Module, batchnorm: str) -> None:
    """``model.train()``, with BatchNorm layers kept in eval mode when ``batchnorm`` is ``frozen``.

    Frozen layers normalise with their running statistics and never update them;
    their affine weights still train.
    """
    model.train()
    if batchnorm == "frozen":
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

"""The one training loop: cached hard-negative mining, a method's loss, validation, checkpoints.

Every method (baseline triplet, TSCM, StructVPR, both teachers at once) runs
through ``train``; a method only contributes its frozen teachers and the loss
of a batch (``vprdistill.train.methods``).

Determinism: all randomness of an epoch (query order, negative sampling,
augmentation, dropout) is drawn from generators seeded by ``(seed, epoch)``,
so resuming from the checkpoint of epoch e replays epoch e+1 exactly as an
uninterrupted run would.

Under ``torchrun`` the same function runs in every process: descriptor caches
are computed in shards and gathered, every rank mines the same tuples and
trains the student (wrapped in ``DistributedDataParallel``) on its share of
them, and rank 0 alone writes the run folder (``train/distributed.py``,
docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.readers import open_dataset
from vprdistill.eval.evaluate import evaluate_descriptors
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.registry import build_model
from vprdistill.train.amp_compile import StudentForward, autocast, check_amp, grad_scaler
from vprdistill.train.config import TrainConfig, save_config
from vprdistill.train.distributed import DistributedContext, distributed_context, prepare_batchnorm, set_training_mode
from vprdistill.train.inputs import build_input_loader, input_paths
from vprdistill.train.methods import TrainingMethod
from vprdistill.train.mining import TripletMiner
from vprdistill.train.run_folder import RunFolder
from vprdistill.train.tuples import TupleDataset, collate_tuples, split_tuple_descriptors
from vprdistill.utils.device import set_threads
from vprdistill.utils.logging import get_logger, setup_logging
from vprdistill.utils.seed import seed_everything

logger = get_logger("train")

# Each rank draws its own augmentation and dropout; rank 0 keeps the one-process seeds.
_RANK_SEED_STRIDE = 1_000_003

@dataclass
class StepInfo:
    """What a step callback sees after each optimiser step."""

    epoch: int
    step: int
    loss: float
    model: torch.nn.Module


StepCallback = Callable[[StepInfo], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run folder keeps the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    best_recall_at_1: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool


def _subset_queries(dataset: PlaceDataset, limit: int | None, seed: int) -> PlaceDataset:
    if limit is None or limit >= dataset.num_queries:
        return dataset
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(dataset.num_queries, size=limit, replace=False))
    return dataset.subset(query_indices=keep)


def _build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optim.name == "adam":
        return torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.optim.lr, momentum=config.optim.momentum, weight_decay=config.optim.weight_decay
    )


def _describe(
    config: TrainConfig, model: torch.nn.Module, paths: list[Path], context: DistributedContext
) -> np.ndarray:
    """Descriptors ``(N, D)`` of ``paths``: each rank computes its shard, every rank gets all of them."""
    share = context.shard(len(paths))
    local = compute_descriptors(
        model,
        paths[share],
        image_size=config.data.image_size,
        batch_size=config.eval_batch_size,
        device=context.device,
        num_workers=config.data.num_workers,
        input_kind=config.data.input,
        structural_source=config.data.structural_source,
        progress=False,
    )
    return context.gather_rows(local, len(paths))


class _Validator:
    """Validation R@N of the student on the validation split (descriptors computed each epoch)."""

    def __init__(self, config: TrainConfig, dataset: PlaceDataset | None, context: DistributedContext) -> None:
        self.config = config
        self.dataset = dataset
        self.context = context

    def __call__(self, model: torch.nn.Module) -> dict[str, float] | None:
        if self.dataset is None:
            return None
        query_paths, database_paths = input_paths(self.dataset, self.config.data.input)
        database = _describe(self.config, model, database_paths, self.context)
        queries = _describe(self.config, model, query_paths, self.context)

        def recall() -> dict[str, float]:
            result = evaluate_descriptors(
                database, queries, self.dataset, threshold_m=self.config.threshold_m, recall_ns=self.config.recall_ns
            )
            return {str(k): float(v) for k, v in result.recall.items()}

        # Rank 0's figures decide best checkpoint and early stopping on every rank.
        return self.context.main_result(recall)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    step_callbacks: Sequence[StepCallback] = (),
) -> TrainResult:
    """Train ``config.model`` with ``config.method`` and write a run folder at ``out_dir``.

    With ``resume=True`` the run folder's last finished epoch is loaded (weights,
    optimizer, scheduler, early-stopping counters) and training continues from
    the next epoch.

    Started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), every
    process calls this function; ``config.batch_size`` is then per process, and
    rank 0's ``out_dir`` is the run folder of all.
    """
    with distributed_context(config.device) as context:
        return _train(config, out_dir, resume, step_callbacks, context)


def _train(
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool,
    step_callbacks: Sequence[StepCallback],
    context: DistributedContext,
) -> TrainResult:
    # Ranks may have picked different time-stamped folders; rank 0's is the run.
    run = RunFolder(context.broadcast_object(str(out_dir)))
    context.run_where(context.is_main, lambda: run.create(exist_ok=resume))
    if context.is_main:
        setup_logging(log_file=run.log_path)
    else:
        setup_logging(level=logging.WARNING)
    saved_config = config
    config = dataclasses.replace(config, progress=config.progress and context.is_main)
    set_threads(config.threads)
    device = context.device
    check_amp(config.amp, device)
    seed_everything(config.seed)
    context.run_where(context.is_main, lambda: save_config(saved_config, run.config_path))
    logger.info("run %s on %s (%d threads)%s", run.path, device, torch.get_num_threads(), " — resuming" if resume else "")
    if context.is_distributed:
        logger.info("data parallel on %d processes: global batch %d tuples (batch_size %d per process)",
                    context.world_size, config.batch_size * context.world_size, config.batch_size)

    if not config.data.dataset:
        raise ValueError("data.dataset is empty: give the dataset root, e.g. data.dataset=path/to/synthcity")
    train_set = open_dataset(
        config.data.dataset, split=config.data.train_split, reader=config.data.reader,
        skip_bad_images=config.data.skip_bad_images,
    )
    train_set = _subset_queries(train_set, config.data.max_train_queries, config.seed)
    val_set = None
    if config.data.val_split:
        val_set = open_dataset(
            config.data.dataset, split=config.data.val_split, reader=config.data.reader,
            skip_bad_images=config.data.skip_bad_images,
        )
        val_set = _subset_queries(val_set, config.data.max_val_queries, config.seed + 1)
    validate = _Validator(config, val_set, context)

    model_config = config.model if isinstance(config.model, dict) else {"preset": config.model}
    # The training size travels with the weights, so eval/index/export default to it.
    model = build_model(dict(model_config, image_size=list(config.data.image_size)), pretrained=config.pretrained)
    model = prepare_batchnorm(model.to(device), config.batchnorm, context)
    method = TrainingMethod(config, device)
    # One process per machine fills the teacher caches; the others then read them.
    context.run_where(context.local_rank == 0, lambda: method.prepare(train_set))
    context.run_where(context.local_rank != 0, lambda: method.prepare(train_set))
    miner = TripletMiner(
        train_set,
        positive_radius_m=config.mining.positive_radius_m,
        negative_radius_m=config.mining.negative_radius_m,
        num_negatives=config.mining.num_negatives,
        negative_samples=min(config.mining.negative_samples, train_set.num_database),
        margin=config.mining.margin,
    )
    optimizer = _build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.optim.lr_decay)
    scaler = grad_scaler(config.amp, device)

    start_epoch, best_recall, best_epoch, stale_epochs = 1, -1.0, 0, 0
    if resume:
        state = run.load_last(model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_recall, best_epoch = float(state["best_recall"]), int(state["best_epoch"])
        stale_epochs = int(state["stale_epochs"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        context.run_where(context.is_main, lambda: run.truncate_metrics(start_epoch - 1))
        logger.info("resumed after epoch %d (best R@1 %.2f at epoch %d)", start_epoch - 1, best_recall, best_epoch)

    forward = StudentForward(context.wrap(model), compile=config.compile)
    writer = _tensorboard_writer(run.path) if config.tensorboard and context.is_main else None
    load_input = build_input_loader(config.data, train=True)
    query_paths, database_paths = input_paths(train_set, config.data.input)
    epochs_run, stopped_early = start_epoch - 1, False

    for epoch in range(start_epoch, config.epochs + 1):
        if stale_epochs >= config.patience:
            stopped_early = True
            break
        epoch_start = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch + _RANK_SEED_STRIDE * context.rank)
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(miner.trainable_queries)
        chunk = config.mining.refresh_every or len(order)
        term_sums: dict[str, float] = {}
        steps, tuples_trained, skipped = 0, 0, 0
        set_training_mode(model, config.batchnorm)
        bar = tqdm(total=len(order), desc=f"epoch {epoch}/{config.epochs}", unit="q", disable=not config.progress,
                   leave=False, dynamic_ncols=True)
        for chunk_start in range(0, len(order), chunk):
            chunk_queries = order[chunk_start : chunk_start + chunk]
            context.sync_buffers(model)
            query_desc, database_desc = _mining_cache(config, model, method, train_set, chunk_queries, context)
            # Every rank mines the whole chunk with the same generator, then trains on its share.
            tuples, stats = miner.mine(chunk_queries, query_desc, database_desc, rng)
            skipped += stats.skipped_no_violation
            bar.update(stats.skipped_no_violation)
            set_training_mode(model, config.batchnorm)
            loader = DataLoader(
                TupleDataset(context.share(tuples), query_paths, database_paths, load_input),
                batch_size=config.batch_size,
                shuffle=False,  # the order is already a seeded permutation
                num_workers=config.data.num_workers,
                collate_fn=collate_tuples,
            )
            for batch in loader:
                batch = batch.to(device)
                step_start = time.perf_counter()
                with autocast(config.amp, device):
                    descriptors = forward(batch.images)
                output = method.loss(batch, split_tuple_descriptors(descriptors.float(), batch))
                # The mean over ranks: every rank sees the same value, so all stop together on NaN.
                loss_value = context.all_reduce_sum([float(output.total.detach())])[0] / context.world_size
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss_value}) at epoch {epoch}, step {steps + 1}: "
                        f"terms {output.terms}. Training stopped; {run.path} keeps the last good checkpoint "
                        "(lower optim.lr or check the data)."
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(output.total).backward()
                if config.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                steps += 1
                tuples_trained += batch.batch_size
                for key, value in output.terms.items():
                    term_sums[key] = term_sums.get(key, 0.0) + float(value)
                rate = batch.images.shape[0] / max(time.perf_counter() - step_start, 1e-9)
                bar.update(batch.batch_size * context.world_size)
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.0f}")
                for callback in step_callbacks:
                    callback(StepInfo(epoch, steps, loss_value, model))
        bar.close()
        scheduler.step()
        term_sums, tuples_trained = _sum_over_ranks(context, term_sums, tuples_trained)

        context.sync_buffers(model)
        recall = validate(model)
        recall_at_1 = recall["1"] if recall else -float(epoch)  # no validation: the latest epoch is the best
        improved = recall_at_1 > best_recall
        if improved:
            best_recall, best_epoch, stale_epochs = recall_at_1, epoch, 0
            context.run_where(context.is_main, lambda: run.save_best(model))
        else:
            stale_epochs += 1
        record = {
            "epoch": epoch,
            "steps": steps,
            "tuples": tuples_trained,
            "queries_skipped_no_violation": skipped,
            "lr": optimizer.param_groups[0]["lr"],
            "loss": {k: v / max(steps * context.world_size, 1) for k, v in term_sums.items()},
            "val_recall": recall,
            "best_epoch": best_epoch,
            "seconds": round(time.perf_counter() - epoch_start, 2),
            "world_size": context.world_size,
        }
        state = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "best_recall": best_recall,
            "best_epoch": best_epoch,
            "stale_epochs": stale_epochs,
        }

        def save_epoch() -> None:
            run.append_metrics(record)
            run.save_last(model, state)
            _log_epoch(record, recall, writer)

        # Also the barrier after saving: no rank starts the next epoch before rank 0 has saved.
        context.run_where(context.is_main, save_epoch)
        epochs_run = epoch

    if writer is not None:
        writer.close()
    return TrainResult(run.path, best_recall, best_epoch, epochs_run, stopped_early)


def _sum_over_ranks(
    context: DistributedContext, term_sums: dict[str, float], tuples_trained: int
) -> tuple[dict[str, float], int]:
    """The epoch's loss-term sums and tuple count over all ranks (every rank has the same term names)."""
    if not context.is_distributed:
        return term_sums, tuples_trained
    keys = sorted(term_sums)
    totals = context.all_reduce_sum([term_sums[k] for k in keys] + [tuples_trained])
    return dict(zip(keys, totals[:-1])), int(round(totals[-1]))


def _mining_cache(
    config: TrainConfig,
    model: torch.nn.Module,
    method: TrainingMethod,
    dataset: PlaceDataset,
    chunk_queries: np.ndarray,
    context: DistributedContext,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors used for mining: (M, D) queries (rows of ``chunk_queries`` filled) and (N, D) database."""
    if config.mining.cache_model == "teacher":
        queries, database = method.mining_descriptors()
        return queries.numpy(), database.numpy()
    query_paths, database_paths = input_paths(dataset, config.data.input)
    database = _describe(config, model, database_paths, context)
    chunk_descriptors = _describe(config, model, [query_paths[q] for q in chunk_queries], context)
    queries = np.zeros((dataset.num_queries, database.shape[1]), dtype=np.float32)
    queries[chunk_queries] = chunk_descriptors
    return queries, database


def _log_epoch(record: dict, recall: dict[str, float] | None, writer) -> None:
    recall_text = ", ".join(f"R@{k} {v:.2f}" for k, v in recall.items()) if recall else "no validation split"
    logger.info(
        "epoch %d: loss %.4f, %s, %d steps, %.1fs",
        record["epoch"], record["loss"].get("total", float("nan")), recall_text, record["steps"], record["seconds"],
    )
    if writer is None:
        return
    for key, value in record["loss"].items():
        writer.add_scalar(f"loss/{key}", value, record["epoch"])
    for key, value in (recall or {}).items():
        writer.add_scalar(f"val/R@{key}", value, record["epoch"])
    writer.add_scalar("lr", record["lr"], record["epoch"])


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard: true, but the tensorboard package is not installed "
                       "(pip install 'vprdistill[tensorboard]'); continuing without it")
        return None
    return SummaryWriter(log_dir=str(path / "tensorboard"))

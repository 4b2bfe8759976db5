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

Run folders (``train/run_folder.py``, docs/RELIABILITY.md): the writing process
holds the run's lock from start to end, so a second training of the same folder
is refused; on resume, the config is compared with the run's ``config.yaml``
before anything is written, and every epoch's checkpoint replaces the previous
one as a unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.place_images import PlaceImages, open_place_images
from vprdistill.data.readers import open_dataset_with_source
from vprdistill.data.structural import StructuralClassMap
from vprdistill.data.two_folders import read_two_folders_with_source
from vprdistill.eval.evaluate import evaluate_descriptors
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.registry import build_model
from vprdistill.train.amp_compile import StudentForward, autocast, check_amp, grad_scaler
from vprdistill.train.config import TrainConfig, describe_change, resume_changes, save_config
from vprdistill.train.distributed import DistributedContext, distributed_context, prepare_batchnorm, set_training_mode
from vprdistill.train.init_from import init_weights_from
from vprdistill.train.inputs import InputLoader, input_paths
from vprdistill.train.methods import TrainingMethod
from vprdistill.train.mining import TripletMiner, log_mining_round, miner_from_config
from vprdistill.train.place_batches import PlaceImageDataset, collate_places, place_batches
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
    """The loss became NaN or infinite; the run folder keeps the checkpoint of the last finished epoch, if any."""


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


def _split_line(kind: str, split: str, source: object, dataset: PlaceDataset) -> str:
    return f"{kind} split {split!r}: {source}, {dataset.num_database} database images, {dataset.num_queries} queries"


def open_train_val(config: TrainConfig) -> tuple[PlaceDataset | None, PlaceDataset | None]:
    """The training split and the validation split (None when ``data.val_split`` is empty).

    With place batches (``data.places``) no training split is opened (None).

    Each split is opened on its own: ``data.dataset`` naming ``<name>_train.mat``
    gives the validation split ``<name>_val.mat`` beside it, and ``data.name``
    chooses the set in a folder holding several. The file (with its
    ``whichSet``) or folder of each split goes to the log, and a validation
    split read from the training split's own source is warned about, since
    early stopping and the best checkpoint would then be chosen on training
    queries. The query subsets of ``data.max_*_queries`` are applied.
    """
    data = config.data
    if not data.dataset and not (data.places and data.database):
        raise ValueError("data.dataset is empty: give the dataset root, e.g. data.dataset=path/to/synthcity")
    options = {key: getattr(data, key) for key in ("reader", "skip_bad_images", "name", "segmentation_dir")}
    # Place batches train on data.places; data.dataset gives the validation split only.
    train_set, train_source = None, None
    if not data.places:
        train_set, train_source = open_dataset_with_source(data.dataset, split=data.train_split, **options)
        logger.info(_split_line("training", data.train_split, train_source, train_set))
        train_set = _subset_queries(train_set, data.max_train_queries, config.seed)
    if data.database:
        # Two folders (data.database, data.queries) replace data.dataset's data.val_split.
        val_set, val_source = read_two_folders_with_source(
            data.database, data.queries, data.positions, skip_bad_images=data.skip_bad_images, split="val"
        )
    elif not data.val_split:
        logger.info("no validation split (data.val_split is empty): the last epoch counts as the best")
        return train_set, None
    else:
        val_set, val_source = open_dataset_with_source(data.dataset, split=data.val_split, **options)
    val_set = _subset_queries(val_set, data.max_val_queries, config.seed + 1)
    without = sum(len(p) == 0 for p in val_set.positives(config.threshold_m))
    logger.info(
        "%s (%d without a positive within %g m: %s)",
        _split_line("validation", data.val_split, val_source, val_set),
        without,
        config.threshold_m,
        config.queries_without_positive,
    )
    if val_source == train_source:
        logger.warning(
            "the validation split is read from %s, as the training split: early stopping and the best "
            "checkpoint are chosen on training queries",
            val_source,
        )
    return train_set, val_set


def _build_optimizer(
    config: TrainConfig, model: torch.nn.Module, extra: Sequence[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    # ``extra``: the method's own parameters (teacher projections), trained with the student.
    parameters = [p for p in model.parameters() if p.requires_grad] + list(extra)
    if config.optim.name == "adam":
        return torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.optim.lr, momentum=config.optim.momentum, weight_decay=config.optim.weight_decay
    )


def train(
    config: TrainConfig, out_dir: str | Path, resume: bool = False, step_callbacks: Sequence[StepCallback] = ()
) -> TrainResult:
    """Train ``config.model`` with ``config.method`` and write a run folder at ``out_dir``.

    With ``resume=True`` the run folder's last finished epoch is loaded (weights,
    optimizer, scheduler, early-stopping counters) and training continues from
    the next epoch.

    Started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), every
    process calls this function; ``config.batch_size`` is then per process, and
    rank 0's ``out_dir`` is the run folder of all.

    Raises:
        FolderLockedError: another process trains into ``out_dir`` (nothing is written).
        FileExistsError: a new run into a non-empty ``out_dir``.
        FileNotFoundError: ``resume`` of a run that holds no checkpoint yet.
        ValueError: ``resume`` with a changed key outside ``RESUME_SAFE_KEYS`` (nothing
            is written), or a checkpoint whose files do not belong together.
        CheckpointSaveError: an epoch's checkpoint could not be written (full disk);
            the previous checkpoint is intact.
        NonFiniteLossError: the loss became NaN or infinite.
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
    with contextlib.ExitStack() as stack:
        # Rank 0 alone writes the run folder, so it alone holds the run's lock, until training ends.
        changes = context.run_where(context.is_main, lambda: _open_run(run, config, resume, stack))
        config = _start(config, run, resume, context, changes or [])
        train_set, val_set = open_train_val(config)
        session = _Session(config, run, context, train_set, val_set, resume, step_callbacks)
        start_epoch = session.epoch + 1
        epochs_run, stopped_early = start_epoch - 1, False
        for epoch in range(start_epoch, config.epochs + 1):
            if session.stale_epochs >= config.patience:
                stopped_early = True
                break
            session.train_epoch(epoch)
            session.end_epoch(epoch)
            epochs_run = epoch
        if session.writer is not None:
            session.writer.close()
        return TrainResult(run.path, session.best_recall, session.best_epoch, epochs_run, stopped_early)


def _open_run(
    run: RunFolder, config: TrainConfig, resume: bool, stack: contextlib.ExitStack
) -> list[tuple[str, object, object]]:
    """Lock the run folder and check a resume before anything is written; return the allowed config changes."""
    stack.enter_context(run.lock())
    changes: list[tuple[str, object, object]] = []
    if resume:
        run.recover()
        run.require_checkpoint()
        changes = resume_changes(run.config_path, config)
    run.create(exist_ok=resume)
    return changes


def _start(
    config: TrainConfig,
    run: RunFolder,
    resume: bool,
    context: DistributedContext,
    changes: list[tuple[str, object, object]],
) -> TrainConfig:
    """Logging, threads, seeds and the run's ``config.yaml``; the config this process trains with."""
    setup_logging(log_file=run.log_path) if context.is_main else setup_logging(level=logging.WARNING)
    saved_config = config
    config = dataclasses.replace(config, progress=config.progress and context.is_main)
    set_threads(config.threads)
    check_amp(config.amp, context.device)
    seed_everything(config.seed)
    context.run_where(context.is_main, lambda: save_config(saved_config, run.config_path))
    resuming = " — resuming" if resume else ""
    logger.info("run %s on %s (%d threads)%s", run.path, context.device, torch.get_num_threads(), resuming)
    for key, before, after in changes:
        logger.info("config changed on resume: %s", describe_change(key, before, after))
    if context.is_distributed:
        logger.info(
            "data parallel on %d processes: global batch %d tuples (batch_size %d per process)",
            context.world_size,
            config.batch_size * context.world_size,
            config.batch_size,
        )
    return config


def _build_student(config: TrainConfig, resume: bool, context: DistributedContext) -> torch.nn.Module:
    """The student model on the device, from ``config.model`` (and ``init_from`` on a new run)."""
    model_config = config.model if isinstance(config.model, dict) else {"preset": config.model}
    # The training size travels with the weights, so eval/index/export default to it.
    # Weights loaded from init_from replace ImageNet ones, so none are loaded first.
    pretrained = config.pretrained and not config.init_from
    model = build_model(dict(model_config, image_size=list(config.data.image_size)), pretrained=pretrained)
    if config.data.input == "seg":
        # Saved with the weights, so evaluation and a StructVPR teacher read maps as in training.
        model.structural_class_map = StructuralClassMap.from_yaml(source=config.data.structural_source)
    if config.init_from and not resume:
        logger.info("model weights from %s", init_weights_from(model, config.init_from))
    return prepare_batchnorm(model.to(context.device), config.batchnorm, context)


class _Session:
    """The state of one training run between epochs: model, method, optimiser, counters.

    ``epoch`` is the last finished epoch (0: none), which is also the epoch of the
    checkpoint in the run folder.
    """

    def __init__(
        self,
        config: TrainConfig,
        run: RunFolder,
        context: DistributedContext,
        train_set: PlaceDataset | None,
        val_set: PlaceDataset | None,
        resume: bool,
        step_callbacks: Sequence[StepCallback],
    ) -> None:
        self.config, self.run, self.context, self.train_set, self.val_set = config, run, context, train_set, val_set
        self.step_callbacks = step_callbacks
        self.model = _build_student(config, resume, context)
        self.method = TrainingMethod(config, context.device, student_dim=getattr(self.model, "descriptor_dim", None))
        self.places = _open_places(config) if config.data.places else None
        self.miner = self._prepare_method()
        self.optimizer = _build_optimizer(config, self.model, self.method.parameters())
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=config.optim.lr_decay)
        self.scaler = grad_scaler(config.amp, context.device)
        self.epoch, self.best_recall, self.best_epoch, self.stale_epochs = 0, -1.0, 0, 0
        if resume:
            self._restore()
        self.forward = StudentForward(context.wrap(self.model), compile=config.compile)
        self.writer = _tensorboard_writer(run.path) if config.tensorboard and context.is_main else None
        self.load_input = InputLoader(config.data, train=True)

    def _prepare_method(self) -> TripletMiner | None:
        """Fill the teachers' caches; the miner of tuple training (None for place batches), logged."""
        config, method, places = self.config, self.method, self.places
        prepare = functools.partial(method.prepare, self.train_set, places)
        # One process per machine fills the teacher caches; the others then read them.
        self.context.run_where(self.context.local_rank == 0, prepare)
        self.context.run_where(self.context.local_rank != 0, prepare)
        if places is None:
            miner = miner_from_config(config.mining, self.train_set)
            # The margin of the student's triplet term, next to the (separate) mining margin.
            margin = method.margin if method.student_loss is None else getattr(method.student_loss, "margin", "none")
            logger.info("%s; loss margin %s", miner.describe(), margin)
            return miner
        logger.info(
            "place batches: %d places x %d views per batch, %d batches per epoch; in-batch tuples with %d negatives",
            config.data.places_per_batch,
            config.data.views_per_place,
            _place_steps(config, places),
            config.mining.num_negatives,
        )
        return None

    def _restore(self) -> None:
        """Load the run's last finished epoch: weights, optimiser, scheduler, counters, projections, miner."""
        state = self.run.load_last(self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_recall, self.best_epoch = float(state["best_recall"]), int(state["best_epoch"])
        self.stale_epochs = int(state["stale_epochs"])
        for key, part in (("projections", self.method), ("scaler", self.scaler), ("miner", self.miner)):
            if state.get(key) and part is not None:  # absent or empty: nothing of it was saved
                part.load_state_dict(state[key])
        self._apply_optimizer_config()
        self.context.run_where(self.context.is_main, lambda: self.run.truncate_metrics(self.epoch))
        logger.info("resumed after epoch %d (best R@1 %.2f at epoch %d)", self.epoch, self.best_recall, self.best_epoch)

    def _apply_optimizer_config(self) -> None:
        """Give the restored optimizer and scheduler the config's optim values where they changed on resume.

        ``optim.lr`` is the rate of epoch 1 and ``optim.lr_decay`` its factor per epoch,
        so after a change the next epoch trains at ``lr * lr_decay ** self.epoch`` (the finished epochs),
        as if the run had used the new values from the start. Unchanged values are left
        exactly as restored (an uninterrupted run and a resumed one stay bit-identical).
        """
        optim, optimizer, scheduler, finished_epochs = self.config.optim, self.optimizer, self.scheduler, self.epoch
        if optim.lr != scheduler.base_lrs[0] or optim.lr_decay != scheduler.gamma:
            lr = optim.lr * optim.lr_decay**finished_epochs
            scheduler.base_lrs = [optim.lr for _ in optimizer.param_groups]
            scheduler.gamma = optim.lr_decay
            for group in optimizer.param_groups:
                group["initial_lr"], group["lr"] = optim.lr, lr
            scheduler._last_lr = [lr for _ in optimizer.param_groups]  # what get_last_lr reports until the next step
            logger.info(
                "learning-rate schedule from the config: optim.lr %g, optim.lr_decay %g: epoch %d trains at lr %g",
                optim.lr,
                optim.lr_decay,
                finished_epochs + 1,
                lr,
            )
        for name, value in (("weight_decay", optim.weight_decay), ("momentum", optim.momentum)):
            groups = [g for g in optimizer.param_groups if name in g and g[name] != value]
            for group in groups:
                group[name] = value
            if groups:
                logger.info("optim.%s %g from the config applied to the restored optimizer", name, value)

    def train_epoch(self, epoch: int) -> None:
        """One epoch of optimiser steps, on place batches or on mined tuples; fills the epoch's counters."""
        config, context = self.config, self.context
        self.epoch_start = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch + _RANK_SEED_STRIDE * context.rank)
        rng = np.random.default_rng([config.seed, epoch])
        self.term_sums: dict[str, float] = {}
        self.steps, self.tuples_trained, self.skipped, self.mining_rounds = 0, 0, 0, []
        set_training_mode(self.model, config.batchnorm)
        if self.places is not None:
            batches = place_batches(
                self.places.members(),
                config.data.places_per_batch,
                config.data.views_per_place,
                _place_steps(config, self.places),
                rng,
            )
            self.bar = self._progress(epoch, sum(len(b) for b in batches), "img")
            for batch in self._place_loader(batches):
                self._step(epoch, batch, self.method.place_loss)
        else:
            order = rng.permutation(self.miner.trainable_queries)
            self.bar = self._progress(epoch, len(order), "q")
            self._train_tuples(epoch, order, rng)
        self.bar.close()
        self.scheduler.step()
        # The epoch's loss-term sums and tuple count over all ranks (every rank has the same term names).
        keys = sorted(self.term_sums)
        totals = context.all_reduce_sum([self.term_sums[k] for k in keys] + [self.tuples_trained])
        self.term_sums, self.tuples_trained = dict(zip(keys, totals[:-1])), round(totals[-1])

    def _progress(self, epoch: int, total: int, unit: str) -> tqdm:
        return tqdm(
            total=total,
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit=unit,
            disable=not self.config.progress,
            leave=False,
            dynamic_ncols=True,
        )

    def _place_loader(self, batches: list) -> DataLoader:
        places = self.places
        # _open_places has checked that the maps exist when the student reads them.
        place_paths = places.seg_paths if self.config.data.input == "seg" else places.paths
        return DataLoader(
            PlaceImageDataset(place_paths, places.labels, self.load_input),
            batch_sampler=[batch.tolist() for batch in self.context.share(batches)],  # precomputed batches
            num_workers=self.config.data.num_workers,
            collate_fn=collate_places,
        )

    def _train_tuples(self, epoch: int, order: np.ndarray, rng: np.random.Generator) -> None:
        """Mine the epoch's queries in chunks of ``mining.refresh_every`` and train on each chunk's tuples."""
        config, context, model = self.config, self.context, self.model
        query_paths, database_paths = input_paths(self.train_set, config.data.input)
        chunk = config.mining.refresh_every or len(order)
        for chunk_start in range(0, len(order), chunk):
            chunk_queries = order[chunk_start : chunk_start + chunk]
            context.sync_buffers(model)
            query_desc, database_desc = self._mining_cache(chunk_queries)
            # Every rank mines the whole chunk with the same generator, then trains on its share.
            tuples, stats = self.miner.mine(chunk_queries, query_desc, database_desc, rng)
            self.skipped += stats.skipped_no_violation
            self.mining_rounds.append(stats.as_dict())
            log_mining_round(epoch, len(self.mining_rounds), stats)
            self.bar.update(stats.skipped_no_violation)
            set_training_mode(model, config.batchnorm)
            loader = DataLoader(
                TupleDataset(context.share(tuples), query_paths, database_paths, self.load_input),
                batch_size=config.batch_size,
                shuffle=False,  # the order is already a seeded permutation
                num_workers=config.data.num_workers,
                collate_fn=collate_tuples,
            )
            for batch in loader:
                self._step(epoch, batch, lambda b, d: self.method.loss(b, split_tuple_descriptors(d, b)))

    def _step(self, epoch: int, batch, compute_loss) -> None:
        """One optimiser step on a batch (tuples or places); updates the epoch's counters."""
        config, context, device, optimizer = self.config, self.context, self.context.device, self.optimizer
        batch = batch.to(device)
        step_start = time.perf_counter()
        with autocast(config.amp, device):
            descriptors = self.forward(batch.images)
        output = compute_loss(batch, descriptors.float())
        # The mean over ranks: every rank sees the same value, so all stop together on NaN.
        loss_value = context.all_reduce_sum([float(output.total.detach())])[0] / context.world_size
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(self._non_finite_message(loss_value, epoch, output.terms))
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(output.total).backward()
        if (
            context.is_distributed
        ):  # the method's own gradients (teacher projections), averaged as DDP does the student's
            for parameter in self.method.parameters():
                if parameter.grad is None:  # every rank must reduce the same tensors, in the same order
                    parameter.grad = torch.zeros_like(parameter)
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad.div_(context.world_size)
        if config.optim.grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        self.steps += 1
        self.tuples_trained += batch.batch_size
        for key, value in output.terms.items():
            self.term_sums[key] = self.term_sums.get(key, 0.0) + float(value)
        rate = batch.images.shape[0] / max(time.perf_counter() - step_start, 1e-9)
        self.bar.update(batch.batch_size * context.world_size)
        self.bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.0f}")
        for callback in self.step_callbacks:
            callback(StepInfo(epoch, self.steps, loss_value, self.model))

    def _describe(self, paths: list[Path]) -> np.ndarray:
        """Descriptors ``(N, D)`` of ``paths`` by the student: each rank computes its shard, every rank gets all."""
        config, context = self.config, self.context
        local = compute_descriptors(
            self.model,
            paths[context.shard(len(paths))],
            image_size=config.data.image_size,
            batch_size=config.eval_batch_size,
            device=context.device,
            num_workers=config.data.num_workers,
            input_kind=config.data.input,
            structural_source=config.data.structural_source,
            progress=False,
        )
        return context.gather_rows(local, len(paths))

    def _validate(self) -> dict[str, float] | None:
        """Validation R@N of the student on the validation split (descriptors computed each epoch); None without one."""
        if self.val_set is None:
            return None
        query_paths, database_paths = input_paths(self.val_set, self.config.data.input)
        database, queries = self._describe(database_paths), self._describe(query_paths)

        def recall() -> dict[str, float]:
            result = evaluate_descriptors(
                database,
                queries,
                self.val_set,
                threshold_m=self.config.threshold_m,
                recall_ns=self.config.recall_ns,
                queries_without_positive=self.config.queries_without_positive,
            )
            return {str(k): float(v) for k, v in result.recall.items()}

        # Rank 0's figures decide best checkpoint and early stopping on every rank.
        return self.context.main_result(recall)

    def _mining_cache(self, chunk_queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors used for mining: (M, D) queries (rows of ``chunk_queries`` filled) and (N, D) database."""
        if self.config.mining.cache_model == "teacher":
            queries, database = self.method.mining_descriptors()
            return queries.numpy(), database.numpy()
        query_paths, database_paths = input_paths(self.train_set, self.config.data.input)
        database = self._describe(database_paths)
        chunk_descriptors = self._describe([query_paths[q] for q in chunk_queries])
        queries = np.zeros((self.train_set.num_queries, database.shape[1]), dtype=np.float32)
        queries[chunk_queries] = chunk_descriptors
        return queries, database

    def _non_finite_message(self, loss: float, epoch: int, terms: dict) -> str:
        """What happened, what the run folder holds now, and the command that continues with a lower rate."""
        lower, path, saved_epoch = f"optim.lr={self.config.optim.lr / 10:g}", self.run.path, self.epoch
        found = f"non-finite loss ({loss}) at epoch {epoch}, step {self.steps + 1}: terms {terms}. Training stopped."
        if saved_epoch < 1:
            return (
                f"{found} No epoch finished, so {path} holds no checkpoint; start a new run with a lower "
                f"learning rate ({lower}) or check the data."
            )
        return (
            f"{found} {path} keeps the checkpoint of epoch {saved_epoch}; continue from it with a lower "
            f"learning rate: vprdistill train --resume {path} {lower} (or check the data)."
        )

    def end_epoch(self, epoch: int) -> None:
        """Validate, update best and early-stopping counters, and save the epoch's record and checkpoint."""
        context = self.context
        context.sync_buffers(self.model)
        recall = self._validate()
        # Without a validation split every epoch is the best so far (best_recall stays -1: none measured).
        improved = recall is None or recall["1"] > self.best_recall
        if improved:
            self.best_epoch, self.stale_epochs = epoch, 0
            if recall is not None:
                self.best_recall = recall["1"]
        else:
            self.stale_epochs += 1
        record = {
            "epoch": epoch,
            "steps": self.steps,
            "tuples": self.tuples_trained,
            "queries_skipped_no_violation": self.skipped,
            "queries_skipped_share": self.skipped / max(sum(r["queries"] for r in self.mining_rounds), 1),
            "mining_rounds": self.mining_rounds,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": {k: v / max(self.steps * context.world_size, 1) for k, v in self.term_sums.items()},
            "val_recall": recall,
            "best_epoch": self.best_epoch,
            "seconds": round(time.perf_counter() - self.epoch_start, 2),
            "world_size": context.world_size,
        }
        state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_recall": self.best_recall,
            "best_epoch": self.best_epoch,
            "stale_epochs": self.stale_epochs,
            "miner": self.miner.state_dict() if self.miner is not None and self.miner.carry_negatives else {},
            # Teacher projections: trained with the student but not part of it (never in its weights files).
            "projections": self.method.state_dict(),
        }

        def save_epoch() -> None:
            self.run.save_epoch(record, self.model, state, is_best=improved)
            _log_epoch(record, recall, self.writer)

        # Also the barrier after saving: no rank starts the next epoch before rank 0 has saved.
        context.run_where(context.is_main, save_epoch)
        self.epoch = epoch


def _open_places(config: TrainConfig) -> PlaceImages:
    """The place set of place-batched training (``data.places``), logged."""
    places = open_place_images(
        config.data.places, cities=config.data.cities, min_views=2, maps_dir=config.data.places_segmentation_dir
    )
    # Checked here, before any teacher is loaded or epoch run, rather than at the first batch.
    seg_teachers = [t for t in (config.method.get("teachers") or []) if isinstance(t, dict) and t.get("input") == "seg"]
    if places.seg_paths is None and (config.data.input == "seg" or seg_teachers):
        who = "data.input 'seg'" if config.data.input == "seg" else "a teacher with input: seg"
        raise ValueError(
            f"{who} needs a class map of every place image in {places.root / config.data.places_segmentation_dir}"
            "/<city>/<image stem>.png (data.places_segmentation_dir); write them with `vprdistill segment "
            f"{places.root} --model SEGMENTER --maps-dir NAME`"
        )
    if places.num_places < config.data.places_per_batch:
        raise ValueError(
            f"data.places_per_batch is {config.data.places_per_batch}, but {config.data.places} holds only "
            f"{places.num_places} places with 2 or more views"
        )
    logger.info("training places: %s, %d places, %d images", places.root, places.num_places, places.num_images)
    return places


def _place_steps(config: TrainConfig, places: PlaceImages) -> int:
    """Batches per epoch: ``data.place_batches_per_epoch``, or one pass over the places."""
    return int(config.data.place_batches_per_epoch or max(1, places.num_places // config.data.places_per_batch))


def _log_epoch(record: dict, recall: dict[str, float] | None, writer) -> None:
    recall_text = ", ".join(f"R@{k} {v:.2f}" for k, v in recall.items()) if recall else "no validation split"
    logger.info(
        "epoch %d: loss %.4f, %s, %d steps, %.1fs",
        record["epoch"],
        record["loss"].get("total", float("nan")),
        recall_text,
        record["steps"],
        record["seconds"],
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
        logger.warning(
            "tensorboard: true, but the tensorboard package is not installed "
            "(pip install 'vprdistill[tensorboard]'); continuing without it"
        )
        return None
    return SummaryWriter(log_dir=str(path / "tensorboard"))

"""Train a small SegFormer on SynthCity's day images: a segmenter whose errors grow in other conditions.

SynthCity's own maps are ground truth, identical across conditions, so a
StructVPR seg-branch fed with them never sees the segmentation errors a real
segmenter makes at night or in fog. This module trains a deliberately small
SegFormer (``transformers.SegformerConfig``, random initialisation) on the
train split's images of the chosen conditions (by default ``day-clear-summer``,
the whole SynthCity train database) against their ground-truth maps; applied
to night/fog/snow queries it meets conditions it never saw. Only horizontal
flips augment the images: photometric augmentation would teach the network the
very invariance whose absence we want.

The result is a ``save_pretrained`` folder (safetensors weights, config with the
19 Cityscapes trainId names, ``SegformerImageProcessor`` config) that
``vprdistill segment --model DIR`` and
:func:`vprdistill.data.segmenter.load_segmentation_model` load unchanged, plus
``segmenter_training.json`` (settings, loss per epoch, evaluation). The folder
is written atomically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from vprdistill.data.images import load_image, load_segmentation
from vprdistill.data.segmentation_labels import CITYSCAPES_TRAIN_ID_NAMES, VOID_ID
from vprdistill.train.segmenter_config import SegmenterTrainingConfig
from vprdistill.utils.atomic import atomic_write_json
from vprdistill.utils.atomic_folder import atomic_folder
from vprdistill.utils.extras import require
from vprdistill.utils.logging import get_logger
from vprdistill.utils.seed import seed_everything

log = get_logger("train.segmenter")

MARKER = "segmenter_training.json"
NUM_CLASSES = len(CITYSCAPES_TRAIN_ID_NAMES)


@dataclass
class SegmenterTrainingResult:
    """What :func:`train_segmenter` did: the folder, the images, the loss of each epoch, the evaluation."""

    out: Path
    images: int
    epoch_losses: list[float]
    seconds: float
    evaluation: dict[str, Any] | None = None


def build_segformer(config: SegmenterTrainingConfig) -> torch.nn.Module:
    """A randomly initialised ``SegformerForSemanticSegmentation`` with the 19 Cityscapes trainId classes."""
    transformers = require("transformers", "segment", "SegFormer training")

    stages = len(config.hidden_sizes)
    model_config = transformers.SegformerConfig(
        num_encoder_blocks=stages,
        depths=list(config.depths),
        hidden_sizes=list(config.hidden_sizes),
        num_attention_heads=list(config.num_attention_heads),
        # SegFormer's own per-stage defaults, cut to the number of stages.
        sr_ratios=[8, 4, 2, 1][-stages:] if stages <= 4 else [1] * stages,
        patch_sizes=([7] + [3] * (stages - 1)),
        strides=([4] + [2] * (stages - 1)),
        mlp_ratios=[4] * stages,
        decoder_hidden_size=config.decoder_hidden_size,
        num_labels=NUM_CLASSES,
        id2label=dict(enumerate(CITYSCAPES_TRAIN_ID_NAMES)),
        label2id={name: i for i, name in enumerate(CITYSCAPES_TRAIN_ID_NAMES)},
        semantic_loss_ignore_index=VOID_ID,
    )
    return transformers.SegformerForSemanticSegmentation(model_config)


def build_processor(image_size: int) -> Any:
    """The ``SegformerImageProcessor`` saved with the model: resize to ``image_size`` square, ImageNet normalisation."""
    transformers = require("transformers", "segment", "SegFormer training")

    return transformers.SegformerImageProcessor(
        size={"height": image_size, "width": image_size}, do_reduce_labels=False
    )


def training_pairs(
    dataset: Any, conditions: Sequence[str] | None, max_images: int | None = None, seed: int = 0
) -> list[tuple[Path, Path]]:
    """``(image, ground-truth map)`` of a split's database and queries whose condition is in ``conditions``.

    ``conditions=None`` takes every image. ``max_images`` keeps a seeded random
    subset (in path order). Raises ``ValueError`` naming the dataset when it has
    no maps, no condition notes while conditions are asked for, or no image of them.
    """
    where = f"dataset {dataset.name!r} split {dataset.split!r} at {dataset.root}"
    if not dataset.has_segmentation:
        raise ValueError(f"{where} has no segmentation maps (ROOT/segmentation/{dataset.split}/...)")
    pairs: list[tuple[Path, Path, str | None]] = []
    for images, maps, notes in (
        (dataset.database_paths, dataset.database_seg_paths, dataset.database_notes),
        (dataset.query_paths, dataset.query_seg_paths, dataset.query_notes),
    ):
        if conditions is not None and notes is None:
            raise ValueError(
                f"{where}: its file names carry no condition (the note field), so conditions "
                f"{list(conditions)} cannot select images; pass conditions=None (--conditions all)"
            )
        for index, (image, seg) in enumerate(zip(images, maps)):
            pairs.append((Path(image), Path(seg), None if notes is None else notes[index]))
    if conditions is not None:
        wanted = set(conditions)
        found = sorted({note for _, _, note in pairs if note is not None})
        pairs = [pair for pair in pairs if pair[2] in wanted]
        if not pairs:
            raise ValueError(f"{where}: no image of condition(s) {sorted(wanted)}; conditions present: {found}")
    if max_images is not None and max_images < len(pairs):
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_images, replace=False))
        pairs = [pairs[i] for i in keep]
    return [(image, seg) for image, seg, _ in pairs]


def load_pairs(
    pairs: Sequence[tuple[Path, Path]], image_size: int, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and resize every pair: images ``(N, 3, S, S)`` uint8 and labels ``(N, S, S)`` int64.

    Images are resized bilinearly (as the image processor does), maps with
    nearest neighbour (ids must not blend). Raises ``ValueError`` naming the map
    whose size differs from its image's or that holds an id outside 0..18 and 255.
    """
    size = (image_size, image_size)
    images = np.empty((len(pairs), image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty((len(pairs), image_size, image_size), dtype=np.uint8)
    valid_ids = np.isin(np.arange(256), [*range(NUM_CLASSES), VOID_ID])  # by id: a trainId or void
    for index, (image_path, map_path) in enumerate(
        tqdm(pairs, desc="loading images", unit="img", disable=not progress, leave=False)
    ):
        image = load_image(image_path)
        class_map = load_segmentation(map_path)
        if class_map.shape != (image.height, image.width):
            raise ValueError(
                f"segmentation map {map_path} is {class_map.shape[1]}x{class_map.shape[0]} but its image "
                f"{image_path} is {image.width}x{image.height}"
            )
        bad = ~valid_ids[class_map]
        if bad.any():
            raise ValueError(
                f"segmentation map {map_path} holds id {int(class_map[bad][0])}, expected Cityscapes trainIds "
                f"0..{NUM_CLASSES - 1} or {VOID_ID} (void)"
            )
        images[index] = np.asarray(image.resize(size, Image.BILINEAR) if image.size != size else image)
        labels[index] = np.asarray(Image.fromarray(class_map).resize(size, Image.NEAREST))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def normalise(images: torch.Tensor, processor: Any) -> torch.Tensor:
    """``(B, 3, S, S)`` uint8 -> float32 rescaled and normalised exactly as ``processor`` does."""
    mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() * float(processor.rescale_factor) - mean) / std


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits (B, C, h, w)`` upsampled to ``labels (B, H, W)``, void (255) ignored."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=VOID_ID)


def train_segmenter(
    dataset_root: str | Path,
    out: str | Path,
    config: SegmenterTrainingConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    eval_split: str | None = "val",
    eval_max_images: int | None = None,
) -> SegmenterTrainingResult:
    """Train the segmenter on ``dataset_root``'s ``config.split`` and save it to ``out`` (atomically).

    ``eval_split`` (``None``: skip): after training, the saved model is measured
    (:func:`vprdistill.eval.segmentation.evaluate_segmenter`) on that split's
    database and per query condition, and the result joins ``segmenter_training.json``.
    Raises ``ValueError`` naming the dataset or file for unusable data, and
    ``FileExistsError`` if ``out`` is a non-empty folder of something else.
    """
    from vprdistill.data.readers import open_dataset
    from vprdistill.data.segmenter import Segmenter
    from vprdistill.eval.segmentation import evaluate_segmenter
    from vprdistill.utils.atomic_folder import check_replaceable

    config = config or SegmenterTrainingConfig()
    config.validate()
    out = Path(out)
    check_replaceable(out, MARKER)  # fail before minutes of training, not after
    device = torch.device(device)
    start = time.perf_counter()
    seed_everything(config.seed)

    dataset = open_dataset(dataset_root, split=config.split)
    pairs = training_pairs(dataset, config.conditions, config.max_images, config.seed)
    log.info("training a segmenter on %d images of %s (%s)", len(pairs), dataset_root, config.conditions or "all")
    images, labels = load_pairs(pairs, config.image_size, progress)
    processor = build_processor(config.image_size)

    torch.manual_seed(config.seed)
    model = build_segformer(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    # Polynomial decay, SegFormer's schedule: large steps first, small ones to settle.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / total_steps) ** 0.9)
    generator = torch.Generator().manual_seed(config.seed)

    epoch_losses: list[float] = []
    model.train()
    with tqdm(total=total_steps, desc="training segmenter", unit="step", disable=not progress) as bar:
        for epoch in range(config.epochs):
            order = torch.randperm(len(pairs), generator=generator)
            total = 0.0  # the sum of the batches' losses times their sizes, over every image of the epoch
            for begin in range(0, len(pairs), config.batch_size):
                batch = order[begin : begin + config.batch_size]
                x, y = images[batch], labels[batch]
                if config.flip:
                    flip = torch.rand(len(batch), generator=generator) < 0.5
                    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
                    y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
                logits = model(pixel_values=normalise(x.to(device), processor)).logits
                loss = segmentation_loss(logits, y.to(device))
                if not torch.isfinite(loss):
                    raise RuntimeError(f"segmenter loss is not finite ({loss.item()}) at epoch {epoch + 1}; lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(batch)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            epoch_losses.append(total / len(pairs))
            log.info("epoch %d/%d: mean loss %.4f", epoch + 1, config.epochs, epoch_losses[-1])
    model.eval()

    record: dict[str, Any] = {
        "config": asdict(config),
        "dataset": str(dataset_root),
        "images": len(pairs),
        "epoch_losses": epoch_losses,
        "train_seconds": time.perf_counter() - start,  # training only, before saving and evaluation
        "parameters": sum(p.numel() for p in model.parameters()),
        "evaluation": None,
    }
    with atomic_folder(out, MARKER, what="segmenter folder") as staging:
        model.to("cpu").save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        if eval_split:
            # Measured through the same loader ``vprdistill segment`` uses.
            segmenter = Segmenter(staging, device=device)
            segmenter.name = str(out)  # the staging folder is renamed to ``out`` when done
            evaluation = evaluate_segmenter(
                segmenter, open_dataset(dataset_root, split=eval_split), progress=progress, max_images=eval_max_images
            )
            record["evaluation"] = evaluation.as_dict()
        atomic_write_json(staging / MARKER, record)
    return SegmenterTrainingResult(
        out=out,
        images=len(pairs),
        epoch_losses=epoch_losses,
        seconds=time.perf_counter() - start,
        evaluation=record["evaluation"],
    )

"""``vprdistill train-segmenter`` and ``vprdistill eval-segmenter``: a small SegFormer trained on day images, its mIoU.

StructVPR's seg-branch needs maps with realistic errors; SynthCity's are ground
truth. ``train-segmenter`` trains a small SegFormer on the train split's day
images; ``eval-segmenter`` measures any segmenter's mIoU per query condition.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args, add_image_size_arg, apply_device_args

TRAIN_EPILOG = """examples:
  vprdistill train-segmenter --dataset data/synthcity --out runs/segmenter --epochs 30 --threads 1
  vprdistill train-segmenter --dataset data/synthcity --out runs/segmenter --conditions all --max-images 200
  vprdistill segment data/synthcity --model runs/segmenter --maps-dir segmentation-predicted

Training images: the split's database and queries whose condition (the note field of the
@-separated file name) is one of --conditions, against their maps in ROOT/segmentation/<split>/.
Loss: cross-entropy, void (255) ignored; AdamW with polynomial decay; horizontal flips only.
The output folder (written atomically) holds config.json, model.safetensors and
preprocessor_config.json, loadable by 'vprdistill segment --model OUT', and
segmenter_training.json (settings, loss per epoch, the --eval-split mIoU)."""

EVAL_EPILOG = """examples:
  vprdistill eval-segmenter --model runs/segmenter --dataset data/synthcity --split test
  vprdistill eval-segmenter --model runs/segmenter --dataset data/synthcity --split test --json miou.json

Output: a markdown table on stdout (one row for the database, all queries, and the queries of each
condition: images, mIoU %, pixel accuracy %, mIoU relative to the database's) and with --json F the
full result: {"model", "dataset", "split", "groups": {NAME: {"images", "pixels", "miou",
"pixel_accuracy", "iou": {class: IoU}}}}. IoU per class = TP / (TP + FP + FN) over all pixels of the
group (confusion matrix); void (255) truth pixels are ignored; classes absent from both truth and
prediction are left out of the mean (null)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from vprdistill.train.segmenter_config import SegmenterTrainingConfig

    defaults = SegmenterTrainingConfig()
    train = add_command(
        subparsers, "train-segmenter", run_train,
        "train a small SegFormer on a dataset's day images (realistic maps for StructVPR)",
        "Train a small, randomly initialised SegFormer (19 Cityscapes trainIds) on the images of "
        "chosen conditions of a folder-format dataset with ground-truth maps (SynthCity), save it with "
        "save_pretrained and report its mIoU per condition on --eval-split.",
        TRAIN_EPILOG,
    )  # fmt: skip
    train.add_argument("--dataset", type=Path, required=True, metavar="ROOT", help="dataset root (holds images/)")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="output model folder")
    train.add_argument("--split", default=defaults.split, help="split to train on")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--image-size", type=int, default=defaults.image_size, metavar="PX",
                       help="square network input during training (and the saved processor's size)")  # fmt: skip
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak learning rate")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--conditions", nargs="+", default=list(defaults.conditions or []), metavar="COND",
                       help="conditions (file-name note) of the training images; 'all' for every image")  # fmt: skip
    train.add_argument("--max-images", type=int, default=None, metavar="N",
                       help="train on a seeded random subset of N images; None: all")  # fmt: skip
    train.add_argument("--hidden-sizes", type=int, nargs="+", default=defaults.hidden_sizes, metavar="C",
                       help="SegFormer channels per stage")  # fmt: skip
    train.add_argument("--decoder-hidden-size", type=int, default=defaults.decoder_hidden_size)
    train.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    train.add_argument("--eval-split", default="val",
                       help="split whose mIoU is measured after training ('none' to skip)")  # fmt: skip
    train.add_argument("--eval-max-images", type=int, default=None, metavar="N",
                       help="at most N images of the database and of each query condition in the evaluation")  # fmt: skip
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_device_args(train)

    evaluate = add_command(
        subparsers, "eval-segmenter", run_eval,
        "mIoU of a segmentation model per query condition against ground-truth maps",
        "Segment a split's database and query images with a model (a save_pretrained folder or hub "
        "id, as for 'vprdistill segment') and compare with the dataset's ground-truth maps "
        "(ROOT/segmentation/<split>/): confusion-matrix mIoU for the database, the queries, and each query "
        "condition.",
        EVAL_EPILOG,
    )  # fmt: skip
    evaluate.add_argument("--model", required=True, metavar="ID_OR_PATH", help="segmentation model folder or hub id")
    evaluate.add_argument("--dataset", type=Path, required=True, metavar="ROOT", help="dataset root with maps")
    evaluate.add_argument("--split", default="test")
    add_image_size_arg(evaluate, "network input as for 'vprdistill segment'; None: the processor's size", metavar="PX")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--max-images", type=int, default=None, metavar="N",
                          help="at most N images of the database and of each query condition")  # fmt: skip
    evaluate.add_argument("--json", type=Path, default=None, metavar="F", help="also write the result as JSON")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_args(evaluate)


def run_train(args: argparse.Namespace) -> int:
    from vprdistill.eval.segmentation import SegmentationEvaluation
    from vprdistill.train.segmenter import SegmenterTrainingConfig, train_segmenter
    from vprdistill.utils.logging import setup_logging

    setup_logging()
    device = apply_device_args(args)
    conditions = None if [c.lower() for c in args.conditions] == ["all"] else list(args.conditions)
    defaults = SegmenterTrainingConfig()
    stages = len(args.hidden_sizes)
    # One block per stage, and as many heads as the default for that width allows (the most, up to
    # the stage's default, that divide its width; stages beyond the defaults take the last one's).
    wanted = defaults.num_attention_heads + [defaults.num_attention_heads[-1]] * stages
    heads = [next(h for h in range(max(1, w), 0, -1) if size % h == 0) for size, w in zip(args.hidden_sizes, wanted)]
    # The options named as the config's fields, and the others.
    same = ("epochs", "image_size", "batch_size", "lr", "seed", "split", "max_images", "decoder_hidden_size")
    config = SegmenterTrainingConfig(
        **{field: getattr(args, field) for field in same},
        conditions=conditions,
        flip=not args.no_flip,
        hidden_sizes=list(args.hidden_sizes),
        depths=[1] * stages,
        num_attention_heads=heads,
    )
    result = train_segmenter(
        args.dataset, args.out, config, device=device, progress=not args.no_progress,
        eval_split=None if args.eval_split.lower() in {"", "none"} else args.eval_split, eval_max_images=args.eval_max_images,
    )  # fmt: skip
    if result.evaluation is not None:
        evaluation = SegmentationEvaluation(**result.evaluation)
        print(f"mIoU of {result.out} on split {evaluation.split!r} (%):")
        print(evaluation.markdown())
    summary = {"out": str(result.out), "images": result.images, "epoch_losses": result.epoch_losses,
               "seconds": round(result.seconds, 1)}  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from vprdistill.data.readers import open_dataset
    from vprdistill.data.segmenter import Segmenter
    from vprdistill.eval.segmentation import evaluate_segmenter
    from vprdistill.utils.atomic import atomic_write_json
    from vprdistill.utils.logging import setup_logging

    setup_logging()
    device = apply_device_args(args)
    dataset = open_dataset(args.dataset, split=args.split)
    segmenter = Segmenter(args.model, device=device, image_size=args.image_size)
    evaluation = evaluate_segmenter(
        segmenter, dataset, batch_size=args.batch_size, progress=not args.no_progress, max_images=args.max_images
    )
    print(evaluation.markdown())
    if args.json is not None:
        atomic_write_json(args.json, evaluation.as_dict())
    return 0

"""mIoU per query condition of the small SegFormer trained on SynthCity's day images.

Trains ``vprdistill.train.segmenter`` on an existing SynthCity dataset's train
split (``day-clear-summer`` images, the whole train database), then measures its
mIoU against the ground-truth maps of the test split's database and of each of
its 8 query conditions, and prints a markdown table. Nothing is written into the
dataset: predictions are compared in memory.

    python benchmarks/segmenter_miou.py --dataset /tmp/sc-small --out /tmp/segmenter-small \
        [--epochs 30] [--image-size 128] [--threads 1] [--json result.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vprdistill.eval.segmentation import SegmentationEvaluation
from vprdistill.train.segmenter import SegmenterTrainingConfig, train_segmenter
from vprdistill.utils.device import set_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="SynthCity root (read only)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--json", type=Path, default=None, help="also write the evaluation as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    set_threads(args.threads)
    config = SegmenterTrainingConfig(
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    start = time.perf_counter()
    result = train_segmenter(args.dataset, args.out, config, progress=not args.no_progress, eval_split=args.eval_split)
    total = time.perf_counter() - start
    record = json.loads((args.out / "segmenter_training.json").read_text(encoding="utf-8"))
    evaluation = SegmentationEvaluation(**result.evaluation)  # type: ignore[arg-type]
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(
        f"{result.images} training images, {config.epochs} epochs, {record['parameters']} parameters, "
        f"training {record['train_seconds']:.0f} s, total {total:.0f} s, threads {args.threads}"
    )
    print(f"loss per epoch: first {result.epoch_losses[0]:.3f}, last {result.epoch_losses[-1]:.3f}")
    print(f"\nmIoU (%) on split {evaluation.split!r}:\n")
    print(evaluation.markdown())
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``vprdistill segment``: segmentation maps for a dataset (StructVPR's seg-branch input), folder or ``.mat``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args, add_image_size_arg, apply_device_args

EPILOG = """examples:
  vprdistill segment data/msls --splits train val
  vprdistill segment data/msls --splits val --batch-size 4 --image-size 512
  vprdistill segment data/pitts --name pitts30k --splits train val test   # NetVLAD .mat files
  vprdistill segment data/pitts/datasets/pitts30k_test.mat --model models/segformer-b0-cityscapes --device cuda
  vprdistill segment data/synthcity --model runs/segmenter --maps-dir segmentation-predicted   # keep ground truth

Maps are single-channel PNGs of Cityscapes trainIds (0 road ... 18 bicycle, 255 void), at each
image's own size. Folder format: ROOT/segmentation/<split>/<database|queries>/<image name>.png,
mirroring ROOT/images. NetVLAD .mat files: IMAGE_ROOT/segmentation/<whichSet>/database/<listed path>.png
and .../queries/<listed path>.png, where the dataset reader finds them.
Existing maps are kept, so an interrupted run resumes; --overwrite redoes them.
--maps-dir NAME writes the same tree to ROOT/NAME/ instead of ROOT/segmentation/ (e.g. predicted maps
beside SynthCity's ground truth); the dataset reader opens it with segmentation_dir=NAME."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from vprdistill.data.segmentation_labels import DEFAULT_SEGMENTATION_MODEL

    parser = add_command(
        subparsers, "segment", run, "compute segmentation maps of a dataset (for StructVPR)",
        "Run a semantic-segmentation model (Hugging Face transformers) on every image of a "
        "folder-format dataset (ROOT/images/<split>/) or of NetVLAD .mat files and write Cityscapes-trainId "
        "maps to the dataset's segmentation/ folder, plus classes.json.",
        EPILOG,
    )  # fmt: skip
    parser.add_argument("dataset", type=Path, metavar="DATASET",
                        help="folder-format dataset root (holds images/), a NetVLAD .mat file, or a folder of .mat "
                             "files (in it or in datasets/)")  # fmt: skip
    parser.add_argument("--name", default=None, metavar="SET",
                        help="for a folder of .mat files: the set to segment, e.g. pitts30k for pitts30k_<split>.mat; "
                             "None: every set")  # fmt: skip
    parser.add_argument("--model", default=DEFAULT_SEGMENTATION_MODEL, metavar="ID_OR_PATH",
                        help="hub model id (read from the local cache when offline) or a folder saved with save_pretrained")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass of the network")
    parser.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                        help="splits to segment, e.g. train val test; None: every split present")  # fmt: skip
    add_image_size_arg(
        parser,
        "network input: one value S resizes each image's shorter side to S, keeping its "
        "aspect ratio; H W resizes to exactly H x W; None: the shorter side becomes the image "
        "processor's size",
        metavar="PX",
    )
    parser.add_argument("--maps-dir", default="segmentation", metavar="NAME",
                        help="folder of the dataset root (image root for .mat files) that receives the maps, "
                             "e.g. segmentation-predicted to leave existing ground-truth maps untouched")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="processes decoding images while the network runs")
    parser.add_argument("--overwrite", action="store_true", help="recompute maps that already exist")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="log unreadable images and go on instead of stopping at the first")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_args(parser)


def run(args: argparse.Namespace) -> int:
    from vprdistill.data.segmenter import segment_dataset
    from vprdistill.utils.logging import setup_logging

    setup_logging()
    device = apply_device_args(args)
    report = segment_dataset(
        args.dataset, model_id_or_path=args.model, batch_size=args.batch_size, splits=args.splits, device=device,
        overwrite=args.overwrite, skip_bad_images=args.skip_bad_images, progress=not args.no_progress,
        image_size=args.image_size, num_workers=args.workers, name=args.name, maps_dir=args.maps_dir,
    )  # fmt: skip
    print(json.dumps(report.as_dict(), indent=2))
    return 0

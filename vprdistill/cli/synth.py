"""``vprdistill synth OUT_DIR``: generate the SynthCity procedural dataset."""

from __future__ import annotations

import argparse
import json

from vprdistill.cli.common import add_command
from vprdistill.data.synth.conditions import valid_condition_help
from vprdistill.data.synth.config import PRESETS

DESCRIPTION = """Render a procedural city as a VPR dataset (folder format, Cityscapes-trainId
class maps, dataset.json). A folder that already holds the same dataset is
reused."""


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "generate SynthCity, a procedural geotagged street-scene dataset with class maps"
    parser = add_command(subparsers, "synth", run, summary, DESCRIPTION)
    parser.add_argument("out_dir", help="output folder (created; reused when it holds the same dataset)")
    parser.add_argument("--preset", default="small", choices=list(PRESETS), help="dataset size")
    parser.add_argument("--seed", type=int, default=0, help="city and traversal seed")
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    parser.add_argument("--conditions", nargs="+", default=None, metavar="CONDITION",
                        help=f"query condition mix (None: the preset's); {valid_condition_help()}")  # fmt: skip
    parser.add_argument("--database-condition", default=None,
                        help="condition of the database images (None: day-clear-summer)")  # fmt: skip
    parser.add_argument("--spacing", type=float, default=None, help="database spacing in metres (None: the preset's)")
    parser.add_argument("--headings", type=int, default=None, help="database headings per point (None: 4)")
    parser.add_argument("--queries", type=int, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"),
                        help="queries per split (None: the preset's)")  # fmt: skip
    parser.add_argument("--train-places", type=int, default=None, metavar="N",
                        help="also write N train-region places in the GSV-Cities layout under OUT_DIR/places "
                             "(None: 0, no place set)")  # fmt: skip
    parser.add_argument("--views-per-place", type=int, default=None, metavar="K",
                        help="views of each place under distinct conditions (None: 4)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="worker processes (None: CPU count)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from vprdistill.data.synth import generate

    overrides = {
        "database_condition": args.database_condition,
        "spacing_m": args.spacing,
        "headings": args.headings,
        "train_places": args.train_places,
        "views_per_place": args.views_per_place,
    }
    if args.queries is not None:
        overrides.update(queries_train=args.queries[0], queries_val=args.queries[1], queries_test=args.queries[2])
    out = generate(
        args.out_dir, preset=args.preset, seed=args.seed, image_size=args.image_size, conditions=args.conditions,
        workers=args.workers, progress=not args.no_progress, **{k: v for k, v in overrides.items() if v is not None},
    )  # fmt: skip
    manifest = json.loads((out / "dataset.json").read_text())
    sizes = ", ".join(f"{split} {n['database']} db / {n['queries']} q" for split, n in manifest["splits"].items())
    print(f"SynthCity ({args.preset}, seed {args.seed}) in {out}: {sizes}")
    places = manifest.get("places")
    if places:
        print(f"places: {places['count']} x {places['views']} views in {out / places['root']} (GSV-Cities layout)")
    print(f"contact sheet: {out / 'contact_sheet.png'}")
    return 0

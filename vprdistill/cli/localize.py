"""vprdistill localize: where were these photos taken? Matches photos against a map index.

  vprdistill localize --index map_index photo.jpg other.jpg
  vprdistill localize --index map_index photos/ --topk 3 --json
  vprdistill localize --index map_index drive/frames/ --stream --smooth 5

A photo that cannot be read is reported in its place (with its reason, in the
field "error" of --json) and the others are localised; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args, add_index_model_arg, apply_device_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "localize", run, help="localise photos against a map index", description=__doc__)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    add_index_model_arg(parser)
    parser.add_argument("--topk", type=int, default=5, help="matches per photo")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line with --stream)")
    parser.add_argument("--stream", action="store_true", help="localise frames one by one in name order, one line each")
    parser.add_argument("--smooth", type=int, default=0, metavar="N",
                        help="with --stream: also report the median position of the last N known frames")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="photos per forward pass (without --stream)")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N", help="default: the index's")
    add_device_args(parser)


def _format_position(position) -> str:
    if position is None or not all(map(math.isfinite, position)):
        return "position unknown"
    return f"({position[0]:.1f} E, {position[1]:.1f} N)"


def format_line(result) -> str:
    """One human-readable line: query, verdict, best match, position, score, confidence."""
    if result.error is not None:
        return f"{result.source}: ERROR {result.error}"
    best = result.best
    verdict = "UNKNOWN (off the map)" if result.unknown else _format_position(result.position)
    line = f"{result.source}: {verdict}"
    if best is not None:
        line += f"  best {Path(best.path).name} score {best.score:.4f} confidence {best.confidence:.2f}"
    smoothed = result.extra.get("smoothed_position")
    if "smoothed_position" in result.extra:
        line += f"  smoothed {_format_position(smoothed)}"
    return line


def run(args: argparse.Namespace) -> int:
    from vprdistill.deploy.build import list_images
    from vprdistill.deploy.localizer import Localizer
    from vprdistill.deploy.stream import localize_stream

    if args.topk < 1 or args.batch_size < 1:
        raise ValueError("--topk and --batch-size must be at least 1")
    if args.smooth and not args.stream:
        raise ValueError("--smooth applies to --stream")
    device = apply_device_args(args)
    image_size = None
    if args.image_size is not None:
        image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size[:2])
    localizer = Localizer.from_index_folder(
        args.index, args.model, device=device, image_size=image_size, on_unreadable="report"
    )
    paths = list_images(args.images)
    if not paths:
        raise ValueError(f"no images (.jpg, .jpeg, .png) in {', '.join(map(str, args.images))}")
    if args.stream:
        unreadable = 0
        for result in localize_stream(localizer, [str(p) for p in paths], args.topk, args.smooth):
            print(json.dumps(result.to_dict()) if args.json else format_line(result), flush=True)
            unreadable += result.error is not None
        return _report_unreadable(unreadable, len(paths))
    results = []
    for start in range(0, len(paths), args.batch_size):
        results.extend(localizer.localize([str(p) for p in paths[start : start + args.batch_size]], topk=args.topk))
    if args.json:
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        print()
    else:
        for result in results:
            print(format_line(result))
            for match in result.matches:
                print(f"    {match.rank}. {Path(match.path).name}  {_format_position(match.position)}  "
                      f"score {match.score:.4f}  confidence {match.confidence:.2f}")  # fmt: skip
    return _report_unreadable(sum(r.error is not None for r in results), len(paths))


def _report_unreadable(unreadable: int, total: int) -> int:
    """The exit status: 1 when some photo could not be read (each was reported in its place)."""
    if unreadable:
        print(f"{unreadable} of {total} photos could not be read", file=sys.stderr)
    return 1 if unreadable else 0

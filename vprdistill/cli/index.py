"""vprdistill index: build, extend and calibrate the map index of an area.

  vprdistill index build --model runs/student --dataset data/synthcity --split test --out map_index
  vprdistill index build --model runs/student --images photos/ --out map_index --pca 256 --dtype int8
  vprdistill index build --model runs/student --database mycity/db --positions mycity/positions.csv --out map_index
  vprdistill index add map_index new_photos/
  vprdistill index calibrate map_index --dataset data/synthcity --split val
  vprdistill index calibrate map_index --database val/db --queries val/q --positions val/positions.csv

--positions FILE.csv gives positions to --images or --database folders: a CSV with a
header path,lat,lon or path,east,north (docs/DATASETS.md). --images keeps photos
without a position (stored as NaN); --database and --queries need every position.

Commands that write an index take turns: each holds a lock on it (the file
.INDEX_DIR.lock beside the folder) from reading the index to writing it. A
second writer is refused at once, or waits up to --wait SECONDS for the first.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vprdistill.cli.common import add_command, add_dataset_args, add_device_args, add_index_model_arg, apply_device_args
from vprdistill.deploy.index import DTYPES, INDEX_TYPES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "index", None, help="build, extend and calibrate a map index", description=__doc__)
    actions = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    build = add_command(actions, "build", run_build, help="describe the images of an area and index them")
    build.add_argument(
        "--model", required=True, metavar="RUN_OR_CHECKPOINT", help="a trained model (run folder or checkpoint)"
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, metavar="PATH", help="index the database of a dataset split")
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="index a folder of photos (@east@north@...@.jpg names give positions)")  # fmt: skip
    source.add_argument("--database", type=Path, metavar="DIR",
                        help="index a folder of database images, each with a position (names or --positions)")  # fmt: skip
    build.add_argument("--positions", type=Path, default=None, metavar="FILE.csv",
                       help="with --images or --database: positions, header path,lat,lon or path,east,north")  # fmt: skip
    build.add_argument("--utm-zone", default=None, metavar="ZONE",
                       help="with --positions or @ names: the UTM zone of the positions, e.g. 17T")  # fmt: skip
    build.add_argument("--split", default="test", help="split of --dataset")
    build.add_argument("--out", required=True, type=Path, metavar="INDEX_DIR")
    build.add_argument(
        "--type", default="flat", choices=INDEX_TYPES, help="exact flat search or an approximate faiss index"
    )
    build.add_argument("--pca", type=int, default=None, metavar="D", help="reduce descriptors to D dimensions by PCA")
    build.add_argument("--dtype", default="float32", choices=DTYPES, help="how flat indexes store descriptors")
    build.add_argument("--shards", type=Path, default=None, metavar="DIR",
                       help="stream descriptors to DIR in shards; a rerun after an interruption keeps finished shards")  # fmt: skip
    build.add_argument("--shard-size", type=int, default=10000, help="images per shard (with --shards)")
    build.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                       help="input side or H W (default: the training run's, else the model's)")  # fmt: skip
    _add_run_args(build)

    add = add_command(actions, "add", run_add, help="append images (new places) to an index")
    add.add_argument("index_dir", type=Path, metavar="INDEX_DIR")
    add.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    add_index_model_arg(add)
    _add_run_args(add)

    calibrate = add_command(
        actions, "calibrate", run_calibrate, help="calibrate the out-of-map score threshold on a validation split"
    )
    calibrate.add_argument("index_dir", type=Path, metavar="INDEX_DIR")
    add_dataset_args(calibrate, "val")
    calibrate.add_argument("--threshold-m", type=float, default=25.0, help="metres within which an answer is right")
    calibrate.add_argument(
        "--target-precision", type=float, default=0.95, help="share of accepted answers that must be right"
    )
    add_index_model_arg(calibrate)
    _add_run_args(calibrate)


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="if another command is writing this index, wait up to SECONDS for it "
                             "(0: refuse at once; inf: wait as long as it takes)")  # fmt: skip
    add_device_args(parser)


WAIT_HINT = "Wait for it to finish, or pass --wait SECONDS to queue behind it."


@contextlib.contextmanager
def _writing_index(index_dir: Path, wait: float) -> Iterator[None]:
    """Hold the index's lock for a whole command; SIGTERM ends the command like Ctrl-C,
    so the lock and any staging folder are cleaned up (``kill`` and job schedulers send it)."""
    from vprdistill.deploy.index import index_lock

    if wait < 0:
        raise ValueError(f"--wait must be 0 or more seconds, got {wait}")
    if not Path(index_dir).absolute().parent.is_dir():
        raise FileNotFoundError(f"{index_dir} not found: its folder {Path(index_dir).absolute().parent} does not exist")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt
    try:
        with index_lock(index_dir, wait=wait, hint=WAIT_HINT):
            yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _index_and_model(index_dir: Path, model_spec: str | None, device):
    """The index and the model an index command uses: ``--model`` or the path the index records."""
    from vprdistill.deploy.index import MapIndex, read_manifest
    from vprdistill.models.checkpoint import load_model

    spec = model_spec or read_manifest(index_dir).get("model_path")
    if not spec:
        raise ValueError(f"index {index_dir} records no model path; pass --model")
    model = load_model(spec, device=device)
    return MapIndex.load(index_dir, model=model), model


def run_build(args: argparse.Namespace) -> int:
    from vprdistill.deploy.index import check_destination

    # Everything that can refuse --out (a file, a folder that is not an index, no write
    # permission, another writer) is checked before the long extraction.
    try:
        check_destination(args.out)
    except ValueError as error:
        raise ValueError(f"--out: {error}") from error
    with _writing_index(args.out, args.wait):
        check_destination(args.out)  # again, now that no other writer can change it
        return _build(args)


def _build(args: argparse.Namespace) -> int:
    from vprdistill.cli.common import run_settings
    from vprdistill.data.readers import open_dataset
    from vprdistill.data.two_folders import read_image_folder
    from vprdistill.deploy.build import build_map_index, list_images, positions_from_names, zone_from_names
    from vprdistill.deploy.model_io import pick_image_size
    from vprdistill.models.checkpoint import load_model

    device = apply_device_args(args)
    model = load_model(args.model, device=device)
    image_size = pick_image_size(args.image_size, run_settings(args.model), model)
    if args.dataset is not None:
        if args.positions is not None or args.utm_zone is not None:
            raise ValueError("--positions and --utm-zone go with --images or --database, not --dataset")
        dataset = open_dataset(args.dataset, split=args.split)
        paths, positions, utm_zone = dataset.database_paths, dataset.database_utm, dataset.utm_zone
    elif args.database is not None or args.positions is not None or args.utm_zone is not None:
        # --images keeps photos without a position (NaN); --database is a map where each has one.
        folder = args.database if args.database is not None else args.images
        images = read_image_folder(
            folder, args.positions, require_positions=args.database is not None, zone=args.utm_zone
        )
        paths, positions, utm_zone = images.paths, images.utm, images.utm_zone
    else:
        if not args.images.is_dir():
            raise FileNotFoundError(f"--images {args.images} is not a folder")
        paths = list_images([args.images])
        if not paths:
            raise ValueError(f"no images (.jpg, .jpeg, .png) in {args.images}")
        positions, utm_zone = positions_from_names(paths), zone_from_names(paths)
    start = time.perf_counter()
    index = build_map_index(
        model, paths, positions, image_size,
        index_type=args.type, dtype=args.dtype, pca_dim=args.pca, batch_size=args.batch_size,
        device=device, model_path=args.model, progress=not args.no_progress,
        shard_dir=args.shards, shard_size=args.shard_size, utm_zone=utm_zone,
    )  # fmt: skip
    index.save(args.out)
    manifest = index.manifest
    print(
        f"index {args.out}: {len(index)} images, {manifest['descriptor_dim']}-d descriptors stored as "
        f"{manifest['stored_dim']}-d {manifest['dtype']} ({manifest['type']}), model {manifest['model_fingerprint']}, "
        f"{image_size[0]}x{image_size[1]} px, {time.perf_counter() - start:.1f} s"
    )
    if "neighbour_recall_at_10" in manifest:
        print(f"neighbour recall@10 against exact search: {manifest['neighbour_recall_at_10']:.3f}")
    unknown = int(np.isnan(np.asarray(positions, dtype=float)).any(axis=1).sum())
    if unknown:
        print(f"{unknown} image(s) have no position in their name (stored as NaN)")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from vprdistill.deploy.build import add_to_index, list_images, positions_from_names

    paths = list_images(args.images)
    if not paths:
        raise ValueError(f"no images (.jpg, .jpeg, .png) in {', '.join(map(str, args.images))}")
    device = apply_device_args(args)
    # Held from reading the index to writing it: another writer in between would lose its changes or ours.
    with _writing_index(args.index_dir, args.wait):
        index, model = _index_and_model(args.index_dir, args.model, device)
        before = len(index)
        add_to_index(index, model, paths, positions_from_names(paths), args.batch_size, device, not args.no_progress)
        index.save(args.index_dir)
    print(f"index {args.index_dir}: {before} + {len(paths)} = {len(index)} images")
    if index.calibration is not None:
        print("note: the calibrated threshold was kept; recalibrate if the new places differ from the old ones")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from vprdistill.cli.common import open_dataset_args
    from vprdistill.deploy.build import compute_index_descriptors
    from vprdistill.deploy.calibration import calibrate_index, format_table

    device = apply_device_args(args)
    dataset, _ = open_dataset_args(args)
    progress = not args.no_progress
    # The calibration depends on the index's PCA and store, so no other writer may replace it meanwhile.
    with _writing_index(args.index_dir, args.wait):
        index, model = _index_and_model(args.index_dir, args.model, device)
        database, queries = (
            compute_index_descriptors(model, paths, index.image_size, args.batch_size, device, progress)
            for paths in (dataset.database_paths, dataset.query_paths)
        )
        record = calibrate_index(
            index, database, dataset.database_utm, queries, dataset.query_utm, args.threshold_m, args.target_precision
        )
        if args.dataset is not None:
            record.update({"dataset": str(Path(args.dataset).resolve()), "split": args.split})
        else:
            record.update({
                "dataset": str(Path(args.database).resolve()), "queries": str(Path(args.queries).resolve()),
                "positions": None if args.positions is None else str(Path(args.positions).resolve()),
                "split": dataset.split,
            })  # fmt: skip
        index.manifest["calibration"] = record
        index.save_manifest(args.index_dir)
    print(format_table(record))
    print(
        f"threshold {record['threshold']:.4f} on the match score: precision {record['precision']:.3f}, "
        f"recall {record['recall']:.3f}, false-accept rate {record['false_accept_rate']:.3f} "
        f"({record['num_in_map']} in-map, {record['num_out_of_map']} out-of-map queries, map of {record['map_size']} images)"
    )
    if not record["target_reached"]:
        print(f"warning: no threshold reaches precision {args.target_precision}; kept the most precise one")
    print(f"stored in {Path(args.index_dir) / 'index.json'}")
    return 0

"""``vprdistill eval``: Recall@N of a trained model (or an untrained preset) on a dataset split."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vprdistill.cli.common import add_device_args, apply_device_args
from vprdistill.eval.recall import QUERIES_WITHOUT_POSITIVE

EPILOG = """examples:
  vprdistill eval --model runs/student --dataset data/pitts30k --json student.json
  vprdistill eval --model resnet18-gem --dataset data/synthcity --image-size 64 --save-pictures 8
  vprdistill eval --model runs/student/best.safetensors --dataset data/pitts30k --threshold 10
  vprdistill eval --model runs/student --dataset data/Pittsburgh --dataset-name pitts250k --split test
  vprdistill eval --model runs/student --dataset data/Pittsburgh/datasets/pitts30k_val.mat
  vprdistill eval --model runs/student --dataset data/tokyo247/tokyo247.mat --queries-root data/tokyo247
  vprdistill eval --model runs/student --database mycity/database --queries mycity/queries
  vprdistill eval --model runs/student --database mycity/db --queries mycity/q --positions mycity/positions.csv

--database DIR --queries DIR reads any two folders of images; positions come from
@east@north@...@.jpg file names, or from --positions, a CSV with a header path,lat,lon
or path,east,north (optional zone and note columns; paths relative to the folder or to
the two folders' common parent, e.g. db/0001.jpg). See docs/DATASETS.md."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, examples kept on their own lines."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Recall@N of a model on a dataset split (exact search, UTM ground truth)",
        description="Compute descriptors of a split's database and queries, search exactly by inner product\n"
        "and report Recall@N: the share of queries with a database image within --threshold metres among\n"
        "their top N (per query condition too, when the file names carry one). Queries without any\n"
        "database image within the threshold count as misses, or are left out with\n"
        "--queries-without-positive exclude; their number is always reported.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="RUN_OR_CHECKPOINT_OR_PRESET",
        help="a run folder, a checkpoint (.safetensors/.json/stem) or a preset name "
        "(an untrained model, for baselines)",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="for a preset: load its ImageNet backbone weights (from the local cache)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        type=Path,
        metavar="PATH",
        help="folder-format root, a root holding <name>_<split>.mat, or a .mat file "
        "(for another --split, the <name>_<split>.mat beside it)",
    )
    source.add_argument(
        "--database",
        type=Path,
        metavar="DIR",
        help="instead of --dataset: a folder of database images, with --queries",
    )
    parser.add_argument("--queries", type=Path, default=None, metavar="DIR", help="with --database: the query images")
    parser.add_argument(
        "--positions",
        type=Path,
        default=None,
        metavar="FILE.csv",
        help="with --database: image positions, header path,lat,lon or path,east,north "
        "(when not given: @east@north@ file names)",
    )
    parser.add_argument(
        "--utm-zone",
        default=None,
        metavar="ZONE",
        help="with --database: the UTM zone of the positions, e.g. 17T (lat/lon are converted into it)",
    )
    parser.add_argument(
        "--queries-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="for a .mat dataset: the folder its query paths are relative to "
        "(when not given: the image root, then its queries_real/)",
    )
    parser.add_argument(
        "--split", default=None, help="dataset split (when not given: a .mat file's own split, else test)"
    )
    parser.add_argument(
        "--dataset-name",
        default=None,
        metavar="NAME",
        help="which NetVLAD set of a root holding several, e.g. pitts30k or pitts250k",
    )
    parser.add_argument("--reader", default="auto", choices=("auto", "folder", "mat", "msls", "vprbench", "gsv-lists"),
                        help="dataset format (docs/DATASETS.md)")  # fmt: skip
    parser.add_argument("--image-root", type=Path, default=None, metavar="DIR",
                        help="where the relative image paths of a .mat file or gsv-cities lists start")  # fmt: skip
    parser.add_argument("--skip-bad-images", action="store_true", help="leave out missing or corrupt images")
    parser.add_argument(
        "--segmentation-dir",
        default="segmentation",
        metavar="NAME",
        help="maps folder of the dataset root for seg-input models, e.g. segmentation-predicted "
        "(written by `vprdistill segment --maps-dir`)",
    )
    parser.add_argument("--threshold", type=float, default=25.0, help="metres within which a database image is right")
    parser.add_argument("--recalls", type=int, nargs="+", default=[1, 5, 10, 20], metavar="N", help="the N of Recall@N")
    parser.add_argument(
        "--queries-without-positive",
        default="count-as-miss",
        choices=QUERIES_WITHOUT_POSITIVE,
        help="queries with no database image within --threshold: count-as-miss divides Recall@N by "
        "all queries, exclude by those with a positive",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="input size, one value or H W; when not given, the run's training size, else 224",
    )
    parser.add_argument(
        "--input",
        default="auto",
        choices=("auto", "rgb", "seg"),
        help="photos or segmentation maps (auto: seg for a model with other than 3 input channels)",
    )
    parser.add_argument(
        "--structural-source",
        default=None,
        help="label set of the segmentation maps, for --input seg; when not given, the run's, else cityscapes",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument(
        "--search-backend",
        default="matmul",
        choices=("matmul", "faiss"),
        help="exact search implementation (same results)",
    )
    parser.add_argument(
        "--rerank",
        default="none",
        choices=("none", "patch", "sift"),
        help="re-rank the top-K: patch = the model's own CNN feature map (mutual nearest neighbours "
        "+ RANSAC), sift = OpenCV SIFT + ratio test + RANSAC",
    )
    parser.add_argument("--rerank-topk", type=int, default=20, metavar="K", help="candidates re-ranked per query")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the report as JSON")
    parser.add_argument(
        "--save-predictions",
        type=Path,
        default=None,
        metavar="OUT.csv",
        help="CSV: each query path followed by its top-K database paths (K = max N)",
    )
    parser.add_argument(
        "--save-descriptors",
        type=Path,
        default=None,
        metavar="DIR",
        help="write database.npy, queries.npy (float32) and paths.json",
    )
    parser.add_argument(
        "--save-pictures",
        type=int,
        default=0,
        metavar="N",
        help="write pictures of N queries with their top-5 (green right, red wrong)",
    )
    parser.add_argument(
        "--pictures-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where --save-pictures goes; when not given, <json stem>_pictures, else eval_pictures",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_args(parser)
    parser.set_defaults(func=run)


def run_settings(model_spec: str) -> dict[str, Any]:
    """The ``data`` section of the training config next to a checkpoint (empty when there is none).

    A run folder records the image size and input a model was trained with, so
    evaluation uses the same unless told otherwise.
    """
    path = Path(model_spec)
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return {}
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config_file}: not valid YAML ({error})") from error
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def load_model_or_preset(spec: str, device, pretrained: bool = False):
    """A checkpoint (run folder, file or stem) if ``spec`` names one, else an untrained preset."""
    from vprdistill.models.checkpoint import load_model
    from vprdistill.models.registry import build_model, list_presets

    path = Path(spec)
    if path.exists() or path.with_name(path.name + ".json").exists():
        return load_model(path, device=device)
    if spec in list_presets():
        return build_model(spec, pretrained=pretrained).to(device).eval()
    raise FileNotFoundError(
        f"--model {spec!r} is neither an existing run folder or checkpoint nor a preset ({', '.join(list_presets())})"
    )


def _image_size(args: argparse.Namespace, settings: dict[str, Any], model) -> tuple[int, int]:
    from vprdistill.eval.evaluate import default_image_size

    size = args.image_size if args.image_size is not None else settings.get("image_size")
    if size is None:
        return default_image_size(model)
    size = [size] if isinstance(size, int) else list(size)
    if len(size) not in (1, 2) or min(size) <= 0:
        raise ValueError(f"--image-size takes one positive value or H W, got {size}")
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _build_reranker(args: argparse.Namespace, model, image_size, device, input_kind):
    """The ``--rerank`` re-ranker, or None."""
    if args.rerank == "none":
        return None
    if input_kind == "seg" or getattr(model, "input_channels", 3) != 3:
        raise ValueError("--rerank works on photos; this model reads segmentation maps")
    from vprdistill.data.images import load_image
    from vprdistill.eval.local_features import local_feature_fn
    from vprdistill.retrieval.rerank import build_reranker

    return build_reranker(
        args.rerank,
        feature_fn=local_feature_fn(model, image_size, device, args.batch_size),
        image_loader=lambda path: np.asarray(load_image(path)),
    )


def format_report(report: dict[str, Any]) -> str:
    """The terminal table: Recall@N overall and per condition, counts and timing."""
    ns = list(report["recall"])
    model = report.get("model") or {}
    settings = report.get("settings", {})
    # Reports written before the convention was recorded left such queries out.
    excluded = (report.get("queries_without_positive") or {}).get("convention", "exclude") == "exclude"

    def counted(row: dict[str, Any]) -> int:
        """Queries in the denominator of a row's recall."""
        return row["num_queries"] - (row["num_queries_without_positive"] if excluded else 0)

    lines = [
        (
            f"model {model.get('name', '?')} (fingerprint {model.get('fingerprint', '?')}), "
            f"{report['descriptor_dim']}-d descriptors"
        ),
        (
            f"dataset {report['dataset']} split {report['split']}: {report['num_database']} database images, "
            f"{report['num_queries']} queries ({report['num_queries_without_positive']} without a positive within "
            f"{report['threshold_m']:g} m, {'left out' if excluded else 'counted as misses'})"
        ),
        (
            f"descriptors {report['ms_per_image']:.2f} ms/image (batch {settings.get('batch_size')}, "
            f"{'x'.join(str(s) for s in settings.get('image_size', []))} px, {settings.get('device')}, "
            f"{settings.get('threads')} threads); search {report['ms_per_query']:.3f} ms/query "
            f"against {report['num_database']} ({settings.get('search_backend')})"
        ),
        "",
    ]
    source = report.get("source")
    if source and source["format"] == "folders":
        positions = f"positions from {source['positions']}" if source.get("positions") else "positions from file names"
        lines.insert(2, f"read from database {source['path']}, queries {source.get('queries_path')} ({positions})")
    elif source:
        which_set = f" (whichSet {source['which_set']!r})" if source["format"] == "mat" else ""
        lines.insert(2, f"read from {source['path']}{which_set}")
    header = f"{'':16s}" + "".join(f"{'R@' + n:>8s}" for n in ns) + f"{'queries':>10s}"
    lines.append(header)
    lines.append(f"{'all':16s}" + "".join(f"{report['recall'][n]:8.2f}" for n in ns) + f"{counted(report):10d}")
    if report.get("rerank"):
        rerank = report["rerank"]
        lines.insert(
            -1, f"re-ranking: {rerank['kind']} of the top {rerank['topk']}, +{rerank['ms_per_query']:.2f} ms/query"
        )
    if report.get("recall_before_rerank"):
        before = report["recall_before_rerank"]
        lines.append(f"{'before re-rank':16s}" + "".join(f"{before[n]:8.2f}" for n in ns) + f"{counted(report):10d}")
    for condition, row in (report.get("recall_per_condition") or {}).items():
        cells = "".join(f"{row['recall'][n]:8.2f}" if row["recall"] else f"{'-':>8s}" for n in ns)
        lines.append(f"{condition[:16]:16s}" + cells + f"{counted(row):10d}")
    return "\n".join(lines)


def write_predictions_csv(path: Path, dataset, predictions: np.ndarray) -> None:
    """Header, then per query: its path and its top-K database paths in rank order."""
    from vprdistill.utils.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["query"] + [f"prediction_{rank}" for rank in range(1, predictions.shape[1] + 1)])
    for query_path, row in zip(dataset.query_paths, predictions):
        # -1 pads a row searched within a group (a city of MSLS) smaller than K: an empty cell.
        writer.writerow([str(query_path)] + [str(dataset.database_paths[i]) if i >= 0 else "" for i in row])
    atomic_write_text(path, buffer.getvalue())


def write_descriptors(folder: Path, dataset, result) -> None:
    """``database.npy`` (N, D) and ``queries.npy`` (M, D) float32, with ``paths.json`` naming their rows."""
    from vprdistill.utils.atomic import atomic_path, atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("database", result.database_descriptors), ("queries", result.query_descriptors)):
        with atomic_path(folder / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array, dtype=np.float32))
    atomic_write_json(
        folder / "paths.json",
        {
            "dataset": dataset.name,
            "split": dataset.split,
            "model": result.model,
            "database": [str(p) for p in dataset.database_paths],
            "queries": [str(p) for p in dataset.query_paths],
        },
    )


def open_eval_dataset(args: argparse.Namespace):
    """The dataset of ``--dataset`` or of ``--database``/``--queries``, and its `DatasetSource`.

    Options of one way that the other does not take are refused, naming them,
    rather than ignored.
    """
    from vprdistill.data.readers import DEFAULT_SEGMENTATION_DIR, open_dataset_with_source
    from vprdistill.data.two_folders import read_two_folders_with_source

    if args.database is not None:
        if args.queries is None:
            raise ValueError("--database needs --queries (the folder of query images)")
        given = [
            flag
            for flag, value, default in (
                ("--split", args.split, None),
                ("--dataset-name", args.dataset_name, None),
                ("--reader", args.reader, "auto"),
                ("--queries-root", args.queries_root, None),
                ("--image-root", args.image_root, None),
                ("--segmentation-dir", args.segmentation_dir, DEFAULT_SEGMENTATION_DIR),
            )
            if value != default
        ]
        if given:
            raise ValueError(f"{', '.join(given)}: for --dataset only, not with --database/--queries")
        # Recall@N needs every query's position: a query without one is an error naming it.
        return read_two_folders_with_source(
            args.database, args.queries, args.positions, require_query_positions=True,
            skip_bad_images=args.skip_bad_images, zone=args.utm_zone,
        )  # fmt: skip
    given = [
        flag
        for flag, value in (("--queries", args.queries), ("--positions", args.positions), ("--utm-zone", args.utm_zone))
        if value is not None
    ]
    if given:
        raise ValueError(f"{', '.join(given)}: with --database only, not with --dataset")
    return open_dataset_with_source(
        args.dataset,
        split=args.split,
        reader=args.reader,
        skip_bad_images=args.skip_bad_images,
        name=args.dataset_name,
        segmentation_dir=args.segmentation_dir,
        queries_root=args.queries_root,
        image_root=args.image_root,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from vprdistill.eval.evaluate import evaluate_model
    from vprdistill.eval.pictures import save_prediction_pictures
    from vprdistill.utils.atomic import atomic_write_text

    if args.save_pictures < 0:
        raise ValueError(f"--save-pictures takes a number of queries, got {args.save_pictures}")
    device = apply_device_args(args)
    settings = run_settings(args.model)
    dataset, source = open_eval_dataset(args)
    model = load_model_or_preset(args.model, device, pretrained=args.pretrained)
    image_size = _image_size(args, settings, model)
    input_kind = None if args.input == "auto" else args.input
    reranker = _build_reranker(args, model, image_size, device, input_kind)
    result = evaluate_model(
        model,
        dataset,
        threshold_m=args.threshold,
        recall_ns=args.recalls,
        image_size=image_size,
        batch_size=args.batch_size,
        device=device,
        num_workers=args.num_workers,
        input_kind=input_kind,
        structural_source=args.structural_source or settings.get("structural_source", "cityscapes"),
        search_backend=args.search_backend,
        reranker=reranker,
        rerank_topk=args.rerank_topk,
        progress=not args.no_progress,
        queries_without_positive=args.queries_without_positive,
    )
    report = result.to_json()
    report["source"] = source.to_json()
    report["utm_zone"] = dataset.utm_zone
    report["settings"] = {
        "model": args.model,
        "dataset_root": None if args.dataset is None else str(args.dataset),
        "dataset_name": args.dataset_name,
        "database": None if args.database is None else str(args.database),
        "queries": None if args.queries is None else str(args.queries),
        "positions": None if args.positions is None else str(args.positions),
        "image_size": list(image_size),
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "search_backend": args.search_backend,
        "recall_ns": sorted(set(args.recalls)),
        "rerank": args.rerank,
        "rerank_topk": args.rerank_topk if args.rerank != "none" else None,
    }
    print(format_report(report))
    if args.json is not None:
        # Not sorted: recall keys stay in order of N.
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"report: {args.json}")
    if args.save_predictions is not None:
        write_predictions_csv(args.save_predictions, dataset, result.predictions)
        print(f"predictions: {args.save_predictions}")
    if args.save_descriptors is not None:
        write_descriptors(args.save_descriptors, dataset, result)
        print(f"descriptors: {args.save_descriptors}")
    if args.save_pictures:
        folder = args.pictures_dir or (
            args.json.with_name(args.json.stem + "_pictures") if args.json is not None else Path("eval_pictures")
        )
        written = save_prediction_pictures(dataset, result.predictions, result.positives, folder, args.save_pictures)
        print(f"pictures: {len(written)} in {folder}")
    return 0

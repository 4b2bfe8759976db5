"""``vprdistill eval``: Recall@N of a trained model (or an untrained preset) on a dataset split."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from vprdistill.cli.common import add_command, add_dataset_args, add_device_args, add_image_size_arg, apply_device_args
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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "eval", run,
        help="Recall@N of a model on a dataset split (exact search, UTM ground truth)",
        description="Compute descriptors of a split's database and queries, search exactly by inner product\n"
        "and report Recall@N: the share of queries with a database image within --threshold metres among\n"
        "their top N (per query condition too, when the file names carry one). Queries without any\n"
        "database image within the threshold count as misses, or are left out with\n"
        "--queries-without-positive exclude; their number is always reported.",
        epilog=EPILOG,
    )  # fmt: skip
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT_OR_PRESET",
                        help="a run folder, a checkpoint (.safetensors/.json/stem) or a preset name "
                             "(an untrained model, for baselines)")  # fmt: skip
    parser.add_argument("--pretrained", action="store_true",
                        help="for a preset: load its ImageNet backbone weights (from the local cache)")  # fmt: skip
    add_dataset_args(parser, None, "dataset split (when not given: a .mat file's own split, else test)", formats=True)
    parser.add_argument("--skip-bad-images", action="store_true", help="leave out missing or corrupt images")
    parser.add_argument("--segmentation-dir", default="segmentation", metavar="NAME",
                        help="maps folder of the dataset root for seg-input models, e.g. segmentation-predicted "
                             "(written by `vprdistill segment --maps-dir`)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=25.0, help="metres within which a database image is right")
    parser.add_argument("--recalls", type=int, nargs="+", default=[1, 5, 10, 20], metavar="N", help="the N of Recall@N")
    parser.add_argument("--queries-without-positive", default="count-as-miss", choices=QUERIES_WITHOUT_POSITIVE,
                        help="queries with no database image within --threshold: count-as-miss divides Recall@N by "
                             "all queries, exclude by those with a positive")  # fmt: skip
    add_image_size_arg(parser, "input size, one value or H W; when not given, the run's training size, else 224")
    parser.add_argument("--input", default="auto", choices=("auto", "rgb", "seg"),
                        help="photos or segmentation maps (auto: seg for a model with other than 3 input channels)")  # fmt: skip
    parser.add_argument("--structural-source", default=None,
                        help="label set of the segmentation maps, for --input seg; when not given, the run's, else cityscapes")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--search-backend", default="matmul", choices=("matmul", "faiss"),
                        help="exact search implementation (same results)")  # fmt: skip
    parser.add_argument("--rerank", default="none", choices=("none", "patch", "sift"),
                        help="re-rank the top-K: patch = the model's own CNN feature map (mutual nearest neighbours "
                             "+ RANSAC), sift = OpenCV SIFT + ratio test + RANSAC")  # fmt: skip
    parser.add_argument("--rerank-topk", type=int, default=20, metavar="K", help="candidates re-ranked per query")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the report as JSON")
    parser.add_argument("--save-predictions", type=Path, default=None, metavar="OUT.csv",
                        help="CSV: each query path followed by its top-K database paths (K = max N)")  # fmt: skip
    parser.add_argument("--save-descriptors", type=Path, default=None, metavar="DIR",
                        help="write database.npy, queries.npy (float32) and paths.json")  # fmt: skip
    parser.add_argument("--save-pictures", type=int, default=0, metavar="N",
                        help="write pictures of N queries with their top-5 (green right, red wrong)")  # fmt: skip
    parser.add_argument("--pictures-dir", type=Path, default=None, metavar="DIR",
                        help="where --save-pictures goes; when not given, <json stem>_pictures, else eval_pictures")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_args(parser)


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


def run(args: argparse.Namespace) -> int:
    import torch

    from vprdistill.cli.common import load_model_or_preset, open_dataset_args, run_settings
    from vprdistill.deploy.model_io import pick_image_size
    from vprdistill.eval.evaluate import evaluate_model
    from vprdistill.eval.pictures import save_prediction_pictures
    from vprdistill.utils.atomic import atomic_write_text

    if args.save_pictures < 0:
        raise ValueError(f"--save-pictures takes a number of queries, got {args.save_pictures}")
    device = apply_device_args(args)
    settings = run_settings(args.model)
    dataset, source = open_dataset_args(args)
    model = load_model_or_preset(args.model, device, pretrained=args.pretrained)
    image_size = pick_image_size(args.image_size, settings, model)
    input_kind = None if args.input == "auto" else args.input
    reranker = _build_reranker(args, model, image_size, device, input_kind)
    result = evaluate_model(
        model, dataset, threshold_m=args.threshold, recall_ns=args.recalls, image_size=image_size,
        batch_size=args.batch_size, device=device, num_workers=args.num_workers, input_kind=input_kind,
        structural_source=args.structural_source or settings.get("structural_source", "cityscapes"),
        search_backend=args.search_backend, reranker=reranker, rerank_topk=args.rerank_topk,
        progress=not args.no_progress, queries_without_positive=args.queries_without_positive,
    )  # fmt: skip
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

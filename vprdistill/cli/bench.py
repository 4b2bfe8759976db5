"""vprdistill bench: how fast a model describes images and how fast a query is matched.

  vprdistill bench --model runs/student --image-size 224 --batch 1 32 --db-size 10000 --json bench.json

Reports ms per image (PyTorch eager and ONNX Runtime) per batch size; ms per
query against a random database of --db-size (exact, PCA-reduced, float16,
int8); peak memory; and the machine's measured matmul GFLOP/s and memory
bandwidth, so each figure can be read as a share of the machine's limit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args, apply_device_args, load_model_or_preset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "bench", run, help="latency benchmark: descriptors, matching, memory", description=__doc__
    )
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT_OR_PRESET")
    parser.add_argument("--image-size", type=int, nargs="+", default=[224], metavar="N", help="input side or H W")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], metavar="B", help="batch sizes to time")
    parser.add_argument("--db-size", type=int, default=10_000, help="database entries to match against")
    parser.add_argument(
        "--dim", type=int, default=None, help="descriptor size of the matching test (default: the model's)"
    )
    parser.add_argument("--queries", type=int, default=100, help="queries timed per matching mode")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is kept)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and ONNX Runtime timing")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the report as JSON")
    add_device_args(parser)


def format_report(report: dict) -> str:
    settings, model, machine = report["settings"], report["model"], report["machine"]
    lines = [
        f"model {model['name']} ({model['parameters'] / 1e6:.1f}M parameters, {model['gflops_per_image']:.2f} GFLOP/image), "
        f"{settings['image_size'][0]}x{settings['image_size'][1]} px, {settings['device']}, {settings['threads']} threads",
        f"machine: {machine['cpu_matmul_gflops']:.0f} GFLOP/s float32 matmul, "
        f"{machine['cpu_memory_bandwidth_gbs']['read']:.1f} GB/s read bandwidth (CPU)",
    ]
    if "device_matmul_gflops" in machine:
        lines.append(f"device: {machine['device_matmul_gflops']:.0f} GFLOP/s, "
                     f"{machine['device_memory_bandwidth_gbs']['read']:.0f} GB/s")  # fmt: skip
    for row in report["descriptors"]:
        text = f"  batch {row['batch']:>3}: PyTorch {row['pytorch_ms_per_image']:.2f} ms/image ({row['pytorch_share_of_matmul_peak']:.0%} of matmul peak)"
        for key, value in row.items():
            if key.startswith("onnxruntime_") and key.endswith("_ms_per_image") and key != "onnxruntime_ms_per_image":
                provider = key.removeprefix("onnxruntime_").removesuffix("_ms_per_image")
                text += f", ONNX Runtime {provider} {value:.2f} ms/image"
        if "onnxruntime_ms_per_image" in row:
            text += f" ({row['onnxruntime_share_of_matmul_peak']:.0%} of peak for the fastest)"
        lines.append(text)
    lines.append(f"matching against {settings['db_size']} x {settings['dim']} (ms per query):")
    for row in report["matching"]:
        lines.append(
            f"  {row['mode']:<16} single {row['ms_per_query_single']:.3f}  batched {row['ms_per_query_batched']:.3f}  "
            f"({row['single_query_share_of_bandwidth']:.0%} of bandwidth single)"
        )
    memory = report["memory"]
    lines.append(
        f"peak RSS {memory['peak_rss_mb']:.0f} MiB"
        + (f", CUDA peak {memory['cuda_peak_mb']:.0f} MiB" if "cuda_peak_mb" in memory else "")
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from vprdistill.deploy.bench import run_benchmark
    from vprdistill.deploy.model_io import pick_image_size
    from vprdistill.utils.atomic import atomic_write_json

    if min(args.batch) < 1 or args.db_size < 1 or args.queries < 1 or args.repeats < 1:
        raise ValueError("--batch, --db-size, --queries and --repeats must be at least 1")
    device = apply_device_args(args)
    model = load_model_or_preset(args.model, device)
    image_size = pick_image_size(args.image_size, {}, model)
    report = run_benchmark(
        model, image_size, args.batch, device, args.db_size, args.dim, args.queries, args.repeats, not args.no_onnx
    )
    print(format_report(report))
    if args.json is not None:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0

"""fp16 and int8 ONNX versions of a place model: recall cost, ms per image and file size (ONNX Runtime, CPU).

    uv run python benchmarks/onnx_precision.py --model runs/student --dataset data/synthcity [--threads 1]
    uv run python benchmarks/onnx_precision.py            # preset tscm-student-tiny, random weights, generated data

Exports ``--model`` (a run folder or checkpoint; without it the preset
``--preset`` with random weights) to a float32 ONNX graph, converts it to fp16
and to int8 (``vprdistill.deploy.precision``): with unsigned (U8S8, the x86
choice) and signed (S8S8, the ARM choice) activations, both calibrated on the
database images of the evaluation split (the map the robot matches against),
and the first also on the database of ``val`` (another area). Each is measured
against float32 on ``--eval-split``: Recall@1/5/10 (25 m),
top-1 agreement, descriptor difference, ms per image at batches 1 and 8 and
file size. ``--dataset`` is a folder-format dataset; without it a SynthCity
``small`` dataset is generated under /tmp. Writes the ``onnx-precision``
section of BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import load_average, machine_description, today, update_section
from vprdistill.utils.device import set_threads


def model_and_size(args: argparse.Namespace):
    """The model to export (a checkpoint when ``--model`` is given, else the random-weight preset) and its input size."""
    import torch

    from vprdistill.cli.common import load_model_or_preset, run_settings
    from vprdistill.deploy.model_io import pick_image_size

    spec = args.model or args.preset
    torch.manual_seed(0)
    model = load_model_or_preset(str(spec), "cpu")
    settings = run_settings(str(args.model)) if args.model else {}
    return model, pick_image_size(args.image_size, settings, model)


def dataset_root(args: argparse.Namespace) -> Path:
    if args.dataset is not None:
        return args.dataset
    from vprdistill.data.synth import generate

    root = Path(f"/tmp/synthcity-small-seed{args.seed}")
    if not (root / "images" / args.eval_split).is_dir():
        generate(root, preset="small", seed=args.seed, image_size=128, progress=False)
    return root


def row_cells(name: str, calibration: str, cost: dict[str, Any], key: str) -> list[str]:
    recall, reference = cost["recall"][key], cost["recall"]["fp32"]
    ms, ms32 = cost["ms_per_image"][key], cost["ms_per_image"]["fp32"]
    difference = cost["descriptor_difference"]
    return [
        name, calibration, f"{cost['file_bytes'][key] / 1e6:.2f}", f"{cost['size_ratio']:.3f}",
        *(f"{recall[n]:.1f}" for n in ("1", "5", "10")),
        f"{recall['1'] - reference['1']:+.1f}", f"{100 * cost['top1_agreement']:.1f}",
        f"{100 * cost['top1_same_place']:.1f}", f"{max(0.0, 1 - difference['min_cosine']):.1e}", f"{max(0.0, 1 - difference['mean_cosine']):.1e}",
        f"{difference['max_abs']:.2e}",
        *(f"{ms[b]:.2f} ({ms[b] / ms32[b]:.2f}×)" for b in ("1", "8")),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="run folder or checkpoint (trained weights)")
    parser.add_argument("--preset", default="tscm-student-tiny", help="without --model: this preset, random weights")
    parser.add_argument(
        "--dataset", type=Path, default=None, help="folder-format dataset (default: generate SynthCity)"
    )
    parser.add_argument("--seed", type=int, default=0, help="SynthCity seed when the dataset is generated")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument(
        "--other-split", default="val", help="the other area whose database also calibrates an int8 version"
    )
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N")
    parser.add_argument("--calibration-images", type=int, default=256, metavar="N")
    parser.add_argument("--activations", nargs="+", default=["uint8", "int8"], choices=("uint8", "int8"),
                        help="int8 activation types, each calibrated on the map; the first also on --other-split")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime (and torch) threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size (best kept)")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="keep the .onnx files here (default: a temporary folder)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    args = parser.parse_args()
    set_threads(args.threads)
    started, load_before = time.time(), load_average()

    from vprdistill.data.readers import open_dataset
    from vprdistill.deploy.export import export_onnx
    from vprdistill.deploy.precision import convert_precision

    model, image_size = model_and_size(args)
    root = dataset_root(args)
    eval_set = open_dataset(root, split=args.eval_split)
    other_set = open_dataset(root, split=args.other_split)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out_dir or Path(scratch)
        fp32 = folder / "model.onnx"
        export_onnx(model, fp32, image_size)
        common = {"evaluate": (root, args.eval_split), "threads": args.threads, "timing_repeats": args.repeats,
                  "max_calibration_images": args.calibration_images}  # fmt: skip
        own = {"calibrate": root, "calibrate_split": args.eval_split}
        other = {"calibrate": root, "calibrate_split": args.other_split}
        variants = [("fp16", "fp16", "–", {})]
        for activations in args.activations:
            name = f"int8 ({'U8S8' if activations == 'uint8' else 'S8S8'})"
            variants.append(
                (name, "int8", f"{args.eval_split} database (the map)", {**own, "activations": activations})
            )
        variants.append(
            (variants[1][0], "int8", f"{args.other_split} database", {**other, "activations": args.activations[0]})
        )
        rows, records = [], []
        for index, (name, precision, calibration, options) in enumerate(variants):
            out = folder / f"model.{precision}.{index}.onnx"
            record = convert_precision(fp32, out, precision, **common, **options)
            cost = record["recall_cost"]
            if not rows:
                reference = cost["recall"]["fp32"]
                ms32 = cost["ms_per_image"]["fp32"]
                rows.append(["fp32", "–", f"{cost['file_bytes']['fp32'] / 1e6:.2f}", "1.000",
                             *(f"{reference[n]:.1f}" for n in ("1", "5", "10")), "–", "–", "–", "–", "–", "–",
                             *(f"{ms32[b]:.2f}" for b in ("1", "8"))])  # fmt: skip
            used = record["calibration"]["n_images"] if record["calibration"] else None
            rows.append(row_cells(name, calibration + (f", {used} images" if used else ""), cost, precision))
            records.append(record)
            print(f"{name} ({calibration}): R@1 {cost['recall'][precision]['1']:.1f} vs {cost['recall']['fp32']['1']:.1f}, "
                  f"top-1 agreement {cost['top1_agreement']:.3f}", flush=True)  # fmt: skip

    header = ["precision", "calibration", "file (MB)", "size / fp32", "R@1", "R@5", "R@10", "ΔR@1",
              "top-1 same image (%)", "top-1 within 25 m (%)", "1 − min cos", "1 − mean cos", "max abs diff",
              "ms/img b1 (/fp32)", "ms/img b8 (/fp32)"]  # fmt: skip
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    minutes = (time.time() - started) / 60
    source = f"`{args.model}` (trained)" if args.model else f"preset `{args.preset}`, random weights"
    command = "uv run python benchmarks/onnx_precision.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    conversion = records[1]["conversion"]
    machine = (
        f"Machine: {machine_description()}; date {today()}; {minutes:.1f} min; load average {load_before} before, "
        f"{load_average()} after. ONNX Runtime {records[0]['versions']['onnxruntime']}, CPU execution provider, "
        f"{args.threads} thread(s)."
    )
    setup = (
        f"Model: {source}, {image_size[0]}×{image_size[1]} px, {records[0]['descriptor_dim']}-d. Evaluation: "
        f"{eval_set.name} `{args.eval_split}`, {eval_set.num_database} database images, {eval_set.num_queries} "
        f"queries, positives within 25 m, queries without one counted as misses. int8: QDQ, "
        f"per-channel int8 weights, uint8 (U8S8) or int8 (S8S8) activations, {conversion['calibration_method']} "
        f"calibration on up to {args.calibration_images} database images spread along the route "
        f"({other_set.num_database} in `{args.other_split}`). fp16: float16 weights and compute with float32 "
        "input/output; the descriptor head (from the first power or norm on) stays float32."
    )
    reading = (
        "Top-1 same image / within 25 m: share of queries whose best database match is the same image as with fp32 "
        "/ lies within 25 m of fp32's (neighbouring route images are often near-ties). ms/img: best "
        f"of {args.repeats} runs after a warm-up on real images, with the ratio to fp32 measured in the same call. "
        "On a CPU without float16 arithmetic, ONNX Runtime runs the float16 nodes in float32 between casts "
        "(every Conv here), so fp16 saves file size and memory there, not time."
    )
    body = "\n".join(
        [
            "## ONNX fp16 and int8: recall cost, latency and size (ONNX Runtime, CPU)",
            "",
            f"Command: `{command.strip()}`",
            machine,
            setup,
            reading,
            "",
            *table,
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {update_section('onnx-precision', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

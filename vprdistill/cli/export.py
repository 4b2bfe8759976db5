"""vprdistill export: a place model as ONNX, checked against PyTorch with ONNX Runtime.

  vprdistill export --model runs/student --format onnx --out student.onnx --image-size 224 224
  vprdistill export --model runs/student --format onnx --out robot.onnx --image-size 224 224 \\
      --embed-preprocessing --channel-order BGR

Writes OUT (atomically, only when ONNX Runtime reproduces PyTorch's
descriptors on batches of 1 and 3 within --atol) and OUT.json with the model
config, fingerprint and input size.

--embed-preprocessing writes a frame-in graph instead: its input ``frames``
is a uint8 batch (N, H_in, W_in, 3) of any frame size in --channel-order, and
the graph itself reorders the channels, resizes (antialiased bilinear) to the
image size, scales and normalises. It is checked on uint8 frames of two sizes
against the PyTorch path (PIL resize, ImageNet normalisation, model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vprdistill.cli.common import add_command, add_image_size_arg, load_model_or_preset, run_settings

# Literal copies of vprdistill.deploy's DEFAULT_ATOL, FRAME_ATOL and CHANNEL_ORDERS (the tests check they agree):
# importing those modules here would load torch for every command's --help.
DEFAULT_ATOL, FRAME_ATOL, CHANNEL_ORDERS = 1e-4, 5e-3, ("RGB", "BGR")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "export", run, help="export a model to ONNX and check it against PyTorch", description=__doc__
    )
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT_OR_PRESET")
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.onnx")
    add_image_size_arg(parser, "input side or H W fixed in the graph (default: the training run's, else the model's)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"),
                        help="torch.export-based (writes opset >= 18) or TorchScript-based; auto: legacy first below opset 18, else dynamo first; "
                             "frame graphs need dynamo")  # fmt: skip
    parser.add_argument("--atol", type=float, default=None,
                        help=f"largest allowed difference of the L2-normalised descriptors (default {DEFAULT_ATOL:g}; "
                             f"{FRAME_ATOL:g} with --embed-preprocessing, whose reference resizes with PIL)")  # fmt: skip
    parser.add_argument("--embed-preprocessing", action="store_true",
                        help="frame-in graph: uint8 (N, H_in, W_in, 3) frames of any size, resized and normalised inside")  # fmt: skip
    parser.add_argument("--channel-order", type=str.upper, choices=CHANNEL_ORDERS, default=None,
                        help="channel order of the frames (with --embed-preprocessing; default RGB)")  # fmt: skip
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                        help="fp16: float16 weights and compute, float32 input/output; int8: static QDQ quantisation "
                             "calibrated with --calibrate. OUT is then that graph, and the checked float32 one goes to "
                             "OUT's .fp32.onnx (student.int8.onnx -> student.fp32.onnx)")  # fmt: skip
    parser.add_argument("--calibrate", type=Path, default=None, metavar="DATASET",
                        help="int8: dataset whose --calibrate-split database images (the map's own) set the activation ranges")  # fmt: skip
    parser.add_argument("--calibrate-split", default="test", metavar="SPLIT", help="split of --calibrate")
    parser.add_argument("--calibration-images", type=int, default=256, metavar="N",
                        help="int8: at most N database images, spread along the database")  # fmt: skip
    parser.add_argument("--int8-activations", default="uint8", choices=("uint8", "int8"),
                        help="int8 activations: uint8 (U8S8) for x86 CPUs, int8 (S8S8) for ARM CPUs")  # fmt: skip
    parser.add_argument("--eval-dataset", type=Path, default=None, metavar="DATASET",
                        help="with --precision fp16/int8: measure the recall cost against the float32 graph on this "
                             "dataset (stored in OUT.json)")  # fmt: skip
    parser.add_argument("--eval-split", default="test", metavar="SPLIT", help="split of --eval-dataset")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads for calibration, evaluation and timing (default: its own)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vprdistill.deploy.export import export_onnx, sidecar_path
    from vprdistill.deploy.model_io import pick_image_size

    if args.channel_order is not None and not args.embed_preprocessing:
        raise ValueError("--channel-order applies to frame graphs: add --embed-preprocessing")
    if args.precision != "fp32":
        from vprdistill.deploy.precision import check_precision_arguments, float32_path_for

        check_precision_arguments(args.precision, args.calibrate)  # before the export: int8 needs --calibrate
        converted_out, args.out = args.out, float32_path_for(args.out)
    model = load_model_or_preset(args.model, "cpu")
    image_size = pick_image_size(args.image_size, run_settings(args.model), model)
    record = export_onnx(
        model, args.out, image_size, opset=args.opset, exporter=args.exporter, atol=args.atol,
        embed_preprocessing=args.embed_preprocessing, channel_order=args.channel_order or "RGB",
    )  # fmt: skip
    size = f"{image_size[0]}x{image_size[1]}"
    if args.embed_preprocessing:
        what = f"input uint8 frames (N, H_in, W_in, 3) {record['input']['channel_order']} of any size, resized inside to {size}"
        differences = ", ".join(f"frames {shape}: {d:.2e}" for shape, d in record["max_abs_diff"].items())
        reference = "PyTorch path (PIL resize + build_transform + model)"
        cosine = f"; min cosine {min(record['min_cosine'].values()):.7f}"
    else:
        what = f"{size} input"
        differences = ", ".join(f"batch {b}: {d:.2e}" for b, d in record["max_abs_diff"].items())
        reference, cosine = "PyTorch", ""
    print(
        f"wrote {args.out} ({record['exporter']} exporter, opset {record['opset']}, "
        f"{what}, {record['descriptor_dim']}-d output) and {sidecar_path(args.out)}"
    )
    print(
        f"max |ONNX Runtime - {reference}| on L2-normalised descriptors: {differences} (atol {record['atol']:g}){cosine}"
    )
    if args.precision != "fp32":
        print_conversion(args, args.out, converted_out)
    return 0


def print_conversion(args: argparse.Namespace, fp32_path: Path, out: Path) -> None:
    """Convert the float32 graph to --precision, write OUT and OUT.json, and print what it cost."""
    from vprdistill.deploy.export import sidecar_path
    from vprdistill.deploy.precision import convert_precision

    converted = convert_precision(
        fp32_path, out, args.precision, calibrate=args.calibrate,
        evaluate=(args.eval_dataset, args.eval_split) if args.eval_dataset is not None else None,
        calibrate_split=args.calibrate_split, max_calibration_images=args.calibration_images,
        activations=args.int8_activations, threads=args.threads,
    )  # fmt: skip
    ratio = converted["file_bytes"] / converted["source"]["file_bytes"]
    print(f"wrote {out} ({args.precision}, {converted['file_bytes'] / 1e6:.1f} MB, {ratio:.2f}x the float32 file) "
          f"and {sidecar_path(out)}")  # fmt: skip
    check = converted["precision_check"]
    print(f"check on {check['n_images']} images ({check['inputs']}): min cosine to float32 {check['min_cosine']:.5f}")
    cost = converted["recall_cost"]
    if cost is not None:
        for name in ("fp32", args.precision):
            recall, ms = cost["recall"][name], cost["ms_per_image"][name]
            print(f"{name:>5s}: R@1 {recall['1']:.1f}  R@5 {recall['5']:.1f}  R@10 {recall['10']:.1f}  "
                  f"{ms['1']:.2f} ms/image at batch 1, {ms['8']:.2f} at batch 8")  # fmt: skip
        same_place = "" if cost["top1_same_place"] is None else (
            f", within {cost['threshold_m']:g} m of it for {100 * cost['top1_same_place']:.1f} %")  # fmt: skip
        print(f"top-1 match the same image as float32's for {100 * cost['top1_agreement']:.1f} % of the "
              f"{cost['num_queries']} queries of {cost['dataset']} {cost['split']}{same_place}")  # fmt: skip

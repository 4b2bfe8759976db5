"""vprdistill export: a place model as ONNX, checked against PyTorch with ONNX Runtime.

  vprdistill export --model runs/student --format onnx --out student.onnx --image-size 224 224

Writes OUT (atomically, only when ONNX Runtime reproduces PyTorch's
descriptors on batches of 1 and 3 within --atol) and OUT.json with the model
config, fingerprint and input size.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples of the description kept as written."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX and check it against PyTorch",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT_OR_PRESET")
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.onnx")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                        help="input side or H W fixed in the graph (default: the training run's, else the model's)")  # fmt: skip
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"),
                        help="torch.export-based (writes opset >= 18) or TorchScript-based; auto: legacy first below opset 18, else dynamo first")  # fmt: skip
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference of the L2-normalised descriptors")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vprdistill.cli.eval import load_model_or_preset, run_settings
    from vprdistill.deploy.export import export_onnx, sidecar_path
    from vprdistill.deploy.model_io import pick_image_size

    model = load_model_or_preset(args.model, "cpu")
    image_size = pick_image_size(args.image_size, run_settings(args.model), model)
    record = export_onnx(model, args.out, image_size, opset=args.opset, exporter=args.exporter, atol=args.atol)
    differences = ", ".join(f"batch {b}: {d:.2e}" for b, d in record["max_abs_diff"].items())
    print(
        f"wrote {args.out} ({record['exporter']} exporter, opset {record['opset']}, "
        f"{image_size[0]}x{image_size[1]} input, {record['descriptor_dim']}-d output) and {sidecar_path(args.out)}"
    )
    print(f"max |ONNX Runtime - PyTorch| on L2-normalised descriptors: {differences} (atol {args.atol:g})")
    return 0

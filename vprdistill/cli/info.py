"""``vprdistill info``: parameters per part, descriptor size and FLOPs of a preset or a saved model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vprdistill.cli.common import add_command, add_image_size_arg

DESCRIPTION = """Print a model's parameters per part, its descriptor size and its FLOPs at an
image size. MODEL is a preset name (see --list) or a checkpoint: a run folder,
a .safetensors/.json file or a stem."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "info", run, "parameters, descriptor size and FLOPs of a model preset or checkpoint", DESCRIPTION
    )
    parser.add_argument("model", nargs="?", metavar="MODEL_OR_PRESET", help="preset name or checkpoint path")
    add_image_size_arg(parser, "input size: one value for square images, or H W", default=[224])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--list", action="store_true", help="list the model presets and exit")


def run(args: argparse.Namespace) -> int:
    import torch

    from vprdistill.deploy.model_io import pick_image_size
    from vprdistill.models.checkpoint import load_model
    from vprdistill.models.registry import build_model, describe_preset, list_presets
    from vprdistill.models.summary import format_summary, summarize

    if args.list:
        width = max(len(name) for name in list_presets())
        print("\n".join(f"{name:<{width}}  {describe_preset(name)}".rstrip() for name in list_presets()))
        return 0
    if not args.model:
        raise ValueError("give a preset name or a checkpoint path (presets: " + ", ".join(list_presets()) + ")")
    if args.model in list_presets():
        # Shapes and FLOPs need no real weights: build on the meta device, instantly and without memory.
        with torch.device("meta"):
            model = build_model(args.model)
    elif Path(args.model).exists() or Path(args.model + ".json").exists():
        model = load_model(args.model)
    else:
        raise ValueError(
            f"{args.model!r} is neither a model preset ({', '.join(list_presets())}) nor an existing checkpoint path"
        )
    summary = summarize(model, pick_image_size(args.image_size, {}, model))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0

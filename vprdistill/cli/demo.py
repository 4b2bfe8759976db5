"""``vprdistill demo``: the whole method on built-in data, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args

DESCRIPTION = """The main job: on built-in synthetic data, train a segmenter and write its
predicted maps, then the TSCM teacher, the TSCM student with and without
cross-metric KD, the StructVPR seg-branch (on the predicted maps) and
weighted RGB student, and one student from both teachers; evaluate them
overall and per query condition beside their baselines; write report.md and
report.html."""


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "generate SynthCity, train TSCM / StructVPR / combined models, evaluate, write a report"
    parser = add_command(subparsers, "demo", run, summary, DESCRIPTION)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (runs, data, report)")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run of the same pipeline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset and of every training run")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="use this SynthCity-format dataset instead of generating one (predicted maps are written into it)",
    )
    add_device_args(parser)


def run(args: argparse.Namespace) -> int:
    from vprdistill.experiments.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, threads=args.threads, dataset=args.dataset)
    return 0

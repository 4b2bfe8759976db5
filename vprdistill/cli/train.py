"""``vprdistill train``: train any method from a YAML preset, or resume a run."""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args

EPILOG = """examples:
  vprdistill train tscm/synth-teacher-tiny data.dataset=data/synthcity-small --out runs/teacher
  vprdistill train configs/my.yaml epochs=5 optim.lr=1e-4
  vprdistill train --resume runs/teacher epochs=20      # continue, with a larger epoch budget

CONFIG is a YAML file or the name of a packaged preset (`vprdistill train --list`).
Overrides are key=value with dotted keys; values are parsed as YAML and checked
against each key's type.

--resume continues the run from its last finished epoch. Only these keys may differ
from its config.yaml (optim values apply from the next epoch):
  {safe}.
A change of any other key is refused before anything is written. One training
writes a run folder at a time; a second one is refused (docs/RELIABILITY.md)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from vprdistill.train.config import RESUME_SAFE_KEYS

    # Defaults not shown: the help of --out says what its None means.
    parser = add_command(
        subparsers, "train", run, "train a model (baseline, TSCM teacher/student, StructVPR) from a YAML preset",
        "Train with NetVLAD-style cached hard-negative mining; writes a run folder with the "
        "resolved config, log, metrics.jsonl and best/last checkpoints (safetensors + JSON).",
        EPILOG.format(safe=textwrap.fill(", ".join(RESUME_SAFE_KEYS), width=84, subsequent_indent="  ")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("config", nargs="?", help="YAML preset (path or packaged name)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 data.image_size=[64,64]")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<name>_<timestamp>)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted run from its last finished epoch")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the packaged presets and exit")
    add_device_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from vprdistill.train.config import PACKAGE_CONFIG_DIR, load_config
    from vprdistill.train.loop import train
    from vprdistill.train.run_folder import timestamped_run_dir

    if args.list:
        for path in sorted(PACKAGE_CONFIG_DIR.rglob("*.yaml")):
            print(path.relative_to(PACKAGE_CONFIG_DIR).with_suffix(""))
        return 0
    # --device and --threads, when given, are overrides of the config's keys.
    devices = [
        f"{key}={value}"
        for key, value in (("device", args.device), ("threads", args.threads))
        if value not in (None, "auto")
    ]
    overrides = list(args.overrides) + devices
    if args.resume is not None:
        # With --resume the positional CONFIG, if any, is an override too.
        if args.config:
            overrides.insert(0, args.config)
        source = args.resume / "config.yaml"
        if not source.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no config.yaml there (is it a run folder?)")
    elif not args.config:
        raise ValueError("give a CONFIG (YAML file or packaged preset), or --resume RUN_DIR")
    else:
        source = args.config
    config = load_config(source, overrides)
    out = args.resume or args.out or timestamped_run_dir("runs", config.name)
    if args.no_progress:
        config.progress = False
    result = train(config, out, resume=args.resume is not None)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return 0
    print(f"run folder: {result.run_dir}")
    best = (
        f"best validation R@1: {result.best_recall_at_1:.2f} (epoch {result.best_epoch})"
        if result.best_recall_at_1 >= 0
        else f"no validation split: the best checkpoint is the last epoch's ({result.best_epoch})"
    )
    print(f"{best}, epochs run: {result.epochs_run}" + (" (stopped early)" if result.stopped_early else ""))
    return 0

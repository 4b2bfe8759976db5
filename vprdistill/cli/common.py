"""What several sub-commands share: the help formatter and the device options.

Nothing here imports torch: the parsers of every sub-command are built for
``vprdistill --help``, which must answer at once.
"""

from __future__ import annotations

import argparse

from vprdistill.utils.device import DEVICE_CHOICES, resolve_device, set_threads


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples of the description kept as written."""


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=f"compute device: {'|'.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch and faiss (default: library default)"
    )


def apply_device_args(args: argparse.Namespace):
    """Apply ``--threads`` and return the resolved ``torch.device``."""
    set_threads(args.threads)
    return resolve_device(args.device)

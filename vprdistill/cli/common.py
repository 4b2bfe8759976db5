"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse

from vprdistill.utils.device import DEVICE_CHOICES, resolve_device, set_threads


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=f"compute device: {'|'.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and faiss (default: library default)")


def apply_device_args(args: argparse.Namespace):
    """Apply ``--threads`` and return the resolved ``torch.device``."""
    set_threads(args.threads)
    return resolve_device(args.device)

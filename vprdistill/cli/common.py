"""What several sub-commands share: their registration and help formatter, the
device and dataset options, and the model a ``--model`` names.

Nothing here imports torch at module level: the parsers of every sub-command
are built for ``vprdistill --help``, which must answer at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vprdistill.utils.device import DEVICE_CHOICES, resolve_device, set_threads


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples of the description kept as written."""


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int] | None,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
    formatter_class: type[argparse.HelpFormatter] = HelpFormatter,
) -> argparse.ArgumentParser:
    """The parser of sub-command ``name``, which runs ``func(args)`` (None: its own sub-commands do)."""
    parser = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=formatter_class
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=f"compute device: {'|'.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch and faiss (default: library default)"
    )


def apply_device_args(args: argparse.Namespace):
    """Apply ``--threads`` and return the resolved ``torch.device``."""
    set_threads(args.threads)
    return resolve_device(args.device)


def add_image_size_arg(
    parser: argparse.ArgumentParser, help: str, default: list[int] | None = None, metavar: str = "N"
) -> None:
    """``--image-size``: one side or H W (``deploy.model_io.pick_image_size`` reads it)."""
    parser.add_argument("--image-size", type=int, nargs="+", default=default, metavar=metavar, help=help)


def add_index_model_arg(parser: argparse.ArgumentParser) -> None:
    """``--model`` of a command that reads a map index, which records its own model."""
    parser.add_argument(
        "--model", default=None, metavar="RUN_OR_CHECKPOINT", help="default: the model the index records"
    )


READERS = ("auto", "folder", "mat", "msls", "vprbench", "gsv-lists")


def add_dataset_args(
    parser: argparse.ArgumentParser, split_default: str | None, split_help: str | None = None, formats: bool = False
) -> None:
    """``--dataset PATH`` or ``--database DIR --queries DIR`` (with ``--positions``, ``--utm-zone``), and ``--split``.

    ``formats`` adds the options that pick a dataset's format and where its
    images are (``--queries-root``, ``--dataset-name``, ``--reader``,
    ``--image-root``). :func:`open_dataset_args` opens what they name.
    """
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, metavar="PATH",
                        help="folder-format root, a root holding <name>_<split>.mat, or a .mat file "
                             "(for another --split, the <name>_<split>.mat beside it)")  # fmt: skip
    source.add_argument("--database", type=Path, metavar="DIR",
                        help="instead of --dataset: a folder of database images, with --queries")  # fmt: skip
    parser.add_argument("--queries", type=Path, default=None, metavar="DIR", help="with --database: the query images")
    parser.add_argument("--positions", type=Path, default=None, metavar="FILE.csv",
                        help="with --database: image positions, header path,lat,lon or path,east,north "
                             "(when not given: @east@north@ file names)")  # fmt: skip
    parser.add_argument("--utm-zone", default=None, metavar="ZONE",
                        help="with --database: the UTM zone of the positions, e.g. 17T (lat/lon are converted into it)")  # fmt: skip
    if formats:
        parser.add_argument("--queries-root", type=Path, default=None, metavar="DIR",
                            help="for a .mat dataset: the folder its query paths are relative to "
                                 "(when not given: the image root, then its queries_real/)")  # fmt: skip
    parser.add_argument("--split", default=split_default, help=split_help)
    parser.set_defaults(split_not_given=split_default)  # for open_dataset_args to tell a --split given
    if formats:
        parser.add_argument("--dataset-name", default=None, metavar="NAME",
                            help="which NetVLAD set of a root holding several, e.g. pitts30k or pitts250k")  # fmt: skip
        parser.add_argument("--reader", default="auto", choices=READERS, help="dataset format (docs/DATASETS.md)")
        parser.add_argument("--image-root", type=Path, default=None, metavar="DIR",
                            help="where the relative image paths of a .mat file or gsv-cities lists start")  # fmt: skip


def open_dataset_args(args: argparse.Namespace):
    """The dataset of :func:`add_dataset_args`' options, and its `DatasetSource`.

    Options of one way that the other does not take are refused, naming them,
    rather than ignored. ``--skip-bad-images`` and ``--segmentation-dir`` apply
    where the command has them. Two folders need every position: a query
    without one is an error naming it.
    """
    from vprdistill.data.readers import DEFAULT_SEGMENTATION_DIR, open_dataset_with_source
    from vprdistill.data.two_folders import read_two_folders_with_source

    # The options of --dataset only, with the value that means "not given" (a command without one never gives it).
    dataset_only = {"--split": ("split", args.split_not_given), "--dataset-name": ("dataset_name", None),
                    "--reader": ("reader", "auto"), "--queries-root": ("queries_root", None),
                    "--image-root": ("image_root", None),
                    "--segmentation-dir": ("segmentation_dir", DEFAULT_SEGMENTATION_DIR)}  # fmt: skip
    chosen = {dest: getattr(args, dest, not_given) for dest, not_given in dataset_only.values()}
    skip_bad_images = getattr(args, "skip_bad_images", False)
    if args.database is not None:
        if args.queries is None:
            raise ValueError("--database needs --queries (the folder of query images)")
        given = [flag for flag, (dest, not_given) in dataset_only.items() if chosen[dest] != not_given]
        if given:
            raise ValueError(f"{', '.join(given)}: for --dataset only, not with --database/--queries")
        return read_two_folders_with_source(
            args.database, args.queries, args.positions, require_query_positions=True,
            skip_bad_images=skip_bad_images, zone=args.utm_zone,
        )  # fmt: skip
    given = [flag for flag, value in (("--queries", args.queries), ("--positions", args.positions),
                                      ("--utm-zone", args.utm_zone)) if value is not None]  # fmt: skip
    if given:
        raise ValueError(f"{', '.join(given)}: with --database only, not with --dataset")
    return open_dataset_with_source(
        args.dataset, split=args.split, reader=chosen["reader"], skip_bad_images=skip_bad_images,
        name=chosen["dataset_name"], segmentation_dir=chosen["segmentation_dir"],
        queries_root=chosen["queries_root"], image_root=chosen["image_root"],
    )  # fmt: skip


def run_settings(model_spec: str) -> dict[str, Any]:
    """The ``data`` section of the training config next to a checkpoint (empty when there is none).

    A fallback for what the checkpoint does not record: the image size of checkpoints saved
    before it travelled with the weights, and the structural label source of a seg run.
    """
    import yaml

    path = Path(model_spec)
    folder = path if path.is_dir() else path.parent
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return {}
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config_file}: not valid YAML ({error})") from error
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def load_model_or_preset(spec: str, device, pretrained: bool = False):
    """A checkpoint (run folder, file or stem) if ``spec`` names one, else an untrained preset."""
    from vprdistill.models.checkpoint import load_model
    from vprdistill.models.registry import build_model, list_presets

    path = Path(spec)
    if path.exists() or path.with_name(path.name + ".json").exists():
        return load_model(path, device=device)
    if spec in list_presets():
        return build_model(spec, pretrained=pretrained).to(device).eval()
    raise FileNotFoundError(
        f"--model {spec!r} is neither an existing run folder or checkpoint nor a preset ({', '.join(list_presets())})"
    )

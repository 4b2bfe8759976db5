"""The ``vprdistill`` command: one sub-command per module of this package.

Every module in ``vprdistill.cli`` that defines ``register(subparsers)`` adds
its own sub-command, so a new command is one new file.

An error a user can fix (``ValueError``, ``RuntimeError``, ``OSError`` and the
package's errors built on them, and ``MissingExtraError``: a feature's optional
extra is not installed) ends in one line on stderr and exit status 1;
``--debug`` (before or after the sub-command) or ``VPRDISTILL_DEBUG=1`` shows
the traceback instead. Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import vprdistill
import vprdistill.cli as cli_package
from vprdistill.cli.common import HelpFormatter
from vprdistill.utils.extras import MissingExtraError

DEBUG_ENV = "VPRDISTILL_DEBUG"
DEBUG_HELP = f"on an error, show the full traceback instead of one line (or set {DEBUG_ENV}=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vprdistill",
        description="Visual place recognition by knowledge distillation (TSCM, StructVPR).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vprdistill {vprdistill.__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"vprdistill.cli.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    # `--debug` after the sub-command too; SUPPRESS keeps a sub-command from resetting one given before it.
    for command in _all_subparsers(subparsers):
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _all_subparsers(
    subparsers: argparse._SubParsersAction,
) -> list[argparse.ArgumentParser]:
    """Every sub-command's parser, nested ones (``index build``) included, each once."""
    found: list[argparse.ArgumentParser] = []
    for parser in dict.fromkeys(subparsers.choices.values()):
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend(_all_subparsers(action))
    return found


# Errors a user can cause and fix (bad paths, configs, data, a busy run folder, a full disk):
# one line each. Package errors derive from ValueError or RuntimeError (CheckpointError,
# DatasetFormatError, FolderLockedError, NonFiniteLossError, ...), and a feature's optional
# extra not installed (MissingExtraError, not every ImportError: a ModuleNotFoundError can be
# a bug). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, RuntimeError, OSError, MissingExtraError)


def describe_error(error: BaseException) -> str:
    """One line for a user error; an ``OSError`` of the system reads ``FILE: reason``."""
    if isinstance(error, OSError) and error.strerror and len(error.args) >= 2:
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or bool(os.environ.get(DEBUG_ENV))
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        print(
            f"vprdistill {args.command}: error: {describe_error(error)}",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

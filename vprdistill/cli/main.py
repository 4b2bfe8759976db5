"""The ``vprdistill`` command: one sub-command per module of this package.

Every module in ``vprdistill.cli`` that defines ``register(subparsers)`` adds
its own sub-command, so a new command is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vprdistill
import vprdistill.cli as cli_package


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vprdistill",
        description="Visual place recognition by knowledge distillation (TSCM, StructVPR).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vprdistill {vprdistill.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"vprdistill.cli.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        # Errors meant for the user (bad paths, bad configs, bad data) end in one
        # clear line instead of a traceback; VPRDISTILL_DEBUG=1 shows the traceback.
        import os

        if os.environ.get("VPRDISTILL_DEBUG"):
            raise
        print(f"vprdistill {args.command}: error: {error}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

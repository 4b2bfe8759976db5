"""`vprdistill --help` and every `vprdistill <command> --help` answer without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

from vprdistill.cli.main import build_parser

# One fresh interpreter runs each argv in turn and records, after each, whether torch is loaded
# (once loaded it stays, so the first argv that loads it is the one named).
PROBE = """
import contextlib, io, json, sys
from vprdistill.cli.main import main
report = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit:
            pass
    report.append({"argv": argv, "torch": "torch" in sys.modules, "help": out.getvalue()})
print(json.dumps(report))
"""


def _run(argvs: list[list[str]]) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_no_torch() -> None:
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "eval", "export", "serve", "index", "localize"} <= set(commands)
    report = _run([["--help"]] + [[command, "--help"] for command in commands])
    assert len(report) == len(commands) + 1
    for found in report:
        assert "usage: vprdistill" in found["help"], found["argv"]
        assert not found["torch"], f"vprdistill {' '.join(found['argv'])} imported torch"


def test_the_probe_sees_torch_when_a_command_runs() -> None:
    # `info --list` builds nothing but reads the model registry, which needs torch:
    # the probe above would notice such an import.
    (found,) = _run([["info", "--list"]])
    assert found["torch"]

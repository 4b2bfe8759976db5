"""The core install trains and evaluates without the optional extras; each feature names its missing extra.

A fresh interpreter stands for an install without them: each blocked package is
``None`` in ``sys.modules``, which is how Python reads "not installed" (``import``
raises ``ModuleNotFoundError``, ``importlib.util.find_spec`` returns None). A
meta-path finder that raises instead would break torch, whose compiler probes
optional packages with ``find_spec`` while timm is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vprdistill.utils.extras import MissingExtraError, require

# Import names of the packages of the segment, export, serve and report extras.
BLOCKED = [
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "fastapi",
    "uvicorn",
    "starlette",
    "python_multipart",
    "multipart",
    "matplotlib",
]
# The modules that belong to a feature with an extra; every other module of the package is core.
FEATURE_MODULES = {
    "vprdistill.experiments.demo": "report",  # imports the plots
    "vprdistill.experiments.plots": "report",
    "vprdistill.serve.app": "serve",
    "vprdistill.serve.auth": None,  # imported through serve.app or `vprdistill serve`, which name the extra
    "vprdistill.serve.server": None,
}

PROBE = """
import contextlib, importlib, io, json, pkgutil, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None
import vprdistill
from vprdistill.cli.main import main

report = {"failed": {}, "runs": []}
for info in pkgutil.walk_packages(vprdistill.__path__, "vprdistill."):
    if info.name == "vprdistill.__main__":  # runs the command line
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        report["failed"][info.name] = [type(error).__name__, str(error)]
for argv in json.loads(sys.argv[2]):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    report["runs"].append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
report["loaded"] = sorted(n for n, m in sys.modules.items() if m is not None and n.split(".")[0] in json.loads(sys.argv[1]))
print(json.dumps(report))
"""


def _without_extras(argvs: list[list[str]], cwd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(BLOCKED), json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def blocked(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One interpreter without the extras: every module imported, then each command run, by label."""
    work = tmp_path_factory.mktemp("no_extras")
    commands = {
        "train --list": ["train", "--list"],
        "eval --help": ["eval", "--help"],
        "eval": ["eval", "--model", "thumbnail-16", "--dataset", str(synth_tiny), "--device", "cpu",
                 "--no-progress", "--batch-size", "8", "--json", str(work / "eval.json")],
        "export": ["export", "--model", "thumbnail-16", "--out", str(work / "x.onnx")],
        "serve": ["serve", "--index", str(work / "no-index")],
    }  # fmt: skip
    report = _without_extras(list(commands.values()), work)
    report["runs"] = dict(zip(commands, report["runs"], strict=True))
    report["work"] = work
    return report


def test_only_feature_modules_need_an_extra(blocked: dict) -> None:
    assert set(blocked["failed"]) == set(FEATURE_MODULES), blocked["failed"]
    for module, extra in FEATURE_MODULES.items():
        kind, message = blocked["failed"][module]
        if extra is not None:
            assert kind == "MissingExtraError", (module, kind, message)
            assert f"optional '{extra}' extra" in message and f"vprdistill[{extra}]" in message
    assert blocked["loaded"] == [], "a blocked package was imported after all"


def test_the_core_commands_run_without_extras(blocked: dict) -> None:
    listing = blocked["runs"]["train --list"]
    assert listing["code"] == 0, listing["err"]
    assert "baseline/synth-resnet18-gem" in listing["out"]
    assert blocked["runs"]["eval --help"]["code"] == 0
    assert "--dataset" in blocked["runs"]["eval --help"]["out"]

    evaluation = blocked["runs"]["eval"]
    assert evaluation["code"] == 0, evaluation["err"]
    recall = json.loads((blocked["work"] / "eval.json").read_text())["recall"]
    values = [recall[n] for n in sorted(recall, key=int)]  # percentages, R@1 first
    assert values and all(0.0 <= v <= 100.0 for v in values), recall
    assert values == sorted(values), f"Recall@N must not fall as N grows: {recall}"


@pytest.mark.parametrize(("command", "extra"), [("export", "export"), ("serve", "serve")])
def test_a_feature_without_its_extra_exits_1_naming_it(blocked: dict, command: str, extra: str) -> None:
    run = blocked["runs"][command]
    assert run["code"] == 1, run
    assert "Traceback" not in run["err"]
    assert run["err"].startswith(f"vprdistill {command}: error: ")
    assert f"needs the optional '{extra}' extra: uv sync --extra {extra}" in run["err"]
    assert f"pip install 'vprdistill[{extra}]'" in run["err"]
    assert not (blocked["work"] / "x.onnx").exists()


def test_require_returns_the_installed_module() -> None:
    import json as json_module

    assert require("json", "report", "a test") is json_module
    assert require("os.path", "report", "a test") is sys.modules["os.path"]


def test_require_names_the_extra_of_a_missing_module_and_keeps_a_broken_install_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingExtraError, match=r"the thing needs the optional 'export' extra: uv sync --extra export"):
        require("vprdistill_no_such_module", "export", "the thing")
    with pytest.raises(MissingExtraError):  # a package above the module is missing
        require("vprdistill_no_such_module.sub", "export", "the thing")
    assert issubclass(MissingExtraError, ImportError)

    # An installed module whose own import is missing is a broken install, not a missing extra.
    (tmp_path / "vprdistill_broken_probe.py").write_text("import vprdistill_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("vprdistill_broken_probe", "export", "the thing")
    assert not isinstance(caught.value, MissingExtraError)
    assert caught.value.name == "vprdistill_absent_dependency"


def test_the_command_line_reports_only_a_missing_extra_in_one_line() -> None:
    from vprdistill.cli.main import USER_ERRORS

    assert MissingExtraError in USER_ERRORS
    assert ImportError not in USER_ERRORS and ModuleNotFoundError not in USER_ERRORS

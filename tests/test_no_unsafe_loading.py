"""No code path of the package unpickles a file or runs a shell: scanned in its syntax tree, not its text.

Checked in every ``vprdistill/**.py``: ``torch.load`` only with a literal
``weights_only=True``; no import of pickle-like modules (pickle, dill,
cloudpickle, shelve, marshal, joblib); no ``allow_pickle=True``; no
``yaml.load`` family (only ``safe_load``); no ``shell=True`` and no
``os.system``/``os.popen``. Words in strings and comments ("never pickled")
are not code and are not flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vprdistill"

PICKLE_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "shelve",
    "marshal",
    "joblib",
}
UNSAFE_YAML = {
    "load",
    "load_all",
    "unsafe_load",
    "unsafe_load_all",
    "full_load",
    "full_load_all",
}
SHELL_CALLS = {"os.system", "os.popen"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, "" for anything else (a call result, a subscript)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe loading or shell call in ``source``, as ``file:line: what``."""
    findings: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        findings.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in PICKLE_MODULES:
                flag(node, f"imports from {node.module}")
            if node.module == "torch" and any(alias.name == "load" for alias in node.names):
                flag(
                    node,
                    "imports torch.load under a bare name, hiding its weights_only argument",
                )
            if root == "yaml" and any(alias.name in UNSAFE_YAML for alias in node.names):
                flag(node, "imports an unsafe yaml loader")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            if name == "torch.load" and not _is_true(keywords.get("weights_only")):
                flag(node, "torch.load without weights_only=True")
            if name.startswith("yaml.") and name.split(".", 1)[1] in UNSAFE_YAML:
                flag(node, f"{name} (use yaml.safe_load)")
            if "allow_pickle" in keywords and not (
                isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False
            ):
                flag(node, "allow_pickle that is not literally False")
            if "shell" in keywords and not (
                isinstance(keywords["shell"], ast.Constant) and keywords["shell"].value is False
            ):
                flag(node, "shell= that is not literally False")
            if name in SHELL_CALLS:
                flag(node, f"{name} runs a shell")
    return findings


def test_the_package_source_loads_nothing_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, "the scan did not find the package source"
    findings = [finding for path in files for finding in scan_source(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert findings == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load(path)",
        "import torch\nstate = torch.load(path, weights_only=False)",
        "import torch\nstate = torch.load(path, **options)",
        "from torch import load\nstate = load(path)",
        "import pickle",
        "import pickle as p",
        "from dill import loads",
        "import numpy as np\nx = np.load(path, allow_pickle=True)",
        "import yaml\nconfig = yaml.load(text, Loader=yaml.Loader)",
        "import yaml\nconfig = yaml.unsafe_load(text)",
        "from yaml import full_load",
        "import subprocess\nsubprocess.run(command, shell=True)",
        "import subprocess\nsubprocess.Popen(command, shell=use_shell)",
        "import os\nos.system('ls')",
    ],
)
def test_the_scanner_flags_each_unsafe_pattern(snippet):
    assert len(scan_source(snippet)) >= 1, snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load(path, map_location='cpu', weights_only=True)",
        "import numpy as np\nx = np.load(path, allow_pickle=False)\ny = np.load(path)",
        "import yaml\nconfig = yaml.safe_load(text)",
        "import subprocess\nsubprocess.run(['ls', '-l'], check=True)\nsubprocess.run(['ls'], shell=False)",
        '"""Plain arrays, never pickled; no pickle, no yaml.load, no shell=True here."""\n# torch.load(path)',
    ],
)
def test_the_scanner_leaves_safe_code_alone(snippet):
    assert scan_source(snippet) == []

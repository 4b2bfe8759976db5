"""The command line: an expected error is one clear line and exit status 1; --debug shows the traceback."""

from __future__ import annotations

import errno

import pytest

from tests.deploy.lock_helpers import lock_held_elsewhere
from vprdistill.cli.main import main
from vprdistill.train import loop

PRESET = "baseline/synth-resnet18-gem"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vprdistill train: error: "), lines[0]
    return lines[0]


def _raising(error: BaseException):
    def fake_train(*args, **kwargs):
        raise error

    return fake_train


@pytest.mark.parametrize(
    "error, expected",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/metrics.jsonl"),
         "/data/runs/x/metrics.jsonl: No space left on device"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/runs"), "/data/runs: Permission denied"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/x.yaml"), "/data/x.yaml: Is a directory"),
    ],
)  # fmt: skip
def test_an_os_error_is_one_line_naming_the_file(error, expected, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(loop, "train", _raising(error))
    assert (
        main(
            [
                "train",
                PRESET,
                f"data.dataset={tmp_path}",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 1
    )
    assert _one_line_error(capsys).endswith(expected)


def test_a_config_of_the_wrong_type_is_one_line(capsys):
    assert main(["train", PRESET, "epochs=abc"]) == 1
    assert "epochs must be an integer, got 'abc' (str)" in _one_line_error(capsys)


def test_a_locked_run_is_one_line(synth_tiny, tmp_path, capsys):
    run = tmp_path / "run"
    with lock_held_elsewhere(run, what="training run") as holder:
        tiny = [
            "epochs=1",
            "data.max_train_queries=4",
            "data.max_val_queries=4",
            "data.image_size=[64, 64]",
        ]
        assert (
            main(
                [
                    "train",
                    PRESET,
                    f"data.dataset={synth_tiny}",
                    *tiny,
                    "device=cpu",
                    "--out",
                    str(run),
                ]
            )
            == 1
        )
    line = _one_line_error(capsys)
    assert f"training run {run} is in use by another process (pid {holder.pid}" in line


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_shows_the_traceback(where, monkeypatch):
    argv = ["train", PRESET, "epochs=abc"]
    if where == "before":
        argv = ["--debug", *argv]
    elif where == "after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("VPRDISTILL_DEBUG", "1")
    with pytest.raises(ValueError, match="epochs must be an integer"):
        main(argv)


def test_an_unexpected_error_is_not_hidden(monkeypatch, tmp_path):
    # A bug is not a user error: it keeps its traceback (and its type) instead of one polite line.
    monkeypatch.setattr(loop, "train", _raising(TypeError("unsupported operand")))
    with pytest.raises(TypeError, match="unsupported operand"):
        main(
            [
                "train",
                PRESET,
                f"data.dataset={tmp_path}",
                "--out",
                str(tmp_path / "run"),
            ]
        )

"""One training process per run folder: a second one (resume or new run on the same --out) is refused at once."""

from __future__ import annotations

import os
import time

import pytest

from tests.deploy.lock_helpers import lock_held_elsewhere, start_cli
from tests.train.helpers import copy_run, metric_epochs, tiny_config
from vprdistill.cli.main import main
from vprdistill.train.loop import train
from vprdistill.utils.locking import FolderLockedError, lock_file_for, lock_holder


def _wait_for_lock(run, process, seconds: float = 300.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        holder = lock_holder(run)
        if holder is not None and holder.get("pid") == process.pid:
            return holder
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the first training ended without ever holding the run's lock: {err[-2000:]}")
        time.sleep(0.05)
    pytest.fail("the first training did not take the run's lock")


def test_a_second_resume_of_a_live_run_is_refused_and_the_epochs_are_written_once(one_epoch_run, tmp_path, capsys):
    run = copy_run(one_epoch_run, tmp_path / "run")
    first = start_cli(["train", "--resume", str(run), "epochs=3", "--no-progress"])
    try:
        _wait_for_lock(run, first)
        code = main(["train", "--resume", str(run), "epochs=3", "--no-progress"])
        still_running = first.poll() is None
        _, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert code == 1
    err = capsys.readouterr().err
    assert f"training run {run} is in use by another process (pid {first.pid}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert still_running, "the first training ended before the second was refused; the test proved nothing"
    assert first.returncode == 0, first_err[-2000:]
    assert metric_epochs(run) == [1, 2, 3]


def test_a_new_run_on_the_out_of_a_live_run_is_refused_before_writing(synth_tiny, tmp_path):
    run = tmp_path / "runs" / "student"
    with (
        lock_held_elsewhere(run, what="training run") as holder,
        pytest.raises(
            FolderLockedError,
            match=r"training run .* is in use by another process \(pid \d+",
        ) as error,
    ):
        train(tiny_config(synth_tiny), run)
    assert error.value.holder["pid"] == holder.pid
    assert not run.exists(), "the refused run created the run folder"


def test_the_lock_is_held_while_training_and_released_when_it_fails(synth_tiny, one_epoch_run, tmp_path):
    run = copy_run(one_epoch_run, tmp_path / "run")
    seen = []

    def stop(info):
        seen.append(lock_holder(run))
        raise FloatingPointError("stop")

    with pytest.raises(FloatingPointError):
        train(tiny_config(synth_tiny, epochs=2), run, resume=True, step_callbacks=[stop])
    assert seen and seen[0] is not None and seen[0]["pid"] == os.getpid(), "training did not hold the lock"
    assert not lock_file_for(run).exists()
    with lock_held_elsewhere(run, what="training run"):  # another process takes it at once
        pass

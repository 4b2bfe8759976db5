"""Checkpoints as one unit: a kill or a full disk at any point of a save leaves a run that resumes exactly.

Each kill test resumes a 1-epoch run for epoch 2 in another process that dies
(``os._exit``, as a SIGKILL would leave it: no cleanup, no ``finally``) at one
point of epoch 2's save, then resumes it here and compares with an
uninterrupted 2-epoch run bit for bit.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.deploy.lock_helpers import REPO_ROOT, child_env
from tests.train.helpers import copy_run, metric_epochs, same_weights, tiny_config
from vprdistill.models.checkpoint import load_model
from vprdistill.train.loop import train

KILLED = 17

# Dies right after (or, for the backup, right before) the file-system call named by the point.
_KILLER = """
import os, shutil, sys
from pathlib import Path

point, run, dataset = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
real_replace, real_rename, real_rmtree = os.replace, os.rename, shutil.rmtree


def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if point == "file:" + Path(dst).name:
        os._exit(17)


def rename(src, dst, *args, **kwargs):
    real_rename(src, dst, *args, **kwargs)
    if point == "moved-away:" + Path(src).name:
        os._exit(17)


def rmtree(path, *args, **kwargs):
    if point == "before-removing:" + Path(path).name:
        os._exit(17)
    real_rmtree(path, *args, **kwargs)


from tests.train.helpers import tiny_config
from vprdistill.train.loop import train

os.replace, os.rename, shutil.rmtree = replace, rename, rmtree
train(tiny_config(dataset, epochs=2), run, resume=True)
"""

KILL_POINTS = [
    "file:last.safetensors",  # the new weights are written, their JSON and the loop state not yet
    "file:last.json",  # weights and JSON written, the loop state not yet
    "file:last_state.pt",  # every file of the new checkpoint written, not yet in place
    "moved-away:checkpoint",  # the previous checkpoint moved aside, the new one not yet in its place
    "before-removing:.checkpoint.backup",  # the new checkpoint in place, the previous one not yet removed
]


def _resume_and_die_at(point: str, run: Path, dataset: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILLER, point, str(run), str(dataset)],
        capture_output=True,
        check=False,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(),
        timeout=600,
    )


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_point_of_a_save_leaves_a_run_that_resumes_exactly(
    point, synth_tiny, one_epoch_run, two_epoch_run, tmp_path
):
    run = copy_run(one_epoch_run, tmp_path / "run")
    killed = _resume_and_die_at(point, run, synth_tiny)
    assert killed.returncode == KILLED, f"the save never reached {point}: {killed.stderr[-2000:]}"
    load_model(run)  # a reader finds a whole model at once, the swap cut short or not

    resumed = train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    assert resumed.epochs_run == 2
    assert same_weights(run / "last.safetensors", two_epoch_run / "last.safetensors")
    assert metric_epochs(run) == [1, 2]
    assert load_model(run).config == load_model(two_epoch_run).config  # best loads, its digest checked
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".checkpoint")]
    assert not leftovers, f"an interrupted save left {leftovers}"


# Pauses in the middle of epoch 2 and says so, to be killed there with SIGKILL.
_PAUSE_MID_EPOCH = """
import sys, time
from pathlib import Path

from tests.train.helpers import tiny_config
from vprdistill.train.loop import train


def pause(info):
    if info.epoch == 2 and info.step == 2:
        print("in epoch 2", flush=True)
        time.sleep(600)


train(tiny_config(Path(sys.argv[2]), epochs=2), Path(sys.argv[1]), resume=True, step_callbacks=[pause])
"""


def test_kill_9_in_the_middle_of_an_epoch_resumes_to_the_same_weights(
    synth_tiny, one_epoch_run, two_epoch_run, tmp_path
):
    run = copy_run(one_epoch_run, tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, "-c", _PAUSE_MID_EPOCH, str(run), str(synth_tiny)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(),
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.strip() == "in epoch 2", process.stderr.read() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # The killed process could not release its lock file; the kernel released the lock itself.
    resumed = train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    assert resumed.epochs_run == 2
    assert same_weights(run / "last.safetensors", two_epoch_run / "last.safetensors")
    assert metric_epochs(run) == [1, 2]


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(
    synth_tiny, one_epoch_run, two_epoch_run, tmp_path, monkeypatch
):
    run = copy_run(one_epoch_run, tmp_path / "run")
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # part of the file reaches the disk, then the space runs out
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RuntimeError) as error:
        train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    message = str(error.value)
    assert "disk is full" in message and str(run) in message
    assert "previous checkpoint (epoch 1) is intact" in message
    assert error.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)

    # Once there is space again, --resume continues from epoch 1 as if nothing happened.
    assert not [p.name for p in run.iterdir() if p.name.startswith(".checkpoint")]
    train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    assert same_weights(run / "last.safetensors", two_epoch_run / "last.safetensors")
    assert metric_epochs(run) == [1, 2]


def _as_previous_layout(run: Path) -> Path:
    """Rewrite a run folder as the previous version wrote it: every checkpoint file flat in the run folder."""
    for link in [p for p in run.iterdir() if p.is_symlink()]:
        target = link.resolve()
        link.unlink()
        shutil.copy2(target, link)
    shutil.rmtree(run / "checkpoint", ignore_errors=True)
    return run


def test_a_run_folder_of_the_previous_layout_resumes_and_moves_to_the_new_one(
    synth_tiny, one_epoch_run, two_epoch_run, tmp_path
):
    run = _as_previous_layout(copy_run(one_epoch_run, tmp_path / "run"))
    assert load_model(run).config["image_size"] == [
        64,
        64,
    ]  # the flat files load as before
    train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    assert same_weights(run / "last.safetensors", two_epoch_run / "last.safetensors")
    assert (run / "checkpoint" / "checkpoint.json").is_file()
    for name in (
        "last.safetensors",
        "last.json",
        "last_state.pt",
        "best.safetensors",
        "best.json",
    ):
        assert (run / name).is_symlink() and (run / name).is_file(), name


def test_a_run_of_the_previous_layout_interrupted_while_saving_gets_a_clear_message(
    synth_tiny, one_epoch_run, two_epoch_run, tmp_path
):
    run = _as_previous_layout(copy_run(one_epoch_run, tmp_path / "run"))
    # What a kill after the weights used to leave: epoch 2's weights, epoch 1's loop state.
    shutil.copy2(two_epoch_run / "last.safetensors", run / "last.safetensors")
    shutil.copy2(two_epoch_run / "last.json", run / "last.json")
    config_before = (run / "config.yaml").read_bytes()
    with pytest.raises(ValueError) as error:
        train(tiny_config(synth_tiny, epochs=2), run, resume=True)
    message = str(error.value)
    assert "last_state.pt" in message and "last.safetensors" in message
    assert "earlier version" in message and "init_from" in message
    assert (run / "config.yaml").read_bytes() == config_before

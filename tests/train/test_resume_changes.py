"""Resuming with a changed config: unsafe changes are refused before anything is written, optimiser changes applied."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.train.helpers import copy_run, metric_epochs, tiny_config
from vprdistill.cli.main import main
from vprdistill.models.checkpoint import load_model
from vprdistill.train.config import RESUME_SAFE_KEYS
from vprdistill.train.loop import train


def _files(run) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def test_a_changed_image_size_is_refused_naming_the_keys_before_anything_is_written(
    synth_tiny, one_epoch_run, tmp_path, capsys
):
    run = copy_run(one_epoch_run, tmp_path / "run")
    before = _files(run)
    code = main(
        [
            "train",
            "--resume",
            str(run),
            "data.image_size=[32, 32]",
            "seed=3",
            "epochs=2",
        ]
    )
    assert code == 1
    message = capsys.readouterr().err
    assert "data.image_size: [64, 64] in the run, [32, 32] now" in message
    assert "seed: 0 in the run, 3 now" in message
    assert "epochs" not in message.split("can change on resume")[0], "epochs may change and is not blamed"
    assert "interrupted" not in message
    assert _files(run) == before, "config.yaml, train.log, metrics.jsonl or a checkpoint was written"

    # The run is unharmed: a plain resume continues it, and its model keeps its input size.
    assert main(["train", "--resume", str(run), "epochs=2", "--no-progress"]) == 0
    assert metric_epochs(run) == [1, 2]
    assert load_model(run).config["image_size"] == [64, 64]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["image_size"] == [
        64,
        64,
    ]


def test_safe_changes_are_recorded_in_the_config_and_logged(synth_tiny, one_epoch_run, tmp_path):
    run = copy_run(one_epoch_run, tmp_path / "run")
    patience_before = yaml.safe_load((run / "config.yaml").read_text())["patience"]
    config = tiny_config(synth_tiny, epochs=2, patience=5, eval_batch_size=16, **{"data.num_workers": 0})
    train(config, run, resume=True)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["epochs"], saved["patience"], saved["eval_batch_size"]) == (2, 5, 16)
    log = (run / "train.log").read_text()
    assert "epochs: 1 -> 2" in log and f"patience: {patience_before} -> 5" in log and "eval_batch_size: 32 -> 16" in log
    assert {
        "epochs",
        "patience",
        "optim.lr",
        "optim.lr_decay",
        "device",
        "threads",
    } <= set(RESUME_SAFE_KEYS)


def test_a_learning_rate_of_zero_on_resume_is_applied_so_the_weights_stay(synth_tiny, one_epoch_run, tmp_path):
    # With lr = 0 Adam leaves every parameter where it is; if the new lr were ignored (the
    # optimiser state restored with epoch 1's lr) epoch 2 would move them.
    run = copy_run(one_epoch_run, tmp_path / "run")
    before = load_file(str(one_epoch_run / "last.safetensors"))
    train(tiny_config(synth_tiny, epochs=2, **{"optim.lr": 0}), run, resume=True)
    after = load_file(str(run / "last.safetensors"))
    parameters = {name for name, _ in load_model(run).named_parameters()}
    assert parameters and all(torch.equal(before[k], after[k]) for k in parameters)
    running = [k for k in after if k.endswith("running_mean")]
    assert any(not torch.equal(before[k], after[k]) for k in running), "epoch 2 did run (BatchNorm statistics moved)"


def test_a_changed_lr_and_decay_follow_the_new_schedule_and_are_logged(synth_tiny, one_epoch_run, tmp_path):
    run = copy_run(one_epoch_run, tmp_path / "run")
    train(
        tiny_config(synth_tiny, epochs=2, **{"optim.lr": "1e-4", "optim.lr_decay": 0.5}),
        run,
        resume=True,
    )
    # optim.lr is the rate of epoch 1 and decays by lr_decay per epoch: epoch 2 trains at
    # 1e-4 * 0.5, and the metrics record the rate after the epoch's scheduler step.
    lr_after_epoch_2 = 1e-4 * 0.5**2
    (_, record) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["lr"] == pytest.approx(lr_after_epoch_2, rel=1e-12)
    state = torch.load(run / "last_state.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_after_epoch_2, rel=1e-12)
    log = (run / "train.log").read_text()
    assert "optim.lr: 0.001 -> 0.0001" in log and "epoch 2 trains at lr 5e-05" in log

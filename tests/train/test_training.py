"""End-to-end training on the tiny SynthCity split: learning, exact resume, NaN handling."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import IMAGE_SIZE, same_weights, tiny_config
from vprdistill.data.readers import open_dataset
from vprdistill.eval.evaluate import evaluate_model
from vprdistill.models.checkpoint import load_model
from vprdistill.models.registry import build_model
from vprdistill.train.loop import NonFiniteLossError, train
from vprdistill.utils.seed import seed_everything


def _recall_at_1(model, dataset_root, split: str) -> float:
    dataset = open_dataset(dataset_root, split=split)
    result = evaluate_model(
        model,
        dataset,
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        device="cpu",
        progress=False,
    )
    return result.recall["1"]


def test_training_improves_recall_over_the_untrained_model(synth_tiny, tmp_path):
    # Measured on the training split's queries against its database: with 32 training
    # queries the tiny split cannot show generalisation reliably (RESULTS.md does that on
    # the small preset), but whether the loop learns what it is asked to learn can fail
    # (wrong loss sign, mining that picks the wrong positive, an optimiser never stepping).
    config = tiny_config(synth_tiny, epochs=4)
    seed_everything(config.seed)
    untrained = build_model(config.model)
    before = _recall_at_1(untrained, synth_tiny, "train")
    result = train(config, tmp_path / "run")
    after = _recall_at_1(load_model(result.run_dir / "last.safetensors"), synth_tiny, "train")
    assert after >= before + 10, f"training-split R@1 did not improve by 10 points: {before:.1f} -> {after:.1f}"
    # The run folder holds everything a user needs to inspect and reuse the run.
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "train.log",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "last_state.pt",
    ):
        assert (result.run_dir / name).is_file(), name
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert all("1" in m["val_recall"] for m in metrics)


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(synth_tiny, tmp_path):
    config = tiny_config(synth_tiny, epochs=3)
    full = train(config, tmp_path / "full")

    def interrupt_in_epoch_3(info):
        if info.epoch == 3 and info.step == 1:
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        train(config, tmp_path / "interrupted", step_callbacks=[interrupt_in_epoch_3])
    resumed = train(config, tmp_path / "interrupted", resume=True)
    assert resumed.epochs_run == 3
    a = load_file(str(full.run_dir / "last.safetensors"))
    b = load_file(str(resumed.run_dir / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3]


def _poison_weights_at(epoch: int):
    def poison(info):
        if info.epoch == epoch and info.step == 1:
            with torch.no_grad():
                for parameter in info.model.parameters():
                    parameter.fill_(float("nan"))

    return poison


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(synth_tiny, tmp_path):
    config = tiny_config(synth_tiny, epochs=2)
    run_dir = tmp_path / "nan"

    with pytest.raises(NonFiniteLossError, match="non-finite loss .* epoch 2") as error:
        train(config, run_dir, step_callbacks=[_poison_weights_at(2)])
    weights = load_file(str(run_dir / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    load_model(run_dir)  # the last good checkpoint still loads

    # The message names the checkpoint that is there, and its advice can be followed as given.
    message = str(error.value)
    assert "keeps the checkpoint of epoch 1" in message
    advice = re.search(r"vprdistill train --resume (\S+) (optim\.lr=\S+)", message)
    assert advice is not None, message
    assert advice.group(1) == str(run_dir) and advice.group(2) == "optim.lr=0.0001"
    lowered = tiny_config(synth_tiny, epochs=2, extra_overrides=[advice.group(2)])
    resumed = train(lowered, run_dir, resume=True)
    assert resumed.epochs_run == 2
    second = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[1])
    # The lowered rate was applied: 1e-4 decayed twice (epoch 1, then epoch 2's scheduler step).
    assert second["lr"] == pytest.approx(1e-4 * lowered.optim.lr_decay**2, rel=1e-12)


def test_nan_loss_in_the_first_epoch_says_that_no_checkpoint_exists(synth_tiny, tmp_path):
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as error:
        train(
            tiny_config(synth_tiny, epochs=2),
            run_dir,
            step_callbacks=[_poison_weights_at(1)],
        )
    message = str(error.value)
    assert "no checkpoint" in message and "keeps" not in message and "--resume" not in message
    assert "optim.lr=0.0001" in message
    assert not (run_dir / "last.safetensors").exists() and not (run_dir / "best.safetensors").exists()


def test_without_a_validation_split_the_latest_epoch_is_the_best(synth_tiny, tmp_path):
    result = train(
        tiny_config(synth_tiny, epochs=2, **{"data.val_split": "", "patience": 1}),
        tmp_path / "run",
    )
    assert result.epochs_run == 2 and not result.stopped_early
    assert result.best_epoch == 2
    assert same_weights(result.run_dir / "best.safetensors", result.run_dir / "last.safetensors")

"""Run folders shared by the resume, checkpoint-safety and locking tests; treat them as read-only (copy first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import tiny_config


@pytest.fixture(scope="session")
def one_epoch_run(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny config trained for 1 epoch: resuming it with ``epochs=2`` continues it."""
    from vprdistill.train.loop import train

    return train(tiny_config(synth_tiny, epochs=1), tmp_path_factory.mktemp("one_epoch") / "run").run_dir


@pytest.fixture(scope="session")
def two_epoch_run(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same config trained for 2 epochs without interruption: what every resumed run must equal."""
    from vprdistill.train.loop import train

    return train(tiny_config(synth_tiny, epochs=2), tmp_path_factory.mktemp("two_epochs") / "run").run_dir

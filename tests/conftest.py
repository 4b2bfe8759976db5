"""Fixtures shared across the suite: one tiny SynthCity dataset, generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Hub libraries read this when imported: tests never wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tests run on two cores next to each other; one torch thread each keeps them from fighting.
torch.set_num_threads(int(os.environ.get("VPRDISTILL_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Teacher descriptor caches and hub look-ups never touch the user's home during tests."""
    os.environ["VPRDISTILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SynthCity dataset (train/val/test, with segmentation) at 64×64."""
    from vprdistill.data.synth import generate

    out = tmp_path_factory.mktemp("synth_tiny")
    generate(out, preset="tiny", seed=0, image_size=64, workers=1, progress=False)
    return out

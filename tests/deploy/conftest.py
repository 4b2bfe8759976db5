"""Fixtures of the deployment tests: a tiny folder dataset, a tiny saved model and an index of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import make_dataset, save_tiny_model


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("deploy_dataset"))


@pytest.fixture(scope="session")
def tiny_model_stem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("deploy_model"))


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, tiny_model_stem: Path) -> Path:
    """An index of the test split's database, built by the CLI (64 px); treat it as read-only."""
    from vprdistill.cli.main import main

    out = tmp_path_factory.mktemp("deploy_index") / "index"
    assert main(["index", "build", "--model", str(tiny_model_stem), "--dataset", str(tiny_dataset),
                 "--split", "test", "--out", str(out), "--image-size", "64", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    return out

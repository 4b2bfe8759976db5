"""data.database / data.queries / data.positions: validation on any two folders, checked when a config loads."""

from __future__ import annotations

import copy

import pytest

from vprdistill.train.config import apply_overrides, config_from_dict

BASE = {"data": {"dataset": "data/synthcity"}, "mining": {"margin": 0.1}}


def load(**data):
    raw = {"data": {**BASE["data"], **data}, "mining": BASE["mining"]}
    return config_from_dict(raw, "test.yaml")


def test_fields_default_to_none_and_load_from_overrides() -> None:
    config = load()
    assert (config.data.database, config.data.queries, config.data.positions) == (None, None, None)
    raw = apply_overrides(
        copy.deepcopy(BASE), ["data.database=val/db", "data.queries=val/q", "data.positions=val/p.csv"]
    )
    config = config_from_dict(raw, "test.yaml")
    assert (config.data.database, config.data.queries, config.data.positions) == ("val/db", "val/q", "val/p.csv")
    assert config.to_dict()["data"]["positions"] == "val/p.csv"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"database": "val/db"}, "test.yaml: data.database is set but data.queries is not"),
        ({"queries": "val/q"}, "test.yaml: data.queries is set but data.database is not"),
        ({"positions": "p.csv"}, "data.positions goes with data.database and data.queries"),
        ({"database": "db", "queries": "q", "input": "seg"}, "data.input: seg needs a dataset root with maps"),
        ({"dataset": "", "database": "db", "queries": "q"}, "the training split comes from data.dataset"),
    ],
)
def test_inconsistent_fields_are_refused(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        load(**data)


def test_place_batches_need_no_dataset_with_two_folders() -> None:
    config = load(dataset="", places="data/gsv", database="db", queries="q")
    assert config.data.database == "db" and not config.data.dataset

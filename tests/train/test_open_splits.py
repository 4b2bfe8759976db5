"""The training loop opens its training and validation splits each from its own file, and logs which."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.data.netvlad_files import make_two_sets, write_images, write_split
from vprdistill.data.readers import DatasetFormatError
from vprdistill.train.config import DataConfig, TrainConfig
from vprdistill.train.loop import open_train_val


def config_for(dataset: Path, **data) -> TrainConfig:
    return TrainConfig(data=DataConfig(dataset=str(dataset), **data))


def test_a_train_file_validates_on_its_val_sibling_and_the_log_names_both(tmp_path, caplog):
    root = make_two_sets(tmp_path / "Pittsburgh")
    train_file, val_file = root / "datasets" / "pitts30k_train.mat", root / "datasets" / "pitts30k_val.mat"
    with caplog.at_level(logging.INFO, logger="vprdistill"):
        train_set, val_set = open_train_val(config_for(train_file))
    assert (train_set.split, train_set.num_queries) == ("train", 2)
    assert (val_set.split, val_set.num_queries) == ("val", 1)  # not the training queries again
    assert f"training split 'train': {train_file} (whichSet 'train')" in caplog.text
    assert f"validation split 'val': {val_file} (whichSet 'val')" in caplog.text
    # Of the one pitts30k validation query (4 m from a database image) none lacks a positive.
    assert "0 without a positive within 25 m: count-as-miss" in caplog.text
    assert "as the training split" not in caplog.text


def test_data_name_chooses_the_set_of_a_root(tmp_path, caplog):
    root = make_two_sets(tmp_path / "Pittsburgh")
    with pytest.raises(DatasetFormatError, match="choose one by dataset name"):
        open_train_val(config_for(root))
    with caplog.at_level(logging.INFO, logger="vprdistill"):
        train_set, val_set = open_train_val(config_for(root, name="pitts250k"))
    assert (train_set.name, train_set.num_queries, val_set.num_queries) == ("pitts250k", 1, 2)
    assert str(root / "datasets" / "pitts250k_train.mat") in caplog.text
    assert str(root / "datasets" / "pitts250k_val.mat") in caplog.text


def test_validating_on_the_training_source_is_warned_about_and_a_wrong_which_set_refused(tmp_path, caplog):
    root = tmp_path / "P"
    write_images(root)
    train_file = write_split(root, "pitts30k_train.mat", "train")
    with caplog.at_level(logging.WARNING, logger="vprdistill"):
        open_train_val(config_for(train_file, val_split="train"))
    assert f"the validation split is read from {train_file}" in caplog.text

    write_split(root, "pitts30k_val.mat", "train")  # a mislabelled copy of the training file
    with pytest.raises(DatasetFormatError, match=r"pitts30k_val.mat: dbStruct.whichSet is 'train' but split 'val'"):
        open_train_val(config_for(train_file))


def test_no_validation_split(tmp_path):
    root = tmp_path / "P"
    write_images(root)
    train_file = write_split(root, "pitts30k_train.mat", "train")
    train_set, val_set = open_train_val(config_for(train_file, val_split=""))
    assert val_set is None and train_set.split == "train"
    with pytest.raises(ValueError, match="data.dataset is empty"):
        open_train_val(TrainConfig())


def test_the_convention_is_a_checked_config_key():
    from vprdistill.train.config import config_from_dict

    raw = {"mining": {"margin": 0.1}, "queries_without_positive": "exclude", "data": {"name": "pitts30k"}}
    config = config_from_dict(raw)
    assert config.queries_without_positive == "exclude" and config.data.name == "pitts30k"
    assert config_from_dict({"mining": {"margin": 0.1}}).queries_without_positive == "count-as-miss"
    with pytest.raises(ValueError, match="queries_without_positive must be one of count-as-miss, exclude, got 'drop'"):
        config_from_dict(dict(raw, queries_without_positive="drop"))

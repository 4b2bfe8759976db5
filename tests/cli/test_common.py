"""The helpers every sub-command shares: one help formatter, the dataset options, the model a --model names."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vprdistill.cli.common import (
    HelpFormatter,
    add_dataset_args,
    load_model_or_preset,
    open_dataset_args,
    run_settings,
)
from vprdistill.cli.main import _all_subparsers, build_parser


def test_every_command_uses_the_one_help_formatter() -> None:
    commands = _all_subparsers(build_parser()._subparsers._group_actions[0])
    formatters = {command.prog: command.formatter_class for command in commands}
    assert {"vprdistill eval", "vprdistill index build", "vprdistill train-segmenter"} <= set(formatters)
    # `train` shows no defaults (its --out help says what None means); every other command shows them.
    assert formatters.pop("vprdistill train") is argparse.RawDescriptionHelpFormatter
    assert set(formatters.values()) == {HelpFormatter}


def _parse(argv: list[str], split_default: str | None, formats: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataset_args(parser, split_default, formats=formats)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "split_default", "formats", "message"),
    [
        (["--database", "db"], "val", False, "--database needs --queries"),
        (["--dataset", "d", "--positions", "p.csv", "--utm-zone", "17T"], None, True,
         "--positions, --utm-zone: with --database only, not with --dataset"),
        (["--database", "db", "--queries", "q", "--split", "test"], "val", False,
         "--split: for --dataset only, not with --database/--queries"),
        (["--database", "db", "--queries", "q", "--reader", "mat", "--image-root", "r"], None, True,
         "--reader, --image-root: for --dataset only"),
    ],
)  # fmt: skip
def test_options_of_the_other_way_are_refused(argv, split_default, formats, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        open_dataset_args(_parse(argv, split_default, formats))


def test_the_default_split_is_not_taken_for_a_given_one(tmp_path: Path) -> None:
    # --split's own default ("val" for `index calibrate`) with two folders is no refused option:
    # the folders are read, and the error is theirs.
    args = _parse(["--database", str(tmp_path / "db"), "--queries", str(tmp_path / "q")], "val")
    with pytest.raises((OSError, ValueError)) as error:
        open_dataset_args(args)
    assert "for --dataset only" not in str(error.value)
    assert "db" in str(error.value)


def test_run_settings_reads_the_data_section_beside_a_checkpoint(tmp_path: Path) -> None:
    assert run_settings(str(tmp_path / "best.safetensors")) == {}
    (tmp_path / "config.yaml").write_text("name: x\ndata:\n  image_size: [48, 64]\n")
    assert run_settings(str(tmp_path / "best.safetensors")) == {"image_size": [48, 64]}
    assert run_settings(str(tmp_path)) == {"image_size": [48, 64]}
    (tmp_path / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match="config.yaml: not valid YAML"):
        run_settings(str(tmp_path))


def test_an_unknown_model_names_the_presets(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"neither an existing run folder or checkpoint nor a preset \(.*resnet"
    ):
        load_model_or_preset(str(tmp_path / "missing"), "cpu")


def test_the_image_size_saved_with_the_model_wins_over_config_yaml() -> None:
    from torch import nn

    from vprdistill.deploy.model_io import pick_image_size

    saved, older = nn.Identity(), nn.Identity()
    saved.config = {"image_size": [48, 64]}
    older.config = {}  # a checkpoint saved before the size travelled with the weights
    settings = {"image_size": [32, 32]}
    assert pick_image_size(None, settings, saved) == (48, 64)
    assert pick_image_size(None, settings, older) == (32, 32)
    assert pick_image_size([40], settings, saved) == (40, 40)
    assert pick_image_size(None, {}, older) == (224, 224)

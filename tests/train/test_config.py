import pytest
import yaml

from vprdistill.train.config import load_config, save_config


def test_packaged_preset_with_overrides(tmp_path):
    config = load_config("baseline/synth-resnet18-gem", ["optim.lr=0.01", "data.image_size=[64, 48]", "epochs=2"])
    assert config.optim.lr == 0.01
    assert config.data.image_size == [64, 48]
    assert config.epochs == 2
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config


def test_base_preset_is_extended(tmp_path):
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"base": "baseline/synth-resnet18-gem", "optim": {"lr": 0.5}}))
    config = load_config(tmp_path / "child.yaml")
    assert config.optim.lr == 0.5
    assert config.optim.name == "adam"  # inherited from the base preset
    assert config.model == "resnet18-gem"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], "optim.lrr"),
        (["epochz=1"], "epochz"),
        (["epochs=0"], "epochs must be >= 1"),
        (["data.input=depth"], "data.input"),
        (["nonsense"], "key=value"),
    ],
)
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("baseline/synth-resnet18-gem", overrides)


def test_missing_preset_is_named():
    with pytest.raises(FileNotFoundError, match="no-such-preset"):
        load_config("no-such-preset")

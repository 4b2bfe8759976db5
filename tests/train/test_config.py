import pytest
import yaml

from vprdistill.train.config import load_config, save_config


def test_packaged_preset_with_overrides(tmp_path):
    config = load_config(
        "baseline/synth-resnet18-gem",
        ["optim.lr=0.01", "data.image_size=[64, 48]", "epochs=2"],
    )
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


def test_mapping_overrides_equal_the_command_line_form():
    teachers = [{"run": "runs/teacher", "input": "rgb", "loss": {"name": "soft_cross_metric", "w_soft": 0.5}}]
    method = {"name": "distill", "w_hard": 1.0, "teachers": teachers}
    from_text = load_config(
        "baseline/synth-resnet18-gem",
        ["optim.lr=0.01", "method=" + yaml.safe_dump(method, default_flow_style=True, width=10_000).strip()],
    )
    from_mappings = load_config("baseline/synth-resnet18-gem", [{"optim.lr": 0.01}, {"method": method}])
    assert from_mappings == from_text
    assert from_mappings.method["teachers"][0]["loss"]["w_soft"] == 0.5
    # The config holds its own copy: changing the caller's mapping afterwards changes nothing.
    teachers[0]["loss"]["w_soft"] = 2.0
    assert from_mappings.method["teachers"][0]["loss"]["w_soft"] == 0.5
    with pytest.raises(ValueError, match=r"override 'optim\.lr\.x': 'lr' is not a section"):
        load_config("baseline/synth-resnet18-gem", [{"optim.lr.x": 1}])


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


def test_the_help_example_lr_1e_4_is_a_number():
    # YAML 1.1 reads 1e-4 (no dot) as a string; `train --help` gives `optim.lr=1e-4` as its example.
    config = load_config(
        "baseline/synth-resnet18-gem",
        ["optim.lr=1e-4", "optim.lr_decay=1", "mining.margin=1E-1"],
    )
    assert type(config.optim.lr) is float and config.optim.lr == 1e-4
    assert type(config.optim.lr_decay) is float and config.optim.lr_decay == 1.0
    assert type(config.mining.margin) is float and config.mining.margin == 0.1


def test_numeric_strings_in_a_yaml_file_are_read_as_numbers(tmp_path):
    (tmp_path / "child.yaml").write_text(
        "base: baseline/synth-resnet18-gem\noptim:\n  lr: 5e-5\n  weight_decay: '1e-3'\nthreshold_m: 2.5e1\n"
    )
    config = load_config(tmp_path / "child.yaml")
    assert (config.optim.lr, config.optim.weight_decay, config.threshold_m) == (
        5e-5,
        1e-3,
        25.0,
    )
    assert all(type(v) is float for v in (config.optim.lr, config.optim.weight_decay, config.threshold_m))


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=abc", r"epochs must be an integer, got 'abc' \(str\)"),
        ("epochs=2.5", r"epochs must be an integer, got 2\.5 \(float\)"),
        ("batch_size=true", r"batch_size must be an integer, got True \(bool\)"),
        ("optim.lr=fast", r"optim\.lr must be a number, got 'fast' \(str\)"),
        ("optim.lr=[0.1]", r"optim\.lr must be a number"),
        ("optim.lr=.inf", r"optim\.lr must be a finite number"),
        ("optim.grad_clip=big", r"optim\.grad_clip must be a number or null"),
        ("progress=maybe", r"progress must be true or false, got 'maybe' \(str\)"),
        ("data.augment=1", r"data\.augment must be true or false"),
        ("data.augment_ops=-1", r"data\.augment_ops must be >= 0"),
        (
            "data.image_size=[64, x]",
            r"data\.image_size\[1\] must be an integer, got 'x'",
        ),
        (
            "data.image_size=64",
            r"data\.image_size must be a list of integers, got 64 \(int\)",
        ),
        ("data.dataset=[a, b]", r"data\.dataset must be a string"),
        ("threads=two", r"threads must be an integer or null"),
        ("model=[resnet18]", r"model must be a string or a mapping"),
        ("method=triplet", r"method must be a mapping"),
        ("optim=fast", r"optim must be a mapping of its keys"),
        ("recall_ns=[5, 10]", r"recall_ns must contain 1"),
        ("optim.lr=-0.1", r"optim\.lr must be >= 0"),
        ("optim.lr_decay=0", r"optim\.lr_decay must be > 0"),
        ("patience=0", r"patience must be >= 1"),
    ],
)
def test_every_value_is_type_checked_naming_the_key_and_the_expected_type(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("baseline/synth-resnet18-gem", [override])


def test_a_checked_config_survives_its_own_round_trip(tmp_path):
    config = load_config("baseline/synth-resnet18-gem", ["optim.lr=1e-4", "threads=2", "data.name=2024"])
    assert config.data.name == "2024"  # an integer given for a string is its text
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config

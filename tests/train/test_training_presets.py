"""Every packaged training preset loads, validates and names a model that resolves; the StructVPR real-data ones in detail."""

from __future__ import annotations

import pytest

from vprdistill.models.registry import resolve_config
from vprdistill.train.config import PACKAGE_CONFIG_DIR, load_config

PRESETS = sorted(
    str(path.relative_to(PACKAGE_CONFIG_DIR).with_suffix(""))
    for path in PACKAGE_CONFIG_DIR.rglob("*.yaml")
    if path.parent != PACKAGE_CONFIG_DIR  # structural_classes.yaml is not a training preset
)
STRUCTVPR_REAL = {
    "structvpr/pitts30k-seg": ("mat", "seg", "structvpr-seg", "triplet"),
    "structvpr/pitts30k-rgb-baseline": ("mat", "rgb", "structvpr-rgb", "triplet"),
    "structvpr/pitts30k-rgb": ("mat", "rgb", "structvpr-rgb", "distill"),
    "structvpr/msls-seg": ("folder", "seg", "structvpr-seg", "triplet"),
    "structvpr/msls-rgb-baseline": ("folder", "rgb", "structvpr-rgb", "triplet"),
    "structvpr/msls-rgb": ("folder", "rgb", "structvpr-rgb", "distill"),
}


def test_the_real_data_structvpr_presets_are_packaged():
    assert set(STRUCTVPR_REAL) <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_states_its_mining_margin_and_resolves(name):
    config = load_config(name, ["data.dataset=/data/somewhere"])
    assert config.mining.margin is not None  # required: it is not taken from the loss
    model = resolve_config(config.model)
    channels = 10 if config.data.input == "seg" else 3
    assert model["input_channels"] == channels, (
        f"{name}: data.input {config.data.input} but the model takes {model['input_channels']}"
    )


@pytest.mark.parametrize("name", sorted(STRUCTVPR_REAL))
def test_structvpr_real_data_presets(name):
    reader, input_kind, model, method = STRUCTVPR_REAL[name]
    config = load_config(name, ["data.dataset=/data/somewhere"])
    assert (config.data.reader, config.data.input, config.model, config.method["name"]) == (
        reader,
        input_kind,
        model,
        method,
    )
    assert config.data.image_size == [240, 320] and config.pretrained
    assert (config.mining.margin, config.mining.violation_rule, config.mining.carry_negatives) == (
        0.1,
        "sqrt_margin",
        False,
    )
    assert (config.data.train_split, config.data.val_split) == ("train", "val")
    assert config.init_from is None
    if method == "distill":
        (teacher,) = config.method["teachers"]
        assert teacher["input"] == "seg" and teacher["loss"]["name"] == "structural"
        assert teacher["loss"]["margin"] == 0.1
        assert teacher["run"] == f"runs/{name.split('/')[1].split('-')[0]}-structvpr-seg"
    # Stage 2 may start from an RGB run: init_from is an ordinary override.
    assert load_config(name, ["data.dataset=/d", "init_from=runs/rgb"]).init_from == "runs/rgb"


# The official-reproduction pair against the official code's choices (docs/METHODS.md §3-4),
# and the recommended pair's labelled differences from it.
OFFICIAL_CHOICES = {
    "mining.violation_rule": "sqrt_margin",
    "mining.margin": 0.1,
    "mining.refresh_every": None,
    "mining.positive_radius_m": 10,
    "mining.negative_radius_m": 25,
    "mining.negative_samples": 1000,
    "mining.num_negatives": 10,
    "threshold_m": 10,
    "epochs": 200,
    "patience": 10,
    "batch_size": 8,
    "queries_without_positive": "exclude",
    "optim.lr": 1e-5,
    "optim.weight_decay": 1e-3,
    "optim.lr_decay": 0.99,
    "data.image_size": [224, 224],
    "data.name": "pitts30k",
}


def _value(config, dotted):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", ["tscm/pitts30k-teacher-official", "tscm/pitts30k-student-official"])
def test_official_tscm_presets_make_every_official_choice(name):
    config = load_config(name, ["data.dataset=/data/pittsburgh"])
    for key, expected in OFFICIAL_CHOICES.items():
        assert _value(config, key) == expected, f"{name}: {key}"
    model = resolve_config(config.model)
    if config.model == {"preset": "tscm-teacher"}:
        assert config.method == {"name": "triplet", "loss": {"name": "triplet", "margin": 0.1}}
        assert model["vit"]["pretrained"] is False and model["vit"]["position_embedding"] is False
        assert model["fusion"]["layer_norm"] is False
        assert {head["token_split"] for head in model["heads"].values()} == {2}
        assert {head["clusters"] for head in model["heads"].values()} == {64}
    else:
        assert config.model == {"preset": "tscm-student"}
        (teacher,) = config.method["teachers"]
        assert teacher["loss"]["name"] == "official" and teacher["loss"]["margin"] == 0.1
        assert config.mining.cache_model == "teacher"
        assert model["token_head"]["subvector_dim"] == 196


def test_recommended_tscm_presets_differ_from_the_official_only_where_labelled():
    recommended = load_config("tscm/pitts30k-teacher", ["data.dataset=/data/pittsburgh"])
    ours = {"mining.violation_rule": "margin", "mining.refresh_every": 1000, "threshold_m": 25, "epochs": 50,
            "queries_without_positive": "count-as-miss"}  # fmt: skip
    for key, expected in OFFICIAL_CHOICES.items():
        assert _value(recommended, key) == ours.get(key, expected), key
    vit = resolve_config(recommended.model)["vit"]
    assert vit["pretrained"] is True and vit["position_embedding"] is True
    assert vit["name"] == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    for name, set_name in [("tscm/pitts250k-teacher", "pitts250k"), ("tscm/pitts250k-student", "pitts250k")]:
        assert load_config(name, ["data.dataset=/data/pittsburgh"]).data.name == set_name
    # The students replace the teacher's model mapping whole (no ViT keys leak into the student).
    for name in ("tscm/pitts30k-student", "tscm/pitts250k-student"):
        assert load_config(name, ["data.dataset=/data/pittsburgh"]).model == "tscm-student"

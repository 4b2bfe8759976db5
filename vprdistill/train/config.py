"""Training configuration: dataclasses loaded from YAML presets with ``key=value`` overrides.

A preset is a YAML file (see ``vprdistill/configs/``); every field below has a
default, so a preset only states what differs. The resolved configuration is
saved as ``config.yaml`` in each run folder, and a run is reproduced by
training from that file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
AMP_MODES = ("off", "bf16", "fp16")
BATCHNORM_MODES = ("batch", "sync", "frozen")


@dataclass
class DataConfig:
    dataset: str = ""  # dataset root (folder format) or NetVLAD .mat file / folder
    reader: str = "auto"  # auto | folder | mat
    train_split: str = "train"
    val_split: str = "val"
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # H, W
    input: str = "rgb"  # rgb | seg: what the trained model consumes
    structural_source: str = "cityscapes"  # label set of the segmentation maps (input: seg)
    augment: bool = False
    num_workers: int = 0
    skip_bad_images: bool = False
    max_train_queries: int | None = None  # use a fixed random subset of training queries (small budgets)
    max_val_queries: int | None = None


@dataclass
class MiningConfig:
    """NetVLAD-style cached hard-negative mining (METHODS.md §3)."""

    positive_radius_m: float = 10.0
    negative_radius_m: float = 25.0
    num_negatives: int = 10
    negative_samples: int = 1000
    margin: float = 0.1
    refresh_every: int | None = None  # queries between cache refreshes; None = once per epoch
    cache_model: str = "student"  # student | teacher (the first teacher of a distillation method)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-5
    weight_decay: float = 1e-3
    momentum: float = 0.9  # sgd only
    lr_decay: float = 0.99  # exponential decay per epoch
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    name: str = "run"
    model: Any = "resnet18-gem"  # a preset name or a model config dict
    pretrained: bool = False
    method: dict = field(default_factory=lambda: {"name": "triplet"})
    data: DataConfig = field(default_factory=DataConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 10
    batch_size: int = 8  # tuples (1 query + 1 positive + negatives) per process: global batch = batch_size × processes
    patience: int = 10  # epochs without validation R@1 improvement before stopping
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_batch_size: int = 32
    threshold_m: float = 25.0
    recall_ns: list[int] = field(default_factory=lambda: [1, 5, 10])
    tensorboard: bool = False
    progress: bool = True
    amp: str = "off"  # off | bf16 | fp16: autocast of the student's forward pass (fp16 on CUDA, with loss scaling)
    compile: bool = False  # torch.compile the student; falls back to eager mode with a warning
    batchnorm: str = "batch"  # batch | sync | frozen: BatchNorm statistics under data parallelism (docs/DISTRIBUTED.md)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "mining": MiningConfig, "optim": OptimConfig}


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build a ``TrainConfig`` from a nested dict; unknown keys are an error naming them."""
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{source}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            section_cls = _SECTIONS[key]
            section_known = {f.name for f in dataclasses.fields(section_cls)}
            value = dict(value or {})
            bad = sorted(set(value) - section_known)
            if bad:
                raise ValueError(
                    f"{source}: unknown key(s) {', '.join(f'{key}.{b}' for b in bad)}; "
                    f"valid keys of '{key}': {', '.join(sorted(section_known))}"
                )
            kwargs[key] = section_cls(**value)
        else:
            kwargs[key] = value
    if kwargs.get("amp") is False:  # YAML reads a bare `off` as false
        kwargs["amp"] = "off"
    config = TrainConfig(**kwargs)
    validate_config(config, source)
    return config


def validate_config(config: TrainConfig, source: str = "config") -> None:
    if config.epochs < 1:
        raise ValueError(f"{source}: epochs must be >= 1, got {config.epochs}")
    if config.batch_size < 1:
        raise ValueError(f"{source}: batch_size must be >= 1, got {config.batch_size}")
    if config.optim.name not in ("adam", "sgd"):
        raise ValueError(f"{source}: optim.name must be adam or sgd, got {config.optim.name!r}")
    if config.data.input not in ("rgb", "seg"):
        raise ValueError(f"{source}: data.input must be rgb or seg, got {config.data.input!r}")
    if config.mining.cache_model not in ("student", "teacher"):
        raise ValueError(f"{source}: mining.cache_model must be student or teacher, got {config.mining.cache_model!r}")
    if config.mining.negative_radius_m < config.mining.positive_radius_m:
        raise ValueError(f"{source}: mining.negative_radius_m must be >= mining.positive_radius_m")
    if len(config.data.image_size) != 2:
        raise ValueError(f"{source}: data.image_size must be [H, W], got {config.data.image_size}")
    if config.amp not in AMP_MODES:
        raise ValueError(f"{source}: amp must be one of {', '.join(AMP_MODES)}, got {config.amp!r}")
    if not isinstance(config.compile, bool):
        raise ValueError(f"{source}: compile must be true or false, got {config.compile!r}")
    if config.batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"{source}: batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {config.batchnorm!r}")
    if not isinstance(config.method, dict) or "name" not in config.method:
        raise ValueError(f"{source}: method must be a mapping with a 'name'")


def resolve_preset_path(path_or_name: str | Path) -> Path:
    """A YAML path, or the name of a packaged preset such as ``tscm/synth-student-tiny``."""
    candidate = Path(path_or_name)
    if candidate.is_file():
        return candidate
    packaged = PACKAGE_CONFIG_DIR / f"{path_or_name}.yaml"
    if packaged.is_file():
        return packaged
    packaged = PACKAGE_CONFIG_DIR / str(path_or_name)
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"config {path_or_name}: no such file, and no packaged preset of that name under {PACKAGE_CONFIG_DIR}"
    )


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value_text = item.split("=", 1)
        value = yaml.safe_load(value_text) if value_text != "" else None
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML preset (path or packaged name), apply overrides and validate."""
    path = resolve_preset_path(path_or_name)
    raw = _read_yaml_with_base(path, seen=())
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=str(path))


def _read_yaml_with_base(path: Path, seen: tuple[Path, ...]) -> dict:
    """Read a preset; a ``base:`` key names another preset (relative path or packaged name) it extends."""
    if path.resolve() in seen:
        raise ValueError(f"config {path}: 'base' chain loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"config {path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"config {path}: the top level must be a mapping")
    base_name = raw.pop("base", None)
    if base_name is None:
        return raw
    relative = path.parent / str(base_name)
    base_path = relative if relative.is_file() else resolve_preset_path(base_name)
    return _deep_merge(_read_yaml_with_base(base_path, seen + (path.resolve(),)), raw)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def save_config(config: TrainConfig, path: str | Path) -> None:
    from vprdistill.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

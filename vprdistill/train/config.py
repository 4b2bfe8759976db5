"""Training configuration: dataclasses loaded from YAML presets with ``key=value`` overrides.

A preset is a YAML file (see ``vprdistill/configs/``); every field below has a
default, so a preset only states what differs. The resolved configuration is
saved as ``config.yaml`` in each run folder, and a run is reproduced by
training from that file.

Every value is type-checked when a config is loaded, against the field's type
below; an error names the key and the type it expects. A number given as a
string (``1e-4``: YAML 1.1 reads exponents without a dot as strings) is read
as a float where a float is expected, and an integer where a string is
expected is read as its text.

On ``--resume`` only the keys of ``RESUME_SAFE_KEYS`` may differ from the
run's ``config.yaml`` (``resume_changes``); any other change is refused before
anything is written (docs/RELIABILITY.md).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from vprdistill.eval.recall import QUERIES_WITHOUT_POSITIVE
from vprdistill.utils.atomic import atomic_write_text

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
AMP_MODES = ("off", "bf16", "fp16")
BATCHNORM_MODES = ("batch", "sync", "frozen")
VIOLATION_RULES = ("margin", "sqrt_margin")  # mining: d_neg < d_pos + margin, or + sqrt(margin)


@dataclass
class DataConfig:
    dataset: str = ""  # dataset root (folder format) or NetVLAD .mat file / folder
    # Which NetVLAD set (pitts30k, pitts250k, ...) of a folder holding several; with a .mat file or a
    # folder-format root it must be that dataset's name. A .mat file gives every split its own
    # <name>_<split>.mat beside it.
    name: str | None = None
    reader: str = "auto"  # auto | folder | mat
    train_split: str = "train"
    val_split: str = "val"
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # H, W
    input: str = "rgb"  # rgb | seg: what the trained model consumes
    structural_source: str = "cityscapes"  # label set of the segmentation maps (input: seg)
    augment: bool = False
    # With augment: RandAugment operations drawn per image on top of the crop and jitter (GSV-Cities,
    # MixVPR and SALAD train with 3); 0: crop and jitter only.
    augment_ops: int = 0
    num_workers: int = 0
    skip_bad_images: bool = False
    max_train_queries: int | None = None  # use a fixed random subset of training queries (small budgets)
    max_val_queries: int | None = None
    # Maps folder of the dataset root (input: seg): "segmentation" (SynthCity's ground truth) or e.g.
    # "segmentation-predicted", written by `vprdistill segment --maps-dir segmentation-predicted`.
    segmentation_dir: str = "segmentation"
    # Place-batched training (GSV-Cities layout: Dataframes/<city>.csv + Images/<city>/): batches of
    # places_per_batch places × views_per_place views with place labels instead of mined tuples;
    # data.dataset then gives the validation split only. None: NetVLAD-style mined tuples.
    places: str | None = None
    cities: list[str] | None = None  # the cities of the place set to train on; None: all
    places_per_batch: int = 16
    views_per_place: int = 4
    place_batches_per_epoch: int | None = None  # None: one pass over the places per epoch
    # Maps folder of the place set (input: seg, seg teachers): "Segmentation" (Segmentation/<city>/) or e.g.
    # "Segmentation-predicted", written by `vprdistill segment PLACES --model SEGMENTER --maps-dir ...`.
    places_segmentation_dir: str = "Segmentation"
    # Validation on any two folders of images instead of data.dataset's data.val_split: database and
    # queries folders, positions from @east@north@ names or from the CSV data.positions (path,lat,lon
    # or path,east,north; docs/DATASETS.md). With data.places, data.dataset may then be left empty.
    database: str | None = None
    queries: str | None = None
    positions: str | None = None


@dataclass
class MiningConfig:
    """NetVLAD-style cached hard-negative mining (METHODS.md §3)."""

    positive_radius_m: float = 10.0
    negative_radius_m: float = 25.0
    num_negatives: int = 10
    negative_samples: int = 1000
    # The mining margin must be stated: it is not the loss's margin (each loss states its own,
    # method...loss.margin, default 0.1), and the two are not tied to each other.
    margin: float | None = None
    # margin: keep negatives with d_neg < d_pos + margin. sqrt_margin: d_neg < d_pos + sqrt(margin),
    # the test of the official TSCM code (from pytorch-NetVlad).
    violation_rule: str = "margin"
    carry_negatives: bool = False  # each query's last kept negatives join its next round's candidates
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
    model: str | dict = "resnet18-gem"  # a preset name or a model config dict
    pretrained: bool = False
    # A run folder (or checkpoint) whose best weights the model starts from, e.g. StructVPR's
    # stage 2 starting the RGB branch from a trained RGB run; the architectures must match.
    init_from: str | None = None
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
    # Validation queries without a database image within threshold_m: count-as-miss (divide by all
    # queries) | exclude (divide by those with a positive, as the official TSCM code does).
    queries_without_positive: str = "count-as-miss"
    tensorboard: bool = False
    progress: bool = True
    amp: str = "off"  # off | bf16 | fp16: autocast of the student's forward pass (fp16 on CUDA, with loss scaling)
    compile: bool = False  # torch.compile the student; falls back to eager mode with a warning
    batchnorm: str = "batch"  # batch | sync | frozen: BatchNorm statistics under data parallelism (docs/DISTRIBUTED.md)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "mining": MiningConfig, "optim": OptimConfig}

# Keys that may differ from the run's config.yaml on --resume: they change how or how long the
# run trains from the next epoch on, not what the checkpoint holds or what its epochs meant.
# optim.* values are applied to the restored optimizer and scheduler (train/loop.py); every
# other key (model, method, data, mining, seed, batch size, validation settings, ...) is refused.
RESUME_SAFE_KEYS = (
    "name",
    "epochs",
    "patience",
    "device",
    "threads",
    "progress",
    "tensorboard",
    "eval_batch_size",
    "amp",
    "compile",
    "batchnorm",
    "data.num_workers",
    "data.dataset",  # the same data moved to another folder; the log records the change
    "optim.lr",
    "optim.lr_decay",
    "optim.weight_decay",
    "optim.momentum",
    "optim.grad_clip",
)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _type_name(hint: Any) -> str:
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    return str(hint)


# Field types whose values are taken as they are or refused (a bool is not an integer here).
_EXACT_TYPES = {
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    dict: lambda value: isinstance(value, dict),
}


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """``value`` checked against the field type ``hint`` (and converted where lossless); ValueError naming ``key``."""

    def refuse(detail: str = "") -> ValueError:
        return ValueError(
            f"{source}: {key} must be {detail or _type_name(hint)}, got {value!r} ({type(value).__name__})"
        )

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key, source)
            except ValueError:
                continue
        raise refuse()
    if hint in _EXACT_TYPES:
        if _EXACT_TYPES[hint](value):
            return value
        raise refuse()
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise refuse()
        try:
            number = float(value.strip() if isinstance(value, str) else value)  # "1e-4": YAML 1.1 reads it as a string
        except ValueError:
            raise refuse() from None
        if not math.isfinite(number):
            raise refuse("a finite number")
        return number
    if hint is str:
        if value is None:
            return ""  # `key=` on the command line, or `key:` in YAML: empty (e.g. data.val_split=)
        if isinstance(value, str) or _EXACT_TYPES[int](value):
            return str(value)  # an integer as its text: e.g. a folder named 2024
        raise refuse()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise refuse()
        return [_coerce(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value)]
    return value


def _check_fields(cls: type, raw: dict, prefix: str, source: str) -> dict:
    """``raw``'s values checked against the fields of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {key: _coerce(value, hints[key], prefix + key, source) for key, value in raw.items()}


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build a ``TrainConfig`` from a nested dict; unknown keys and values of the wrong type are errors naming them."""
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"{source}: unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )
    if raw.get("amp") is False:  # YAML reads a bare `off` as false
        raw["amp"] = "off"
    kwargs = _check_fields(TrainConfig, {k: v for k, v in raw.items() if k not in _SECTIONS}, "", source)
    for key, section_cls in _SECTIONS.items():
        if key not in raw:
            continue
        value = raw[key]
        section_known = {f.name for f in dataclasses.fields(section_cls)}
        if value is not None and not isinstance(value, dict):
            raise ValueError(
                f"{source}: {key} must be a mapping of its keys (set one as {key}.KEY=VALUE), "
                f"got {value!r} ({type(value).__name__})"
            )
        value = dict(value or {})
        bad = sorted(set(value) - section_known)
        if bad:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(f'{key}.{b}' for b in bad)}; "
                f"valid keys of '{key}': {', '.join(sorted(section_known))}"
            )
        kwargs[key] = section_cls(**_check_fields(section_cls, value, f"{key}.", source))
    config = TrainConfig(**kwargs)
    validate_config(config, source)
    return config


# The lower bounds of numeric keys (dotted: section.key), checked by validate_config.
_AT_LEAST = {
    1: "epochs batch_size patience eval_batch_size threads mining.num_negatives mining.negative_samples".split(),
    0: "data.num_workers data.augment_ops optim.lr optim.weight_decay optim.momentum threshold_m".split(),
}


def validate_config(config: TrainConfig, source: str = "config") -> None:
    """Value checks beyond the types (ranges, choices, combinations); ValueError naming the key."""
    for low, keys in _AT_LEAST.items():
        for key in keys:
            value = functools.reduce(getattr, key.split("."), config)
            if value is not None and value < low:  # threads: null (every core) has no bound
                raise ValueError(f"{source}: {key} must be >= {low}, got {value}")
    if config.optim.lr_decay <= 0:
        raise ValueError(
            f"{source}: optim.lr_decay must be > 0 (the factor of the learning rate per epoch), "
            f"got {config.optim.lr_decay}"
        )
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise ValueError(f"{source}: optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    if 1 not in config.recall_ns or any(n < 1 for n in config.recall_ns):
        raise ValueError(
            f"{source}: recall_ns must contain 1 (validation R@1 chooses the best checkpoint) and "
            f"only values >= 1, got {config.recall_ns}"
        )
    if any(side < 1 for side in config.data.image_size):
        raise ValueError(f"{source}: data.image_size must be positive [H, W], got {config.data.image_size}")
    choices = {
        "optim.name": ("adam", "sgd"),
        "queries_without_positive": QUERIES_WITHOUT_POSITIVE,
        "data.input": ("rgb", "seg"),
        "mining.cache_model": ("student", "teacher"),
        "amp": AMP_MODES,
        "batchnorm": BATCHNORM_MODES,
    }
    for key, allowed in choices.items():
        value = functools.reduce(getattr, key.split("."), config)
        if value not in allowed:
            raise ValueError(f"{source}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    _validate_validation_folders(config.data, source)
    if config.data.places:
        for key in ("places_per_batch", "views_per_place"):
            value = getattr(config.data, key)
            if value < 2:
                raise ValueError(
                    f"{source}: data.{key} must be >= 2 (a place batch needs positives and negatives), got {value}"
                )
        if config.data.place_batches_per_epoch is not None and config.data.place_batches_per_epoch < 1:
            raise ValueError(
                f"{source}: data.place_batches_per_epoch must be >= 1 or null, got {config.data.place_batches_per_epoch}"
            )
        if config.mining.cache_model != "student":
            raise ValueError(
                f"{source}: mining.cache_model: teacher mines tuples; place batches (data.places) mine in the batch"
            )
    else:
        # Tuple mining reads the mining settings; place batches mine within the batch instead.
        _validate_mining(config.mining, source)
    if config.mining.negative_radius_m < config.mining.positive_radius_m:
        raise ValueError(f"{source}: mining.negative_radius_m must be >= mining.positive_radius_m")
    if len(config.data.image_size) != 2:
        raise ValueError(f"{source}: data.image_size must be [H, W], got {config.data.image_size}")
    if not isinstance(config.compile, bool):
        raise ValueError(  # noqa: TRY004 (a config error, reported like the others)
            f"{source}: compile must be true or false, got {config.compile!r}"
        )
    if not isinstance(config.method, dict) or "name" not in config.method:
        raise ValueError(f"{source}: method must be a mapping with a 'name'")
    if isinstance(config.model, dict) and not config.model:
        raise ValueError(f"{source}: model must be a preset name or a non-empty model config mapping")


def _validate_validation_folders(data: DataConfig, source: str) -> None:
    """data.database, data.queries and data.positions: both folders or neither, positions only with them."""
    if bool(data.database) != bool(data.queries):
        given, missing = ("data.database", "data.queries") if data.database else ("data.queries", "data.database")
        raise ValueError(f"{source}: {given} is set but {missing} is not; give both folders or neither")
    if data.positions and not data.database:
        raise ValueError(f"{source}: data.positions goes with data.database and data.queries")
    if data.database and data.input == "seg":
        raise ValueError(
            f"{source}: data.database/data.queries give photos without segmentation maps; "
            "data.input: seg needs a dataset root with maps (data.dataset)"
        )
    if not data.dataset and not data.places and data.database:
        raise ValueError(
            f"{source}: data.database/data.queries give the validation split only; the training split "
            "comes from data.dataset (or place batches from data.places)"
        )


def _validate_mining(mining: MiningConfig, source: str) -> None:
    margin = mining.margin
    if margin is None:
        raise ValueError(
            f"{source}: mining.margin is not set; state the mining margin (e.g. mining.margin=0.1). "
            "It is not taken from the loss: the loss margin is set in the method's loss spec"
        )
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise ValueError(f"{source}: mining.margin must be a number >= 0, got {margin!r}")
    if mining.violation_rule not in VIOLATION_RULES:
        raise ValueError(
            f"{source}: mining.violation_rule must be one of {', '.join(VIOLATION_RULES)}, "
            f"got {mining.violation_rule!r}"
        )
    if not isinstance(mining.carry_negatives, bool):
        raise ValueError(  # noqa: TRY004 (a config error, reported like the others)
            f"{source}: mining.carry_negatives must be true or false, got {mining.carry_negatives!r}"
        )


def resolve_preset_path(path_or_name: str | Path) -> Path:
    """A YAML path, or the name of a packaged preset such as ``tscm/synth-student-tiny``."""
    for candidate in (
        Path(path_or_name),
        PACKAGE_CONFIG_DIR / f"{path_or_name}.yaml",
        PACKAGE_CONFIG_DIR / str(path_or_name),
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"config {path_or_name}: no such file, and no packaged preset of that name under {PACKAGE_CONFIG_DIR}"
    )


Override = str | Mapping[str, Any]


def apply_overrides(raw: dict, overrides: Sequence[Override]) -> dict:
    """Apply overrides to a nested dict, in place, and return it.

    An override is the command line's ``"a.b.c=value"`` (the value parsed as YAML) or,
    from Python, a mapping ``{"a.b.c": value}`` whose values are taken as they are
    (``{"method": {"name": "distill", "teachers": [...]}}``): no YAML text to write.
    Either sets the key (a dotted path into the sections) to the value, replacing what was there.
    """
    for item in overrides:
        if isinstance(item, Mapping):
            for key, value in item.items():
                _set_key(raw, str(key), copy.deepcopy(value), f"override {key!r}")
            continue
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value_text = item.split("=", 1)
        _set_key(raw, key, yaml.safe_load(value_text) if value_text != "" else None, f"override {item!r}")
    return raw


def _set_key(raw: dict, key: str, value: Any, where: str) -> None:
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ValueError(f"{where}: '{part}' is not a section")  # noqa: TRY004
        node = child
    node[parts[-1]] = value


def load_config(path_or_name: str | Path, overrides: Sequence[Override] | None = None) -> TrainConfig:
    """Load a YAML preset (path or packaged name), apply overrides (``key=value`` strings or mappings) and validate."""
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
        raise ValueError(f"config {path}: the top level must be a mapping")  # noqa: TRY004
    base_name = raw.pop("base", None)
    if base_name is None:
        return raw
    relative = path.parent / str(base_name)
    base_path = relative if relative.is_file() else resolve_preset_path(base_name)
    return _deep_merge(_read_yaml_with_base(base_path, seen + (path.resolve(),)), raw)


def _deep_merge(base: dict, update: dict) -> dict:
    # Mappings on both sides merge key by key; any other value of ``update`` replaces the base's.
    both = [key for key, value in update.items() if isinstance(value, dict) and isinstance(base.get(key), dict)]
    return {**base, **update, **{key: _deep_merge(base[key], update[key]) for key in both}}


def flatten_dotted(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``optim.lr``, ``method.loss.margin``); other values are leaves."""
    if not isinstance(node, dict) or (prefix and not node):
        return {prefix.rstrip("."): node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten_dotted(value, f"{prefix}{key}."))
    return flat


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value if value else "''"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def resume_changes(run_config: str | Path, config: TrainConfig) -> list[tuple[str, Any, Any]]:
    """The keys in which ``config`` differs from a run's ``config.yaml``, checked before resuming it.

    Only keys of ``RESUME_SAFE_KEYS`` may differ; the others would make the
    checkpoint mean something else (another model, input size, method, data or
    mining), so a change of any of them is refused, naming every one. Keys the
    run's file lacks (added to the config after the run started) are not compared.

    Returns:
        ``(key, value in the run, value now)`` for every allowed change, dotted keys sorted.

    Raises:
        FileNotFoundError: the run has no ``config.yaml``.
        ValueError: a key outside ``RESUME_SAFE_KEYS`` differs (the message lists each,
            with both values, and the keys that may change).
    """
    run_config = Path(run_config)
    if not run_config.is_file():
        raise FileNotFoundError(f"cannot resume: {run_config} does not exist (is {run_config.parent} a run folder?)")
    raw = yaml.safe_load(run_config.read_text()) or {}
    try:
        saved = flatten_dotted(config_from_dict(raw, source=str(run_config)).to_dict())
    except ValueError:
        saved = flatten_dotted(raw)  # written by another version: compare the keys it has, as written
    now = flatten_dotted(config.to_dict())
    changed = [key for key in saved.keys() & now.keys() if saved[key] != now[key]]
    # On one side only: a field added or removed since the run started (not compared), or an
    # option of the model or method mapping given on one side only (a change).
    changed += [key for key in saved.keys() ^ now.keys() if key.split(".", 1)[0] in ("model", "method")]
    changed.sort()
    refused = [key for key in changed if key not in RESUME_SAFE_KEYS]
    if refused:
        details = "; ".join(
            f"{key}: {_show(saved.get(key, '(not set)'))} in the run, {_show(now.get(key, '(not set)'))} now"
            for key in sorted(refused)
        )
        raise ValueError(
            f"cannot resume {run_config.parent} with this config: {details}. These keys define what the run trains "
            f"and cannot change on resume; nothing was written. Keys that can change on resume: "
            f"{', '.join(RESUME_SAFE_KEYS)}. To train with the new values, start a new run "
            f"(init_from={run_config.parent} starts it from this run's best weights)."
        )
    return [(key, saved[key], now[key]) for key in sorted(changed)]


def describe_change(key: str, before: Any, after: Any) -> str:
    """``key: before -> after``, values written as in a config."""
    return f"{key}: {_show(before)} -> {_show(after)}"


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))

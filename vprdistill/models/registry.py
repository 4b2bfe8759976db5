"""Presets and ``build_model``: a model is a config dict of named parts, not a subclass.

A config names its ``architecture`` (``generic``, ``tscm-teacher``,
``tscm-student``, ``thumbnail``) and that architecture's parts: backbone specs (any timm
name, or ``torchvision:<arch>``), aggregator specs (:data:`AGGREGATORS`) and a
fusion spec (:data:`FUSIONS`). A preset is such a dict with a name; a config
may start from one and override it key by key, nested dicts merged::

    build_model("tscm-student-tiny")
    build_model({"preset": "tscm-student-tiny", "descriptor_dim": 256})
    build_model("resnet18-gem", backbone={"truncate_after": "layer3"})
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from vprdistill.models.aggregators import AGGREGATORS
from vprdistill.models.fusion import FUSIONS
from vprdistill.models.generic import build_generic_net
from vprdistill.models.options import call_with_options
from vprdistill.models.place_model import PlaceModel
from vprdistill.models.thumbnail import build_thumbnail_net
from vprdistill.models.tscm import build_tscm_student_net, build_tscm_teacher_net

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "generic": build_generic_net,
    "tscm-teacher": build_tscm_teacher_net,
    "tscm-student": build_tscm_student_net,
    "thumbnail": build_thumbnail_net,
}

# ResNets carry torchvision's ImageNet weights (timm tag ``tv_in1k``), as the reference
# implementations of TSCM, NetVLAD and CosPlace start from them.
_RESNET50_L3 = {"name": "resnet50.tv_in1k", "truncate_after": "layer3"}
_RESNET18_L3 = {"name": "resnet18.tv_in1k", "truncate_after": "layer3"}
_GEM = {"name": "gem", "p": 3.0}
# timm's default weights of ViT-B/16, named with their tag: ImageNet-21k, fine-tuned on 1k; they
# expect mean = std = 0.5, which the backbone's input re-normalisation provides.
_VIT_B16 = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
# The official TSCM heads and fusion: 64 clusters, no BatchNorm at all; no LayerNorm, and no
# dropout on the residual branches (only on the attention weights and inside the FFN).
_OFFICIAL_LOUPE = {"name": "netvlad-loupe", "clusters": 64, "add_batch_norm": False, "output_batch_norm": False}
_OFFICIAL_FUSION = {
    "name": "cross-attention",
    "heads": 4,
    "ffn_dim": 1024,
    "dropout": 0.1,
    "layer_norm": False,
    "residual_dropout": 0.0,
}


def _tscm_heads(loupe: Mapping[str, Any], cnn: int, fused: int, vit: int, **extra: Any) -> dict[str, dict[str, Any]]:
    """The three Loupe head specs of a TSCM teacher: ``loupe`` with each head's ``output_dim`` (and ``extra``)."""
    return {key: {**loupe, "output_dim": dim, **extra} for key, dim in (("cnn", cnn), ("fused", fused), ("vit", vit))}


def _loupe(clusters: int) -> dict[str, Any]:
    return {"name": "netvlad-loupe", "clusters": clusters}


def _gem_net(backbone: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"architecture": "generic", "backbone": backbone, "aggregator": _GEM, **extra}


def _tscm_teacher(
    cnn: dict[str, Any], vit: dict[str, Any], token_dim: int, fusion: dict[str, Any], heads: dict[str, Any], dim: int
) -> dict[str, Any]:
    return {"architecture": "tscm-teacher", "cnn": cnn, "vit": vit, "pool": _GEM, "token_dim": token_dim,
            "fusion": fusion, "heads": heads, "descriptor_dim": dim}  # fmt: skip


def _tscm_student(cnn: dict[str, Any], patch_dim: int, token_head: dict[str, Any], proj_dim: int, dim: int) -> dict:
    return {"architecture": "tscm-student", "cnn": cnn, "pool": _GEM, "patch_size": 16, "patch_dim": patch_dim,
            "token_head": token_head, "token_proj_dim": proj_dim, "descriptor_dim": dim}  # fmt: skip


#: Number of structural classes the StructVPR seg-branch sees as one-hot channels by default.
DEFAULT_STRUCTURAL_CLASSES = 10

PRESETS: dict[str, dict[str, Any]] = {
    # The untrained floor (thumbnail.py): the image shrunk to 16×16, centred per channel; no parameters.
    "thumbnail-16": {"architecture": "thumbnail", "size": 16, "interpolation": "area", "centre": "channel"},
    # Baselines, CosPlace-style: GeM then a linear layer.
    "resnet18-gem": _gem_net({"name": "resnet18.tv_in1k"}, projection=True, descriptor_dim=512),
    "resnet50-gem": _gem_net({"name": "resnet50.tv_in1k"}, projection=True, descriptor_dim=2048),
    # NetVLAD on ResNet-18 cut after layer3 (256 × 64 clusters = 16384-d).
    "resnet18-netvlad": {
        "architecture": "generic",
        "backbone": _RESNET18_L3,
        "aggregator": {"name": "netvlad", "clusters": 64},
    },
    # TSCM (METHODS.md §4) as the official code builds it: see tscm.py. The ViT is randomly
    # initialised and without positional embedding or class token, as officially.
    "tscm-teacher": _tscm_teacher(
        _RESNET50_L3,
        {"name": "vit_base_patch16_224", "pretrained": False, "position_embedding": False, "dynamic_img_size": True},
        token_dim=512,
        fusion=_OFFICIAL_FUSION,
        heads=_tscm_heads(_OFFICIAL_LOUPE, 256, 512, 256, token_split=2),
        dim=2048,
    ),
    # 196 x 768 patch-token values re-cut into 768 vectors of 196: needs 224x224 images.
    "tscm-student": _tscm_student(
        _RESNET50_L3, 768, {**_OFFICIAL_LOUPE, "output_dim": 256, "subvector_dim": 196}, 1024, 2048
    ),
    # Our variants of the pair: Loupe heads on whole tokens with BatchNorm, LayerNorm fusion
    # blocks, an ImageNet-pretrained ViT with its positional embedding.
    "tscm-teacher-fulltoken": _tscm_teacher(
        _RESNET50_L3,
        {"name": _VIT_B16, "dynamic_img_size": True},
        token_dim=512,
        fusion={"name": "cross-attention", "heads": 4, "ffn_dim": 1024, "dropout": 0.1},
        heads=_tscm_heads(_loupe(32), 256, 512, 256),
        dim=2048,
    ),
    "tscm-student-fulltoken": _tscm_student(_RESNET50_L3, 768, {**_loupe(16), "output_dim": 256}, 1024, 2048),
    # Tiny TSCM pair for CPU runs: same structure, ResNet-18 (to layer3, 256 channels) and a
    # 2-block ViT-Tiny (192 wide) that takes any size divisible by 16; both give 512-d descriptors.
    "tscm-teacher-tiny": _tscm_teacher(
        _RESNET18_L3,
        {
            "name": "vit_tiny_patch16_224",
            "depth": 2,
            "img_size": 128,
            "dynamic_img_size": True,
            "pretrained_strict": False,
        },
        token_dim=128,
        fusion={"name": "cross-attention", "heads": 4, "ffn_dim": 256, "dropout": 0.1},
        heads=_tscm_heads(_loupe(8), 64, 128, 64),
        dim=512,
    ),
    "tscm-student-tiny": _tscm_student(_RESNET18_L3, 192, {**_loupe(8), "output_dim": 64}, 256, 512),
    # StructVPR (METHODS.md §5, our specification): RGB branch and seg-branch share the
    # architecture; the seg-branch takes one-hot maps of C structural classes.
    "structvpr-rgb": _gem_net(_RESNET50_L3),
    "structvpr-seg": _gem_net(_RESNET50_L3, input_channels=DEFAULT_STRUCTURAL_CLASSES),
    "structvpr-rgb-tiny": _gem_net(_RESNET18_L3),
    "structvpr-seg-tiny": _gem_net(_RESNET18_L3, input_channels=DEFAULT_STRUCTURAL_CLASSES),
}


#: One line per preset, for listings; "official code" marks the TSCM structure of the official
#: implementation, "our choice" the project's own variants.
PRESET_DESCRIPTIONS: dict[str, str] = {
    "thumbnail-16": "baseline without parameters: 16x16 area-averaged colour thumbnail, per-channel centred -> 768",
    "resnet18-gem": "ResNet-18 + GeM + linear -> 512 (CosPlace-style baseline)",
    "resnet50-gem": "ResNet-50 + GeM + linear -> 2048 (CosPlace-style baseline)",
    "resnet18-netvlad": "ResNet-18 to layer3 + NetVLAD, 64 clusters -> 16384",
    "tscm-teacher": "TSCM teacher, official code: 64-cluster Loupe heads on half tokens, no BN/LN, random ViT "
    "without positional embedding (125.0M)",
    "tscm-student": "TSCM student, official code: 64-cluster Loupe on the re-viewed 196x768 patch tokens, "
    "no BN, 224x224 input (12.70M)",
    "tscm-teacher-fulltoken": "TSCM teacher, our choice: 32-cluster Loupe heads on whole tokens with BN, "
    "LayerNorm fusion, pretrained ViT with positional embedding",
    "tscm-student-fulltoken": "TSCM student, our choice: 16-cluster Loupe on whole patch tokens with BN, any input size",
    "tscm-teacher-tiny": "tiny TSCM teacher for CPU runs (ResNet-18, 2-block ViT-Tiny), full-token heads -> 512",
    "tscm-student-tiny": "tiny TSCM student for CPU runs, full-token head -> 512",
    "structvpr-rgb": "StructVPR RGB branch: ResNet-50 to layer3 + GeM -> 1024",
    "structvpr-seg": "StructVPR seg-branch: one-hot maps of 10 classes, ResNet-50 to layer3 + GeM -> 1024",
    "structvpr-rgb-tiny": "tiny StructVPR RGB branch: ResNet-18 to layer3 + GeM -> 256",
    "structvpr-seg-tiny": "tiny StructVPR seg-branch: ResNet-18 to layer3 + GeM -> 256",
}


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(PRESETS)


def describe_preset(name: str) -> str:
    """The preset's one-line description (empty when it has none)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid: {', '.join(list_presets())}")
    return PRESET_DESCRIPTIONS.get(name, "")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied: nested dicts merge key by key, anything else is replaced.

    A nested dict naming another ``name`` than the base's (a part of another kind) replaces it whole.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        # A part of another kind (an aggregator {name: mixvpr} over the preset's {name: gem, p: 3})
        # replaces the preset's part: the old part's options mean nothing to the new one.
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        if both and value.get("name", merged[key].get("name")) == merged[key].get("name"):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_config(name_or_config: str | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The full config a preset name or a (partial) config dict stands for.

    A dict with ``"preset"`` starts from that preset; its other keys and then
    ``overrides`` are merged on top. The result has no ``preset`` key: it is
    self-contained, so a saved model rebuilds even if presets change.
    """
    if isinstance(name_or_config, str):
        config: dict[str, Any] = {"preset": name_or_config}
    elif isinstance(name_or_config, Mapping):
        config = dict(name_or_config)
    else:
        raise ValueError(f"a model is a preset name or a config dict, got {type(name_or_config).__name__}")  # noqa: TRY004
    config = deep_merge(config, overrides)
    preset = config.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; valid: {', '.join(list_presets())}")
        config = deep_merge(PRESETS[preset], config)
        config.setdefault("name", preset)
    if "architecture" not in config:
        raise ValueError(
            f"model config needs 'preset' (one of {', '.join(list_presets())}) or 'architecture' "
            f"(one of {', '.join(sorted(ARCHITECTURES))}); got keys {sorted(config)}"
        )
    config.setdefault("input_channels", 3)
    try:
        json.dumps(config)
    except TypeError as error:
        raise ValueError(f"model config must be JSON-serialisable: {error}") from error
    return config


# Keys a model config may carry that describe how it is used rather than how it is built:
# ``image_size`` ([H, W] it was trained at) lets eval, index and export default to it.
METADATA_KEYS = ("image_size",)
# Keys PlaceModel applies around the architecture body (see PlaceModel): not architecture options.
WRAPPER_KEYS = ("input_standardization",)


def build_model(name_or_config: str | Mapping[str, Any], pretrained: bool = False, **overrides: Any) -> PlaceModel:
    """Build a :class:`PlaceModel` from a preset name or config dict.

    Args:
        name_or_config: a preset name (:func:`list_presets`) or a config dict (may hold ``"preset"``).
        pretrained: load ImageNet weights into the backbones (from the timm cache, or from each
            backbone spec's ``weights_path``); other layers start from their random initialisation.
        overrides: config keys merged on top (nested dicts key by key).

    Raises:
        ValueError: unknown preset, architecture, part or option (the message lists the valid ones).
    """
    config = resolve_config(name_or_config, **overrides)
    architecture = config["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    options = {
        key: value
        for key, value in config.items()
        if key not in ("name", "architecture", *METADATA_KEYS, *WRAPPER_KEYS)
    }
    what = f"model {config.get('name', architecture)!r} (architecture {architecture!r})"
    net = call_with_options(ARCHITECTURES[architecture], options, what, pretrained=pretrained)
    config["descriptor_dim"] = int(net.descriptor_dim)
    return PlaceModel(net, config)


__all__ = [
    "AGGREGATORS",
    "ARCHITECTURES",
    "DEFAULT_STRUCTURAL_CLASSES",
    "FUSIONS",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "build_model",
    "deep_merge",
    "describe_preset",
    "list_presets",
    "resolve_config",
]

"""Backbones by name: timm CNNs (feature maps), timm ViTs (patch tokens) and torchvision CNNs.

``build_backbone("resnet50", truncate_after="layer3")`` is ResNet-50 cut after
its third stage (1024 channels, stride 16). A name ``torchvision:<arch>`` takes
the architecture from torchvision instead of timm. Every backbone reports its
``out_channels``, ``stride`` and ``output`` (``"map"`` → ``(B, C, h, w)``,
``"tokens"`` → ``(B, N, C)``), so the parts after it can be sized from it.

Weights: ``pretrained=True`` loads ImageNet weights through timm (or
torchvision) from the local cache, downloading them when a network is there;
``weights_path`` loads them from a local ``.safetensors`` file of the full
model instead. With ``in_channels != 3`` the first convolution takes that many
channels; pretrained RGB kernels are tiled over the new channels and rescaled
(``timm.models.adapt_input_conv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer

TORCHVISION_PREFIX = "torchvision:"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but could be neither found locally nor downloaded."""


class Backbone(nn.Module):
    """A trunk with a known output: ``out_channels``, ``stride`` and ``output`` (``map`` or ``tokens``)."""

    out_channels: int
    stride: int
    output: str

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` → ``(B, out_channels, H / stride, W / stride)``, whatever ``output`` is."""
        raise NotImplementedError


class CnnBackbone(Backbone):
    """A convolutional trunk whose forward is ``(B, C_in, H, W)`` → ``(B, out_channels, h, w)``."""

    output = "map"

    def __init__(self, trunk: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x)
        # timm feature extractors return a list, torchvision ones a dict of the requested nodes.
        if isinstance(features, (list, tuple)):
            return features[-1]
        if isinstance(features, dict):
            return next(iter(features.values()))
        return features

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


class VitBackbone(Backbone):
    """A timm Vision Transformer: ``(B, C_in, H, W)`` → patch tokens ``(B, N, out_channels)``.

    The tokens carry the positional embedding and the final norm
    (``forward_features``); the class and register tokens are dropped.
    """

    output = "tokens"

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.out_channels = int(vit.embed_dim)
        self.stride = int(vit.patch_embed.patch_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)
        return tokens[:, self.vit.num_prefix_tokens :]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self(x)
        height, width = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.out_channels, height, width)


def build_backbone(
    name: str,
    pretrained: bool = False,
    truncate_after: str | None = None,
    in_channels: int = 3,
    weights_path: str | Path | None = None,
    **model_kwargs: Any,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: a timm model name (``resnet18``, ``resnet50.tv_in1k``, ``vit_base_patch16_224`` …)
            or ``torchvision:<arch>`` (``torchvision:resnet50``).
        pretrained: load ImageNet weights (from ``weights_path`` when given, else through timm/torchvision).
        truncate_after: name of the last stage kept (``layer3`` for a ResNet); ``None`` keeps the whole trunk.
        in_channels: input channels; ``!= 3`` adapts the first convolution.
        weights_path: a local ``.safetensors`` file of the full model's weights, used when ``pretrained``.
        model_kwargs: passed to the timm constructor (e.g. ``depth=2, embed_dim=192`` for a small ViT).

    Returns:
        a :class:`Backbone`; CNNs give ``(B, C, h, w)``, ViTs give ``(B, N, C)``.
    """
    if weights_path is not None and pretrained and not Path(weights_path).is_file():
        raise FileNotFoundError(f"backbone {name}: weights_path {weights_path} does not exist")
    if name.startswith(TORCHVISION_PREFIX):
        if model_kwargs:
            raise ValueError(f"backbone {name}: unknown option(s) {sorted(model_kwargs)} for a torchvision backbone")
        return _build_torchvision(name[len(TORCHVISION_PREFIX) :], pretrained, truncate_after, in_channels, weights_path)
    return _build_timm(name, pretrained, truncate_after, in_channels, weights_path, model_kwargs)


def _timm_create(name: str, pretrained: bool, weights_path: str | Path | None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with clear errors for unknown names, bad options and missing weights."""
    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {name!r}: not a timm model name (see timm.list_models()); "
            f"use '{TORCHVISION_PREFIX}<arch>' for torchvision architectures"
        )
    if pretrained and weights_path is not None:
        # timm's own loader then reads the local file, with the same filtering it applies to hub weights
        # (classifier dropped, first convolution adapted to in_chans, positional embedding resampled).
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_path)}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as error:
        raise ValueError(f"backbone {name}: bad option for timm ({error})") from error
    except OSError as error:
        if weights_path is not None:
            raise
        raise PretrainedWeightsError(_missing_weights_message(name, error)) from error


def _missing_weights_message(name: str, error: BaseException) -> str:
    return (
        f"could not find or download pretrained weights for backbone {name!r} ({type(error).__name__}: {error}). "
        "They are not in the local cache and could not be fetched. Either give a local copy with "
        "weights_path=<file.safetensors> (the backbone config key 'weights_path'), or build the model "
        "without them (pretrained: false). Set HF_HUB_OFFLINE=1 to skip network attempts."
    )


def _build_timm(
    name: str,
    pretrained: bool,
    truncate_after: str | None,
    in_channels: int,
    weights_path: str | Path | None,
    model_kwargs: dict[str, Any],
) -> Backbone:
    # A throw-away instance on the meta device (no memory, no init cost) says what kind of
    # model this is and which stages it has, before the real one is built.
    with torch.device("meta"):
        probe = _timm_create(name, False, None, num_classes=0, in_chans=in_channels, **model_kwargs)
    if isinstance(probe, VisionTransformer):
        if truncate_after is not None:
            raise ValueError(f"backbone {name}: truncate_after is for CNN stages; set 'depth' to shorten a ViT")
        vit = _timm_create(name, pretrained, weights_path, num_classes=0, in_chans=in_channels, **model_kwargs)
        return VitBackbone(vit)
    stage_names = [info["module"] for info in getattr(probe, "feature_info", [])]
    if not stage_names:
        raise ValueError(f"backbone {name}: timm gives no feature stages for this model")
    if truncate_after is None:
        index = len(stage_names) - 1
    elif truncate_after in stage_names:
        index = stage_names.index(truncate_after)
    else:
        raise ValueError(f"backbone {name}: unknown stage {truncate_after!r} for truncate_after; valid: {stage_names}")
    trunk = _timm_create(
        name, pretrained, weights_path, features_only=True, out_indices=(index,), in_chans=in_channels, **model_kwargs
    )
    return CnnBackbone(trunk, trunk.feature_info.channels()[-1], trunk.feature_info.reduction()[-1])


def _build_torchvision(
    arch: str,
    pretrained: bool,
    truncate_after: str | None,
    in_channels: int,
    weights_path: str | Path | None,
) -> Backbone:
    from torchvision.models.feature_extraction import create_feature_extractor

    if arch not in torchvision.models.list_models(module=torchvision.models):
        valid = torchvision.models.list_models(module=torchvision.models)
        raise ValueError(f"unknown torchvision backbone {arch!r}; valid: {valid}")
    use_hub_weights = pretrained and weights_path is None
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT" if use_hub_weights else None)
    except OSError as error:
        raise PretrainedWeightsError(_missing_weights_message(f"{TORCHVISION_PREFIX}{arch}", error)) from error
    if pretrained and weights_path is not None:
        _load_torchvision_weights(model, arch, Path(weights_path))
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)

    stage = truncate_after or _default_torchvision_stage(model, arch)
    top_level = [child for child, _ in model.named_children()]
    if stage not in top_level:
        raise ValueError(
            f"backbone {TORCHVISION_PREFIX}{arch}: unknown stage {stage!r} for truncate_after; valid: {top_level}"
        )
    trunk = create_feature_extractor(model, return_nodes={stage: "features"})
    out_channels, stride = _probe_map(trunk, in_channels)
    return CnnBackbone(trunk, out_channels, stride)


def _default_torchvision_stage(model: nn.Module, arch: str) -> str:
    for candidate in ("layer4", "features"):
        if hasattr(model, candidate):
            return candidate
    raise ValueError(f"backbone {TORCHVISION_PREFIX}{arch}: give truncate_after (the last stage to keep)")


def _load_torchvision_weights(model: nn.Module, arch: str, path: Path) -> None:
    """Load a local safetensors file into a torchvision model; only the classifier may be absent."""
    state = load_file(str(path))
    expected = model.state_dict()
    classifier_prefixes = ("fc.", "classifier.", "heads.")
    missing = [key for key in expected if key not in state and not key.startswith(classifier_prefixes)]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        key = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise ValueError(f"{path}: weights do not fit {TORCHVISION_PREFIX}{arch}: {kind} key {key!r}")
    model.load_state_dict(state, strict=False)


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first 3-channel convolution by one taking ``in_channels``, tiling its RGB kernel."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                conv = nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                )
                with torch.no_grad():
                    conv.weight.copy_(adapt_input_conv(in_channels, child.weight.detach()))
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, child_name, conv)
                return
    raise ValueError("backbone has no 3-channel first convolution to adapt to in_channels")


def _probe_map(trunk: nn.Module, in_channels: int) -> tuple[int, int]:
    """Channels and stride of a trunk's output, from one forward of a small dummy image."""
    size = 64
    parameter = next(trunk.parameters())
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        out = trunk(torch.zeros(1, in_channels, size, size, device=parameter.device, dtype=parameter.dtype))
    trunk.train(was_training)
    out = next(iter(out.values())) if isinstance(out, dict) else out
    return int(out.shape[1]), size // int(out.shape[-1])

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

Input statistics: the data pipeline normalises every RGB image with the
ImageNet mean and std (:data:`INPUT_MEAN`, :data:`INPUT_STD`), whatever the
model. A backbone whose weights expect other statistics (timm's
``pretrained_cfg``: ``vit_base_patch16_224.augreg2_in21k_ft_in1k`` wants
mean = std = 0.5) re-normalises its own input exactly, per channel,
``x_b = (x·std_in + mean_in − mean_b) / std_b``, so one image tensor feeds
branches with different statistics; for ImageNet-statistics weights (the
``tv_in1k`` ResNets) this is the identity and is skipped. ``mean``/``std``
override the weights' values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD

TORCHVISION_PREFIX = "torchvision:"

#: Per-channel statistics the data pipeline normalises RGB images with (ImageNet's).
INPUT_MEAN: tuple[float, float, float] = tuple(IMAGENET_MEAN)
INPUT_STD: tuple[float, float, float] = tuple(IMAGENET_STD)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but could be neither found locally nor downloaded."""


class InputRenormalisation(nn.Module):
    """Per-channel affine map from one input normalisation to another: ``(B, C, H, W)`` → same shape.

    An image normalised as ``x = (raw − mean_in) / std_in`` becomes
    ``(raw − mean) / std = x·(std_in / std) + (mean_in − mean) / std``.
    The coefficients are plain floats, not buffers: the map follows from the
    config, so it adds nothing to a checkpoint.

    Args:
        mean, std: the statistics the backbone's weights expect (C values each).
        input_mean, input_std: the statistics the input was normalised with (the pipeline's).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        input_mean: Sequence[float] = INPUT_MEAN,
        input_std: Sequence[float] = INPUT_STD,
    ) -> None:
        super().__init__()
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.scale = tuple(s_in / s for s_in, s in zip(input_std, self.std, strict=True))
        self.shift = tuple((m_in - m) / s for m_in, m, s in zip(input_mean, self.mean, self.std, strict=True))

    @property
    def is_identity(self) -> bool:
        """True when the input already has the wanted statistics (nothing is computed then)."""
        return all(v == 1.0 for v in self.scale) and all(v == 0.0 for v in self.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        shape = (1, len(self.scale), 1, 1)
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device).reshape(shape)
        shift = torch.tensor(self.shift, dtype=x.dtype, device=x.device).reshape(shape)
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class Backbone(nn.Module):
    """A trunk with a known output: ``out_channels``, ``stride`` and ``output`` (``map`` or ``tokens``).

    ``input_norm`` (an :class:`InputRenormalisation` or ``None``) is applied to
    the input before the trunk, in ``forward`` and ``feature_map`` alike.
    """

    out_channels: int
    stride: int
    output: str

    def __init__(self, input_norm: InputRenormalisation | None = None) -> None:
        super().__init__()
        self.input_norm = input_norm

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The input as this trunk's weights expect it: ``(B, C_in, H, W)`` → same shape."""
        return x if self.input_norm is None else self.input_norm(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` → ``(B, out_channels, H / stride, W / stride)``, whatever ``output`` is."""
        raise NotImplementedError


class CnnBackbone(Backbone):
    """A convolutional trunk whose forward is ``(B, C_in, H, W)`` → ``(B, out_channels, h, w)``."""

    output = "map"

    def __init__(
        self, trunk: nn.Module, out_channels: int, stride: int, input_norm: InputRenormalisation | None = None
    ) -> None:
        super().__init__(input_norm)
        self.trunk = trunk
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk(self.normalise(x))
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

    With ``position_embedding`` (the default) the tokens are timm's
    ``forward_features``: positional embedding, class (and register) tokens,
    the blocks and the final norm; the prefix tokens are dropped from the
    output. Without it, the blocks see the patch embeddings alone: the
    positional embedding and the class/register tokens are removed from the
    model (their parameters are gone), which is what keeping only a ViT's
    child modules amounts to, as the official TSCM code does.
    """

    output = "tokens"

    def __init__(
        self, vit: VisionTransformer, position_embedding: bool = True, input_norm: InputRenormalisation | None = None
    ) -> None:
        super().__init__(input_norm)
        self.vit = vit
        self.out_channels = int(vit.embed_dim)
        self.stride = int(vit.patch_embed.patch_size[0])
        self.position_embedding = bool(position_embedding)
        if not self.position_embedding:
            # Parameters, not children: set to None they leave parameters() and the state dict.
            for name in ("pos_embed", "cls_token", "reg_token"):
                if getattr(vit, name, None) is not None:
                    setattr(vit, name, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        if self.position_embedding:
            tokens = self.vit.forward_features(x)
            return tokens[:, self.vit.num_prefix_tokens :]
        tokens = self.vit.patch_embed(x)
        if tokens.ndim == 4:  # (B, h, w, C) when built with dynamic_img_size
            tokens = tokens.flatten(1, 2)
        tokens = self.vit.norm_pre(self.vit.patch_drop(self.vit.pos_drop(tokens)))
        return self.vit.norm(self.vit.blocks(tokens))

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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    position_embedding: bool | None = None,
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
        mean, std: the per-channel statistics the trunk expects its input in (3 values each); the
            input, normalised with :data:`INPUT_MEAN`/:data:`INPUT_STD`, is re-normalised to them.
            ``None``: the named weights' own (timm ``pretrained_cfg``; ImageNet for torchvision),
            whether or not they are loaded, so the same config always computes the same function.
            RGB only: with ``in_channels != 3`` the input is passed as is.
        position_embedding: ViTs only; ``False`` removes the positional embedding and the
            class/register tokens (see :class:`VitBackbone`). ``None`` keeps them.
        model_kwargs: passed to the timm constructor (e.g. ``depth=2, embed_dim=192`` for a small ViT).

    Returns:
        a :class:`Backbone`; CNNs give ``(B, C, h, w)``, ViTs give ``(B, N, C)``.
    """
    if weights_path is not None and pretrained and not Path(weights_path).is_file():
        raise FileNotFoundError(f"backbone {name}: weights_path {weights_path} does not exist")
    if name.startswith(TORCHVISION_PREFIX):
        if model_kwargs:
            raise ValueError(f"backbone {name}: unknown option(s) {sorted(model_kwargs)} for a torchvision backbone")
        if position_embedding is not None:
            raise ValueError(f"backbone {name}: position_embedding is an option of ViT backbones")
        backbone = _build_torchvision(
            name[len(TORCHVISION_PREFIX) :], pretrained, truncate_after, in_channels, weights_path
        )
        # Every torchvision classification weight set is trained on ImageNet-normalised images.
        weights_stats: tuple[Sequence[float], Sequence[float]] = (INPUT_MEAN, INPUT_STD)
    else:
        backbone, weights_stats = _build_timm(
            name, pretrained, truncate_after, in_channels, weights_path, position_embedding, model_kwargs
        )
    backbone.input_norm = _input_renormalisation(name, in_channels, mean, std, weights_stats)
    return backbone


def _input_renormalisation(
    name: str,
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    weights_stats: tuple[Sequence[float], Sequence[float]],
) -> InputRenormalisation | None:
    """The re-normalisation of a backbone's input, checked; ``None`` when there is nothing to do."""
    if in_channels != 3:
        # One-hot maps and other non-RGB inputs are not ImageNet-normalised by the pipeline.
        if mean is not None or std is not None:
            raise ValueError(f"backbone {name}: mean/std re-normalise RGB input; this one takes {in_channels} channels")
        return None
    stats = {}
    for field, given, default in (("mean", mean, weights_stats[0]), ("std", std, weights_stats[1])):
        values = default if given is None else given
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
            raise ValueError(f"backbone {name}: '{field}' must be 3 numbers (R, G, B), got {values!r}")
        try:
            stats[field] = tuple(float(v) for v in values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"backbone {name}: '{field}' must be 3 numbers (R, G, B), got {values!r}") from error
    if not all(v > 0 for v in stats["std"]):
        raise ValueError(f"backbone {name}: 'std' must be positive, got {list(stats['std'])}")
    norm = InputRenormalisation(stats["mean"], stats["std"])
    return None if norm.is_identity else norm


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
    position_embedding: bool | None,
    model_kwargs: dict[str, Any],
) -> tuple[Backbone, tuple[Sequence[float], Sequence[float]]]:
    """The backbone and the (mean, std) its named weights expect."""
    # A throw-away instance on the meta device (no memory, no init cost) says what kind of
    # model this is, which stages it has and which input statistics its weights expect.
    with torch.device("meta"):
        probe = _timm_create(name, False, None, num_classes=0, in_chans=in_channels, **model_kwargs)
    config = getattr(probe, "pretrained_cfg", None) or {}
    weights_stats = (config.get("mean", INPUT_MEAN), config.get("std", INPUT_STD))
    if isinstance(probe, VisionTransformer):
        if truncate_after is not None:
            raise ValueError(f"backbone {name}: truncate_after is for CNN stages; set 'depth' to shorten a ViT")
        vit = _timm_create(name, pretrained, weights_path, num_classes=0, in_chans=in_channels, **model_kwargs)
        return VitBackbone(vit, position_embedding=position_embedding is not False), weights_stats
    if position_embedding is not None:
        raise ValueError(f"backbone {name}: position_embedding is an option of ViT backbones")
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
    return CnnBackbone(trunk, trunk.feature_info.channels()[-1], trunk.feature_info.reduction()[-1]), weights_stats


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
        # A local safetensors file of the whole model: only the classifier may be absent.
        try:
            result = model.load_state_dict(load_file(str(weights_path)), strict=False)
        except RuntimeError as error:  # a tensor of the wrong shape
            raise ValueError(f"{weights_path}: weights do not fit {TORCHVISION_PREFIX}{arch}: {error}") from error
        missing = [key for key in result.missing_keys if not key.startswith(("fc.", "classifier.", "heads."))]
        if missing or result.unexpected_keys:
            kind, key = ("missing", missing[0]) if missing else ("unexpected", result.unexpected_keys[0])
            raise ValueError(f"{weights_path}: weights do not fit {TORCHVISION_PREFIX}{arch}: {kind} key {key!r}")
    if in_channels != 3:
        # The first 3-channel convolution takes in_channels, its RGB kernel tiled (in place).
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
        if first is None:
            raise ValueError("backbone has no 3-channel first convolution to adapt to in_channels")
        first.weight = nn.Parameter(adapt_input_conv(in_channels, first.weight.detach()))
        first.in_channels = in_channels

    stage = truncate_after or next((name for name in ("layer4", "features") if hasattr(model, name)), None)
    if stage is None:
        raise ValueError(f"backbone {TORCHVISION_PREFIX}{arch}: give truncate_after (the last stage to keep)")
    top_level = [child for child, _ in model.named_children()]
    if stage not in top_level:
        raise ValueError(
            f"backbone {TORCHVISION_PREFIX}{arch}: unknown stage {stage!r} for truncate_after; valid: {top_level}"
        )
    trunk = create_feature_extractor(model, return_nodes={stage: "features"})
    out_channels, stride = _probe_map(trunk, in_channels)
    return CnnBackbone(trunk, out_channels, stride)


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

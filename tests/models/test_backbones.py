"""Backbones by name: truncation, output sizes, local weight files and the missing-weights message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vprdistill.models.backbones import INPUT_MEAN, INPUT_STD, build_backbone
from vprdistill.models.parts import backbone_from_spec


def test_resnet50_cut_after_layer3_gives_1024x14x14_at_224() -> None:
    backbone = build_backbone("resnet50", truncate_after="layer3").eval()
    assert (backbone.out_channels, backbone.stride, backbone.output) == (1024, 16, "map")
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 14, 14)
    assert sum(p.numel() for p in backbone.parameters()) == 8_543_296  # stem + layer1..3, no layer4


def test_vit_gives_patch_tokens_with_positional_embedding() -> None:
    backbone = build_backbone("vit_tiny_patch16_224", depth=1, img_size=64, dynamic_img_size=True).eval()
    assert (backbone.out_channels, backbone.stride, backbone.output) == (192, 16, "tokens")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        tokens = backbone(x)
        assert tokens.shape == (2, 4 * 6, 192)  # class token dropped
        assert backbone.feature_map(x).shape == (2, 192, 4, 6)
        before = tokens.clone()
        backbone.vit.pos_embed.add_(1.0)
        assert not torch.allclose(backbone(x), before)  # the positional embedding takes part


def test_unknown_names_and_stages_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="layer1.*layer4"):
        build_backbone("resnet18", truncate_after="layer9")
    with pytest.raises(ValueError, match="not a timm model"):
        build_backbone("resnet18x")
    with pytest.raises(ValueError, match="resnet18"):
        build_backbone("torchvision:resnet18x")


def test_weights_path_loads_a_local_safetensors_file(tmp_path: Path) -> None:
    source = timm.create_model("resnet18")  # randomly initialised, saved locally
    weights = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(weights))
    backbone = build_backbone("resnet18", pretrained=True, truncate_after="layer3", weights_path=weights)
    assert torch.equal(backbone.trunk.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(backbone.trunk.bn1.running_var, source.bn1.running_var)
    fresh = build_backbone("resnet18", truncate_after="layer3", weights_path=weights)  # pretrained=False: not loaded
    assert not torch.equal(fresh.trunk.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_more_input_channels_tile_the_rgb_kernel(tmp_path: Path) -> None:
    source = timm.create_model("resnet18")
    weights = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(weights))
    backbone = build_backbone(
        "resnet18", pretrained=True, truncate_after="layer3", in_channels=10, weights_path=weights
    )
    kernel = backbone.trunk.conv1.weight
    assert kernel.shape == (64, 10, 7, 7)
    assert torch.allclose(kernel[:, 3:6], kernel[:, 0:3])  # RGB repeated over the new channels
    assert torch.allclose(kernel, adapt_input_conv(10, source.conv1.weight))
    assert backbone(torch.zeros(1, 10, 32, 32)).shape == (1, 256, 2, 2)


def test_torchvision_backbone_with_local_weights(tmp_path: Path) -> None:
    source = torchvision.models.resnet18()
    weights = tmp_path / "tv_resnet18.safetensors"
    save_file(source.state_dict(), str(weights))
    backbone = build_backbone("torchvision:resnet18", pretrained=True, truncate_after="layer3", weights_path=weights)
    assert (backbone.out_channels, backbone.stride) == (256, 16)
    source.eval(), backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.layer3(source.layer2(source.layer1(source.maxpool(source.relu(source.bn1(source.conv1(x)))))))
        assert torch.allclose(backbone(x), expected, atol=1e-5)


def test_local_weights_of_the_wrong_shape_are_refused_naming_the_file(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)  # resnet18's first kernel is 7x7
    weights = tmp_path / "wrong_shape.safetensors"
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"wrong_shape.safetensors: weights do not fit (?s:.*)conv1.weight"):
        build_backbone("torchvision:resnet18", pretrained=True, weights_path=weights)


def test_pretrained_without_cached_weights_explains_what_to_do(tmp_path: Path) -> None:
    """No network and an empty cache: the error says the weights are missing and how to provide them."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    code = (
        "from vprdistill.models import build_model, PretrainedWeightsError\n"
        "try:\n"
        "    build_model('tscm-student-tiny', pretrained=True)\n"
        "except PretrainedWeightsError as error:\n"
        "    print('ERROR', error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert message.startswith("ERROR could not find or download pretrained weights for backbone 'resnet18.tv_in1k'")
    assert "weights_path" in message and "pretrained: false" in message


def _first_layer_input(backbone: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` (the trunk's first) receives when ``backbone`` is fed ``x``."""
    seen = []
    handle = layer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        backbone(x)
    handle.remove()
    return seen[0]


def _imagenet_normalised(raw: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=raw.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=raw.dtype).view(1, 3, 1, 1)
    return (raw - mean) / std


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_vit_with_half_statistics_receives_its_own_normalisation(dtype: torch.dtype, atol: float) -> None:
    backbone = build_backbone("vit_tiny_patch16_224", depth=1, img_size=32).to(dtype).eval()
    assert backbone.input_norm.mean == (0.5, 0.5, 0.5) and backbone.input_norm.std == (0.5, 0.5, 0.5)
    raw = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    received = _first_layer_input(backbone, backbone.vit.patch_embed, _imagenet_normalised(raw).to(dtype))
    assert received.dtype == dtype
    assert torch.allclose(received.double(), (raw - 0.5) / 0.5, atol=atol, rtol=0)


def test_imagenet_statistics_backbones_get_the_input_unchanged() -> None:
    backbone = build_backbone("resnet18.tv_in1k", truncate_after="layer3").eval()
    assert backbone.input_norm is None  # the identity is not even computed
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_first_layer_input(backbone, backbone.trunk.conv1, x), x)
    tv = build_backbone("torchvision:resnet18", truncate_after="layer3")
    assert tv.input_norm is None


def test_mean_and_std_can_be_given_explicitly() -> None:
    backbone = build_backbone("resnet18.tv_in1k", truncate_after="layer3", mean=[0.5, 0.4, 0.3], std=(0.25, 0.2, 0.1))
    raw = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    received = _first_layer_input(backbone.double().eval(), backbone.trunk.conv1, _imagenet_normalised(raw))
    mean = torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.2, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    expected = (raw - mean) / std
    assert torch.allclose(received, expected, atol=1e-12, rtol=0)


def test_statistics_follow_the_spec_not_whether_weights_are_loaded(tmp_path: Path) -> None:
    source = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, num_classes=0)
    weights = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(weights))
    spec = {"name": "vit_tiny_patch16_224", "depth": 1, "img_size": 32, "weights_path": str(weights)}
    built = [backbone_from_spec(spec, 3, pretrained) for pretrained in (False, True)]
    assert [b.input_norm.std for b in built] == [(0.5, 0.5, 0.5)] * 2
    # A branch that never has weights takes the pipeline's statistics: no re-normalisation.
    assert backbone_from_spec({**spec, "pretrained": False}, 3, True).input_norm is None
    overridden = backbone_from_spec({**spec, "pretrained": False, "mean": [0.5, 0.5, 0.5]}, 3, True)
    assert overridden.input_norm.mean == (0.5, 0.5, 0.5) and overridden.input_norm.std == INPUT_STD
    assert INPUT_MEAN == tuple(IMAGENET_MEAN)


def test_bad_statistics_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="'mean' must be 3 numbers"):
        build_backbone("resnet18", truncate_after="layer3", mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="'std' must be positive"):
        build_backbone("resnet18", truncate_after="layer3", std=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="RGB input; this one takes 10 channels"):
        build_backbone("resnet18", truncate_after="layer3", in_channels=10, mean=[0.5] * 10)
    assert build_backbone("resnet18", truncate_after="layer3", in_channels=10).input_norm is None
    with pytest.raises(ValueError, match="position_embedding is an option of ViT backbones"):
        build_backbone("resnet18", position_embedding=False)
    with pytest.raises(ValueError, match="'pretrained' must be true or false"):
        backbone_from_spec({"name": "resnet18", "pretrained": "no"}, 3, False)


def _shuffle_patches(x: torch.Tensor, order: torch.Tensor, patch: int) -> torch.Tensor:
    """The image with its ``patch``×``patch`` blocks in ``order`` (row-major block indices)."""
    batch, channels, height, width = x.shape
    rows, cols = height // patch, width // patch
    blocks = (
        x.reshape(batch, channels, rows, patch, cols, patch)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(batch, -1, channels, patch, patch)
    )
    blocks = blocks[:, order].reshape(batch, rows, cols, channels, patch, patch)
    return blocks.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def test_vit_without_position_embedding_sees_patches_only() -> None:
    torch.manual_seed(0)
    full = build_backbone("vit_tiny_patch16_224", depth=2, img_size=64, dynamic_img_size=True).eval()
    bare = build_backbone(
        "vit_tiny_patch16_224", depth=2, img_size=64, dynamic_img_size=True, position_embedding=False
    ).eval()
    assert bare.vit.pos_embed is None and bare.vit.cls_token is None
    state = bare.state_dict()
    assert not any(key.endswith(("pos_embed", "cls_token")) for key in state)
    assert _count(full) - _count(bare) == full.vit.pos_embed.numel() + full.vit.cls_token.numel() == 17 * 192 + 192
    x = torch.randn(2, 3, 64, 96)
    order = torch.randperm(4 * 6)
    with torch.no_grad():
        tokens = bare(x)
        assert tokens.shape == (2, 24, 192) and bare.feature_map(x).shape == (2, 192, 4, 6)
        # Without positions or a class token the blocks are permutation-equivariant over patches.
        assert torch.allclose(bare(_shuffle_patches(x, order, 16)), tokens[:, order], atol=1e-5)
        full_tokens = full(x)
        assert not torch.allclose(full(_shuffle_patches(x, order, 16)), full_tokens[:, order], atol=1e-3)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

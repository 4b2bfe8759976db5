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

from vprdistill.models.backbones import build_backbone


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
    backbone = build_backbone("resnet18", pretrained=True, truncate_after="layer3", in_channels=10, weights_path=weights)
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
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert message.startswith("ERROR could not find or download pretrained weights for backbone 'resnet18.tv_in1k'")
    assert "weights_path" in message and "pretrained: false" in message

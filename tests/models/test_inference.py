"""The inference copy: BatchNorm folded and channels-last, same descriptors, original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vprdistill.models.inference import (
    as_model_input,
    channels_last_during,
    fold_batchnorm,
    inference_copy,
    run_in_chunks,
    uses_channels_last,
)
from vprdistill.models.registry import build_model


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine terms, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)
    return model.eval()


def test_fold_matches_the_conv_bn_formula() -> None:
    """A folded conv equals conv → (x - mean) / sqrt(var + eps) · γ + β written out."""
    block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    _trained_statistics(block)
    conv, bn = block[0], block[1]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        raw = conv(x)
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1)
        expected = torch.relu((raw - bn.running_mean.view(1, -1, 1, 1)) * scale + bn.bias.view(1, -1, 1, 1))
        assert fold_batchnorm(block) == 1
        assert isinstance(block[1], nn.Identity)
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_refuses_a_training_model() -> None:
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train())


def test_inference_copy_of_a_resnet_student() -> None:
    model = _trained_statistics(build_model("resnet18-gem"))
    fast = inference_copy(model)
    batch_norms_left = sum(type(m) is nn.BatchNorm2d for m in fast.modules())
    batch_norms_before = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    assert batch_norms_before > 10 and batch_norms_left == 0
    assert uses_channels_last(fast) and not uses_channels_last(model)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(images)
        found = fast(as_model_input(images, fast))
    assert found.shape == expected.shape
    assert (found - expected).abs().max().item() < 1e-4
    # The original keeps its BatchNorm layers and layout (it may go on training).
    assert sum(type(m) is nn.BatchNorm2d for m in model.modules()) == batch_norms_before


def test_channels_last_during_runs_the_model_itself_and_restores_its_layout() -> None:
    model = _trained_statistics(build_model("resnet18-gem"))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.inference_mode():
        expected = model(images)
        with channels_last_during(model) as runner:
            assert runner is model and uses_channels_last(model)
            found = runner(as_model_input(images, runner))
    assert calls == [2, 2], "the caller's own hooks fire"
    assert not uses_channels_last(model)
    assert all(p.is_contiguous() for p in model.parameters()), "safetensors stores contiguous tensors only"
    assert (found - expected).abs().max().item() < 1e-5


def test_run_in_chunks_gives_the_whole_batch_result() -> None:
    model = _trained_statistics(build_model("resnet18-gem"))
    fast = inference_copy(model)
    images = torch.randn(11, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    calls = []
    fast.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.inference_mode():
        whole = fast(as_model_input(images, fast))
        chunked = run_in_chunks(fast, images, chunk=4)
    assert calls == [11, 4, 4, 3]
    assert chunked.shape == whole.shape and (chunked - whole).abs().max().item() < 1e-5

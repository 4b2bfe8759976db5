"""Mixed precision (``amp``) and ``torch.compile`` (``compile``) options of the training step."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tests.train.helpers import tiny_config
from vprdistill.train.amp_compile import StudentForward, autocast, check_amp, has_native_bf16
from vprdistill.train.config import load_config
from vprdistill.train.loop import train


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16)
    )


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("this backend cannot compile anything")


@pytest.mark.parametrize(
    "override, field", [("amp=fp32", "amp"), ("batchnorm=group", "batchnorm"), ("compile=maybe", "compile")]
)
def test_bad_amp_compile_batchnorm_values_name_the_field(override, field):
    with pytest.raises(ValueError, match=field):
        load_config("baseline/synth-resnet18-gem", [override])


def test_a_bare_yaml_off_means_amp_off():
    assert load_config("baseline/synth-resnet18-gem", ["amp=off"]).amp == "off"
    assert load_config("baseline/synth-resnet18-gem", ["amp=bf16"]).amp == "bf16"


def test_fp16_is_refused_on_the_cpu_with_the_alternative_named():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device.*bf16"):
        check_amp("fp16", torch.device("cpu"))
    check_amp("bf16", torch.device("cpu"))


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_native_bf16_on_the_cpu_follows_its_avx512_bf16_and_amx_units(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert has_native_bf16(torch.device("cpu")) is expected


def test_native_bf16_is_false_on_a_cuda_device_when_cuda_is_absent_and_on_other_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert has_native_bf16(torch.device("cuda")) is False
    assert has_native_bf16(torch.device("meta")) is False


def test_bf16_autocast_computes_in_bfloat16_and_keeps_float32_weights_and_gradients():
    net, images = _net(), torch.randn(4, 3, 32, 32)
    reference = net(images)
    with autocast("bf16", torch.device("cpu")):
        output = net(images)
    assert output.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits.
    assert torch.allclose(output.float(), reference, rtol=5e-2, atol=5e-2)
    output.float().pow(2).mean().backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())


def test_a_compiler_failure_falls_back_to_eager_mode_with_a_warning(caplog):
    net, images = _net().eval(), torch.randn(2, 3, 16, 16)
    forward = StudentForward(net, compile=True, backend=_failing_backend)
    with caplog.at_level(logging.WARNING, logger="vprdistill"):
        output = forward(images)
    assert not forward.is_compiled
    assert torch.equal(output, net(images))
    assert "torch.compile failed" in caplog.text


def test_an_error_of_the_model_itself_propagates_and_keeps_compilation_on():
    forward = StudentForward(_net(), compile=True, backend=_failing_backend)
    with pytest.raises(RuntimeError, match="to have 3 channels"):
        forward(torch.randn(2, 5, 16, 16))
    assert forward.is_compiled


def test_training_with_bf16_autocast_runs_and_saves_float32_weights(synth_tiny, tmp_path):
    result = train(
        tiny_config(synth_tiny, amp="bf16", **{"data.max_train_queries": 16, "data.max_val_queries": 16}),
        tmp_path / "bf16",
    )
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["steps"] >= 1 and 0 < metrics[0]["loss"]["total"] < 1
    weights = load_file(str(result.run_dir / "last.safetensors"))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())

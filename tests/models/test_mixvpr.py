"""MixVPR aggregator: shapes, any input size, and that it keeps the spatial layout GeM pools away."""

import pytest
import torch

from vprdistill.models import build_model
from vprdistill.models.aggregators import build_aggregator


def test_output_size_and_any_map_size():
    mix = build_aggregator({"name": "mixvpr", "grid": 4, "depth": 2, "out_channels": 32, "out_rows": 3}, 64)
    assert mix.output_dim == 96
    for h, w in ((4, 4), (6, 9), (8, 8)):
        assert mix(torch.randn(2, 64, h, w)).shape == (2, 96)


def test_mixvpr_tells_apart_two_layouts_of_the_same_features_that_gem_cannot():
    torch.manual_seed(0)
    x = torch.rand(1, 16, 4, 4)
    swapped = torch.flip(x, dims=[3])  # the same local features, mirrored left-right
    mix = build_aggregator({"name": "mixvpr", "grid": 4, "depth": 1, "out_channels": 8, "out_rows": 2}, 16)
    gem = build_aggregator({"name": "gem"}, 16)
    assert torch.allclose(gem(x), gem(swapped), atol=1e-6)
    assert not torch.allclose(mix(x), mix(swapped), atol=1e-3)


def test_a_preset_with_a_mixvpr_head_builds_and_bad_options_are_named():
    model = build_model(
        {"preset": "structvpr-rgb-tiny", "aggregator": {"name": "mixvpr", "out_channels": 16, "out_rows": 2}}
    )
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 32)
    with pytest.raises(ValueError, match="grid"):
        build_aggregator({"name": "mixvpr", "grid": 0}, 8)

"""Per-image input standardisation: invariant to a per-channel gain and offset, saved in the model config."""

import pytest
import torch

from vprdistill.models import build_model
from vprdistill.models.place_model import standardize_per_image


def test_standardized_images_have_zero_mean_and_unit_deviation_per_channel():
    x = torch.rand(2, 3, 8, 8) * 5 + 2
    y = standardize_per_image(x)
    assert torch.allclose(y.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3)), torch.ones(2, 3), atol=1e-4)


def test_a_model_with_per_image_standardization_ignores_a_colour_cast():
    torch.manual_seed(0)
    model = build_model({"preset": "structvpr-rgb-tiny", "input_standardization": "per-image"}).eval()
    plain = build_model("structvpr-rgb-tiny").eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    cast = x * torch.tensor([0.3, 0.5, 0.9]).view(1, 3, 1, 1) + torch.tensor([-1.0, 0.2, 0.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model(cast), atol=1e-4)
        assert not torch.allclose(plain(x), plain(cast), atol=1e-2)  # the same weights without it do change
    assert model.config["input_standardization"] == "per-image"


def test_unknown_standardization_and_segmentation_input_are_refused():
    with pytest.raises(ValueError, match="input_standardization"):
        build_model({"preset": "structvpr-rgb-tiny", "input_standardization": "global"})
    with pytest.raises(ValueError, match="RGB input"):
        build_model({"preset": "structvpr-seg-tiny", "input_standardization": "per-image"})

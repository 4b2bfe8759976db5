"""The thumbnail baseline against a float64 NumPy re-implementation, its options, mean buffer and CLI use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprdistill.cli.main import main
from vprdistill.models import build_model, load_model, model_fingerprint, save_model


def _reference(images: np.ndarray, side: int, centre: str) -> np.ndarray:
    """Block means of (B, C, H, W) images (H, W multiples of ``side``), centred, flattened, L2-normalised."""
    batch, channels, height, width = images.shape
    blocks = images.reshape(batch, channels, side, height // side, side, width // side).mean(axis=(3, 5))
    if centre == "channel":
        blocks = blocks - blocks.mean(axis=(2, 3), keepdims=True)
    elif centre == "image":
        blocks = blocks - blocks.mean(axis=(1, 2, 3), keepdims=True)
    flat = blocks.reshape(batch, -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@pytest.mark.parametrize("centre", ["channel", "image", "none"])
def test_area_thumbnail_matches_block_means(centre: str) -> None:
    images = np.random.default_rng(0).normal(size=(3, 3, 64, 48))
    model = build_model("thumbnail-16", centre=centre).eval()
    with torch.no_grad():
        descriptors = model(torch.from_numpy(images).float()).double().numpy()
    assert descriptors.shape == (3, 3 * 16 * 16)
    np.testing.assert_allclose(descriptors, _reference(images, 16, centre), atol=2e-6)


def test_bilinear_thumbnail_matches_pillow_antialiased_resize() -> None:
    images = np.random.default_rng(1).uniform(0, 1, size=(2, 3, 80, 80)).astype(np.float32)
    model = build_model("thumbnail-16", interpolation="bilinear", centre="none").eval()
    with torch.no_grad():
        thumbs = model.net.thumbnails(torch.from_numpy(images)).double().numpy()
    # Pillow's bilinear reduction widens its filter with the scale: the antialiased resize torch follows.
    expected = np.stack(
        [
            np.stack(
                [
                    np.asarray(Image.fromarray(channel, mode="F").resize((16, 16), Image.Resampling.BILINEAR))
                    for channel in image
                ]
            )
            for image in images
        ]
    )
    np.testing.assert_allclose(thumbs, expected, atol=1e-4)


def test_channel_centring_ignores_a_colour_cast_and_none_does_not() -> None:
    image = torch.randn(1, 3, 32, 32)
    cast = image + torch.tensor([0.7, -0.3, 0.2]).view(1, 3, 1, 1)
    centred, plain = build_model("thumbnail-16").eval(), build_model("thumbnail-16", centre="none").eval()
    with torch.no_grad():
        assert torch.allclose(centred(image), centred(cast), atol=1e-5)
        assert not torch.allclose(plain(image), plain(cast), atol=1e-2)


def test_no_parameters_any_channel_count_and_local_features() -> None:
    model = build_model("thumbnail-16")
    assert sum(p.numel() for p in model.parameters()) == 0
    assert model.descriptor_dim == 768 and model.config["descriptor_dim"] == 768
    seg = build_model("thumbnail-16", input_channels=10, size=8)
    assert seg.descriptor_dim == 10 * 8 * 8
    x = torch.rand(2, 10, 40, 40)
    assert seg(x).shape == (2, 640)
    assert seg.local_features(x).shape == (2, 10, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 10, H, W\)"):
        seg(torch.rand(2, 3, 40, 40))
    with torch.device("meta"):
        assert build_model("thumbnail-16").descriptor_dim == 768


def test_fit_mean_centres_the_fitted_images_and_is_saved(tmp_path: Path) -> None:
    images = torch.randn(6, 3, 32, 32) + 0.5
    model = build_model("thumbnail-16", centre="none").eval()
    before = model_fingerprint(model)
    mean = model.net.fit_mean(images)
    expected = images.double().reshape(6, 3, 16, 2, 16, 2).mean(dim=(3, 5)).reshape(6, -1).mean(dim=0)
    torch.testing.assert_close(mean.double(), expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert model.net(images).mean(dim=0).abs().max() < 1e-5
    assert model_fingerprint(model) != before
    save_model(model, tmp_path / "thumb")
    loaded = load_model(tmp_path / "thumb")
    torch.testing.assert_close(loaded.net.mean, model.net.mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    with pytest.raises(ValueError, match="non-empty batch"):
        model.net.fit_mean(torch.zeros(0, 3, 32, 32))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 0}, "size must be a positive integer"),
        ({"interpolation": "cubic"}, "interpolation must be one of area, bilinear"),
        ({"centre": "database"}, "centre must be one of channel, image, none"),
        ({"descriptor_dim": 512}, "descriptor_dim is C·S·S = 3·16·16 = 768"),
        ({"projection": True}, r"unknown option\(s\) \['projection'\]"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("thumbnail-16", **options)


def _place(east: float, note: str) -> str:
    return f"@{east:.2f}@4000000.00@17@T@@@@@@@@@@{note}@.jpg"


def test_eval_cli_takes_the_preset_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Queries are their place's picture under a colour cast; per-channel centring finds every one."""
    rng = np.random.default_rng(0)
    database, queries = tmp_path / "images" / "test" / "database", tmp_path / "images" / "test" / "queries"
    database.mkdir(parents=True)
    queries.mkdir(parents=True)
    for index in range(6):
        coarse = rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)
        picture = np.asarray(Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64)
        Image.fromarray(picture.astype(np.uint8)).save(database / _place(500000.0 + 100 * index, ""), quality=95)
        darker = np.clip(picture * 0.6 + np.array([0.0, 5.0, 25.0]), 0, 255).astype(np.uint8)
        Image.fromarray(darker).save(queries / _place(500003.0 + 100 * index, "night"), quality=95)
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "eval",
                "--model",
                "thumbnail-16",
                "--dataset",
                str(tmp_path),
                "--image-size",
                "64",
                "--no-progress",
                "--recalls",
                "1",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert result["model"]["name"] == "thumbnail-16" and result["model"]["parameters"] == 0
    assert result["descriptor_dim"] == 768
    assert result["recall"]["1"] == 100.0
    assert "thumbnail-16" in capsys.readouterr().out


def test_info_of_the_parameter_free_thumbnail() -> None:
    from vprdistill.models.registry import build_model
    from vprdistill.models.summary import summarize

    summary = summarize(build_model("thumbnail-16"), 64)
    assert summary["total_parameters"] == 0
    assert summary["descriptor_dim"] == 3 * 16 * 16

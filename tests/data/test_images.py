from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprdistill.data.images import ImageLoadError, load_image, load_segmentation, verify_image
from vprdistill.data.structural import StructuralClassMap
from vprdistill.data.torch_datasets import ImagePathDataset, SegmentationPathDataset
from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_segmentation_transform, build_transform

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save_jpeg(path: Path, size: tuple[int, int] = (32, 24), colour=(10, 200, 30)) -> Path:
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    image = load_image(tmp_path / "rotated.jpg")
    assert image.mode == "RGB"
    assert image.size == (20, 40)
    top, bottom = np.asarray(image)[5, 10], np.asarray(image)[35, 10]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_grayscale_and_cmyk_load_as_rgb(tmp_path: Path) -> None:
    Image.new("L", (16, 8), 77).save(tmp_path / "gray.png")
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    gray = load_image(tmp_path / "gray.png")
    assert gray.mode == "RGB" and gray.size == (16, 8)
    assert np.all(np.asarray(gray) == 77)
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int)
    assert cmyk.shape == (8, 16, 3)
    assert cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60  # no magenta/yellow ink left = red


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 4, 8))
    rgba.save(tmp_path / "rgba.png")
    pixels = np.asarray(load_image(tmp_path / "rgba.png"))
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, 7]) == WHITE

    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))
    palette.save(tmp_path / "palette.png", transparency=0)
    pixels = np.asarray(load_image(tmp_path / "palette.png"))
    assert tuple(pixels[0, 0]) == WHITE and tuple(pixels[0, 7]) == BLUE


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    pixels = np.asarray(load_image(tmp_path / "deep.png"))
    assert pixels.shape == (1, 4, 3)
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 128, 255, 4])


def test_bad_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image" * 10)
    good = save_jpeg(tmp_path / "good.jpg", size=(64, 64))
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    for name in ("garbage.jpg", "truncated.jpg", "missing.jpg"):
        with pytest.raises(ImageLoadError, match=name):
            load_image(tmp_path / name)
        assert verify_image(tmp_path / name) is not None
    assert verify_image(good) is None
    assert verify_image(tmp_path / "missing.jpg") == "file not found"


def test_load_segmentation(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [13, 255, 7]], dtype=np.uint8)
    Image.fromarray(ids).save(tmp_path / "gray.png")
    palette = Image.fromarray(ids, mode="L").convert("P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_segmentation(tmp_path / "gray.png"), ids)
    np.testing.assert_array_equal(load_segmentation(tmp_path / "palette.png"), ids)  # indices, not colours
    assert load_segmentation(tmp_path / "gray.png").dtype == np.uint8

    Image.new("RGB", (3, 2)).save(tmp_path / "colour.png")
    Image.fromarray(ids).save(tmp_path / "lossy.jpg")
    with pytest.raises(ImageLoadError, match=r"colour\.png.*single-channel"):
        load_segmentation(tmp_path / "colour.png")
    with pytest.raises(ImageLoadError, match=r"lossy\.jpg"):
        load_segmentation(tmp_path / "lossy.jpg")
    with pytest.raises(ImageLoadError, match=r"absent\.png"):
        load_segmentation(tmp_path / "absent.png")


def test_build_transform_normalises_to_size(tmp_path: Path) -> None:
    image = Image.new("RGB", (50, 30), (255, 0, 128))
    tensor = build_transform((24, 40))(image)
    assert tensor.shape == (3, 24, 40) and tensor.dtype == torch.float32
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 128 / 255), IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4, rtol=0)

    torch.manual_seed(0)
    striped = Image.fromarray(np.tile(np.arange(50, dtype=np.uint8) * 5, (30, 1)), mode="L").convert("RGB")
    augment = build_transform(32, augment=True)
    first, second = augment(striped), augment(striped)
    assert first.shape == second.shape == (3, 32, 32)
    assert not torch.equal(first, second)


def test_randaugment_ops_change_the_augmented_view_and_never_the_evaluation_transform() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8))
    plain = build_transform(32)(photo)
    torch.testing.assert_close(build_transform(32, augment=False, augment_ops=3)(photo), plain, atol=0, rtol=0)
    for seed in range(4):
        # The same seed draws the same crop and jitter; only RandAugment's operations tell the two apart.
        torch.manual_seed(seed)
        crop_and_jitter = build_transform(32, augment=True)(photo)
        torch.manual_seed(seed)
        with_ops = build_transform(32, augment=True, augment_ops=3)(photo)
        torch.manual_seed(seed)
        again = build_transform(32, augment=True, augment_ops=3)(photo)
        assert with_ops.shape == (3, 32, 32)
        torch.testing.assert_close(with_ops, again, atol=0, rtol=0)
        assert (with_ops - crop_and_jitter).abs().max() > 0.05


def test_segmentation_transform_one_hot_nearest() -> None:
    ids = np.array([[0, 13], [10, 255]], dtype=np.uint8)  # road, car, sky, void (Cityscapes trainIds)
    class_map = StructuralClassMap.from_yaml()
    one_hot = build_segmentation_transform((4, 6), class_map=class_map)(ids)
    assert one_hot.shape == (class_map.num_classes, 4, 6) and one_hot.dtype == torch.float32
    names = class_map.names
    assert torch.all(one_hot[names.index("road"), :2, :3] == 1)
    assert torch.all(one_hot[names.index("vehicle"), :2, 3:] == 1)
    assert torch.all(one_hot[names.index("sky"), 2:, :3] == 1)
    assert torch.all(one_hot[:, 2:, 3:] == 0)
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}  # nearest: no blended classes

    identity = build_segmentation_transform(2, num_classes=3)(np.array([[0, 1], [2, 3]], dtype=np.uint8))
    torch.testing.assert_close(identity.sum(0), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="num_classes"):
        build_segmentation_transform(2, num_classes=3, class_map=class_map)


def test_path_datasets(tmp_path: Path) -> None:
    paths = [save_jpeg(tmp_path / f"{i}.jpg", colour=(i * 100, 0, 0)) for i in range(3)]
    dataset = ImagePathDataset(paths, build_transform(16))
    assert len(dataset) == 3
    tensor, index = dataset[2]
    assert index == 2 and tensor.shape == (3, 16, 16)
    assert dataset[2][0][0].mean() > dataset[0][0][0].mean()

    Image.fromarray(np.full((5, 7), 2, dtype=np.uint8)).save(tmp_path / "seg.png")
    seg = SegmentationPathDataset([tmp_path / "seg.png"], build_segmentation_transform(8))
    one_hot, index = seg[0]
    assert index == 0 and one_hot.shape == (10, 8, 8)
    assert torch.all(one_hot[2] == 1) and one_hot.sum() == 64  # trainId 2 = building


def test_only_photo_formats_are_decoded(tmp_path: Path) -> None:
    picture = Image.new("RGB", (16, 12), (200, 30, 40))
    for suffix in ("webp", "bmp", "tif", "png", "jpg"):
        picture.save(tmp_path / f"ok.{suffix}")
        loaded = np.asarray(load_image(tmp_path / f"ok.{suffix}")).astype(int)
        assert loaded.shape == (12, 16, 3) and abs(loaded[6, 8, 0] - 200) < 8, suffix
        assert verify_image(tmp_path / f"ok.{suffix}") is None
    # EPS is decoded by running Ghostscript, which no photo should reach; GIF, PPM and TGA decode in Pillow
    # itself, so that they are refused shows the allow-list at work even where Ghostscript is not installed.
    for suffix in ("gif", "ppm", "tga", "eps"):
        path = tmp_path / f"other.{suffix}"
        picture.save(path)
        with pytest.raises(ImageLoadError, match=rf"other\.{suffix}.*JPEG, PNG, WebP, BMP or TIFF"):
            load_image(path)
        assert "JPEG, PNG, WebP, BMP or TIFF" in verify_image(path)

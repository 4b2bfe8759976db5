"""One photo, every entry point, the same pixels and the same descriptors.

A photo reaches the network as a path (``load_image``), as encoded bytes
(``decode_image_bytes``, the service's uploads), as a PIL image or as an array
of its pixels; all go through ``to_upright_rgb``. The expected pixels are
computed here from the values written to the files, not by the code under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from tests.deploy.helpers import pattern_image
from vprdistill.data.images import load_image
from vprdistill.deploy.inputs import array_to_image, decode_image_bytes, to_rgb_image
from vprdistill.deploy.localizer import Localizer
from vprdistill.serve.app import create_app

SIDE = 64
RED, BLUE = (255, 0, 0), (0, 0, 255)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round((c·a + 255·(255 - a)) / 255)`` in integers: the colour ``colour`` of opacity ``alpha`` on white."""
    numerator = colour.astype(np.int64) * alpha[..., None] + 255 * (255 - alpha[..., None].astype(np.int64))
    return ((2 * numerator + 255) // 510).astype(np.uint8)  # floor(n / 255 + 1/2); n / 255 is never a half


@dataclass
class Case:
    path: Path
    expected: np.ndarray  # (H, W, 3) uint8, computed from the written values
    array: Callable[[], np.ndarray] | None  # the pixels as an array caller would hold them, read from the file


def rgba_case(folder: Path) -> Case:
    rng = np.random.default_rng(3)
    colour = pattern_image(rng, SIDE)
    alpha = np.tile(np.linspace(0, 255, SIDE).round().astype(np.uint8), (SIDE, 1))  # 0 at the left edge
    alpha[: SIDE // 4] = 255
    colour[:, 0] = BLUE  # hidden pixels that the old decoder of uploads showed as blue
    path = folder / "rgba.png"
    Image.fromarray(np.dstack([colour, alpha])).save(path)
    return Case(path, over_white(colour, alpha), lambda: np.asarray(Image.open(path)))


def sixteen_bit_case(folder: Path) -> Case:
    rng = np.random.default_rng(4)
    values = rng.integers(0, 65536, (SIDE, SIDE), dtype=np.uint16)
    values[0, :4] = [0, 128, 129, 65535]
    path = folder / "deep.png"
    Image.fromarray(values).save(path)
    grey = ((2 * values.astype(np.int64) + 257) // 514).astype(np.uint8)  # round(v / 257)
    return Case(path, np.repeat(grey[..., None], 3, axis=2), lambda: np.asarray(Image.open(path)))


def grey_case(folder: Path) -> Case:
    grey = pattern_image(np.random.default_rng(5), SIDE)[..., 1]
    path = folder / "grey.png"
    Image.fromarray(grey).save(path)
    return Case(path, np.repeat(grey[..., None], 3, axis=2), lambda: np.asarray(Image.open(path)))


def palette_case(folder: Path) -> Case:
    rng = np.random.default_rng(6)
    indices = rng.integers(0, 16, (SIDE, SIDE), dtype=np.uint8)
    colours = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    alphas = np.array([0, 255, 128, 40] + [255] * 12, dtype=np.uint8)  # index 0 fully transparent
    image = Image.frombytes("P", (SIDE, SIDE), indices.tobytes())
    image.putpalette(colours.flatten().tolist())
    path = folder / "palette.png"
    image.save(path, transparency=alphas.tobytes())
    # The array a caller holds of a palette image is its colours: indices mean nothing outside the file.
    return Case(path, over_white(colours[indices], alphas[indices]),
                lambda: np.asarray(Image.open(path).convert("RGBA")))  # fmt: skip


def rotated_jpeg_case(folder: Path) -> Case:
    stored = Image.new("RGB", (SIDE, SIDE // 2), RED)
    stored.paste(BLUE, (SIDE // 2, 0, SIDE, SIDE // 2))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the left half ends on top
    path = folder / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    # JPEG is lossy: the expectation is the decoded stored pixels, rotated here with numpy.
    decoded = np.asarray(Image.open(path).convert("RGB"))
    # Arrays carry no EXIF: the caller's array is the upright image.
    return Case(path, np.rot90(decoded, k=-1), lambda: np.asarray(ImageOps.exif_transpose(Image.open(path))))


CASES = {
    "rgba": rgba_case,
    "16-bit grey": sixteen_bit_case,
    "8-bit grey": grey_case,
    "palette": palette_case,
    "exif-rotated jpeg": rotated_jpeg_case,
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    folder = tmp_path_factory.mktemp("parity")
    return {name: make(folder) for name, make in CASES.items()}


@pytest.fixture(scope="module")
def localizer(tiny_index: Path) -> Localizer:
    return Localizer.from_index_folder(tiny_index)


@pytest.fixture(scope="module")
def client(localizer: Localizer) -> Iterator[TestClient]:
    with TestClient(create_app(localizer, 2**20)) as client:
        yield client


def test_the_expected_pixels_are_what_was_written() -> None:
    # Alpha 0 shows the background, white, whatever the hidden colour; alpha 255 the colour itself.
    hidden = np.array([[[0, 0, 255], [10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(over_white(hidden, np.array([[0, 255, 128]], dtype=np.uint8)),
                                  [[[255, 255, 255], [10, 20, 30], [227, 177, 127]]])  # fmt: skip
    # 200·128/255 + 255·127/255 = 227.39, 100·128/255 + 127 = 177.20, 0 + 127 = 127


@pytest.mark.parametrize("name", list(CASES))
def test_every_entry_point_gives_the_same_pixels(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    from_path = np.asarray(load_image(case.path))
    assert from_path.dtype == np.uint8 and from_path.shape == case.expected.shape
    if name == "exif-rotated jpeg":
        assert from_path.shape == (SIDE, SIDE // 2, 3)  # upright: taller than wide
    np.testing.assert_array_equal(from_path, case.expected)
    np.testing.assert_array_equal(np.asarray(decode_image_bytes(case.path.read_bytes())), from_path)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(case.path.read_bytes())), from_path)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(Image.open(case.path))), from_path)
    np.testing.assert_array_equal(np.asarray(to_rgb_image(case.array())), from_path)


def test_an_rgba_upload_shows_white_where_it_is_transparent(cases: dict[str, Case]) -> None:
    pixels = np.asarray(decode_image_bytes(cases["rgba"].path.read_bytes()))
    assert pixels[SIDE - 1, 0].tolist() == [255, 255, 255]  # alpha 0 over a stored blue pixel
    assert pixels[0, 0].tolist() == list(BLUE)  # the same column where the alpha is 255


def test_a_pil_image_handed_in_is_not_changed(cases: dict[str, Case]) -> None:
    image = Image.open(cases["exif-rotated jpeg"].path)
    to_rgb_image(image)
    assert image.size == (SIDE, SIDE // 2) and image.getexif()[0x0112] == 6


@pytest.mark.parametrize("name", list(CASES))
def test_every_entry_point_gives_the_same_descriptors(
    localizer: Localizer, client: TestClient, cases: dict[str, Case], name: str
) -> None:
    case = cases[name]
    data = case.path.read_bytes()
    from_path = localizer.describe([case.path])
    np.testing.assert_array_equal(localizer.describe([data]), from_path)
    np.testing.assert_array_equal(localizer.describe([Image.open(case.path)]), from_path)
    np.testing.assert_array_equal(localizer.describe([case.array()]), from_path)

    expected = localizer.localize(case.path, topk=3)[0]
    from_bytes = localizer.localize(data, topk=3)[0]
    response = client.post("/localize", params={"topk": 3}, files={"image": (case.path.name, data)})
    assert response.status_code == 200, response.text
    served = response.json()
    for matches in ([m.database_index for m in from_bytes.matches], [m["database_index"] for m in served["matches"]]):
        assert matches == [m.database_index for m in expected.matches]
    assert from_bytes.score == expected.score
    assert [m["score"] for m in served["matches"]] == pytest.approx([m.score for m in expected.matches], abs=1e-6)


def test_sixteen_bit_and_float_arrays_are_scaled_as_files_are(cases: dict[str, Case]) -> None:
    values = cases["16-bit grey"].array()
    assert values.dtype == np.uint16
    expected = cases["16-bit grey"].expected
    np.testing.assert_array_equal(np.asarray(array_to_image(values.astype(np.int32))), expected)
    np.testing.assert_array_equal(np.asarray(array_to_image(values[..., None])), expected)
    rgba = np.dstack([values] * 3 + [np.full_like(values, 65535)])  # opaque 16-bit RGBA
    np.testing.assert_array_equal(np.asarray(array_to_image(rgba)), expected)
    grey = cases["8-bit grey"].array()
    np.testing.assert_array_equal(
        np.asarray(array_to_image(grey.astype(np.float32) / 255)), cases["8-bit grey"].expected
    )
    with pytest.raises(ValueError, match="0..65535"):
        array_to_image(np.full((4, 4), 70000, dtype=np.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        array_to_image(np.full((4, 4), np.nan, dtype=np.float32))


# --- channel order of arrays ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame(tiny_dataset: Path) -> np.ndarray:
    """A query photo as an `(H, W, 3)` RGB array."""
    from vprdistill.data.readers import open_dataset

    return np.asarray(load_image(open_dataset(tiny_dataset, "test").query_paths[1]))


def test_a_bgr_frame_with_its_channel_order_matches_the_rgb_frame(localizer: Localizer, frame: np.ndarray) -> None:
    bgr = np.ascontiguousarray(frame[..., ::-1])  # as OpenCV's imread or cv_bridge's "bgr8" give it
    rgb_descriptor = localizer.describe([frame])
    np.testing.assert_array_equal(localizer.describe([bgr], channel_order="BGR"), rgb_descriptor)
    misread = localizer.describe([bgr])  # the default reads it as RGB: red and blue swapped
    assert np.abs(misread - rgb_descriptor).max() > 1e-3
    assert float(misread[0] @ rgb_descriptor[0]) < 0.999

    rgb_answer = localizer.localize(frame)[0]
    bgr_answer = localizer.localize(bgr, channel_order="BGR")[0]
    assert bgr_answer.best.database_index == rgb_answer.best.database_index == 4
    assert bgr_answer.score == rgb_answer.score
    batch = localizer.localize(np.stack([bgr, bgr]), channel_order="BGR")  # a (B, H, W, 3) batch
    assert [r.score for r in batch] == pytest.approx([rgb_answer.score] * 2, abs=1e-6)
    np.testing.assert_array_equal(localizer.prepare(bgr, channel_order="BGR"), localizer.prepare(frame))


def test_bgra_frames_are_bgr_plus_alpha(localizer: Localizer, frame: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, frame.shape[1]).round().astype(np.uint8), (frame.shape[0], 1))
    rgba = np.dstack([frame, alpha])
    bgra = np.dstack([frame[..., ::-1], alpha])
    expected = over_white(frame, alpha)
    np.testing.assert_array_equal(np.asarray(array_to_image(rgba)), expected)
    np.testing.assert_array_equal(np.asarray(array_to_image(bgra, channel_order="BGR")), expected)
    np.testing.assert_array_equal(np.asarray(array_to_image(bgra, channel_order="BGRA")), expected)
    np.testing.assert_array_equal(localizer.describe([bgra], channel_order="BGRA"), localizer.describe([rgba]))


def test_channel_order_leaves_files_bytes_and_pil_images_alone(localizer: Localizer, cases: dict[str, Case]) -> None:
    path = cases["rgba"].path
    expected = localizer.describe([path])
    for item in (path, path.read_bytes(), Image.open(path)):
        np.testing.assert_array_equal(localizer.describe([item], channel_order="BGR"), expected)
    grey = cases["8-bit grey"].array()  # a grey array has no channel order
    np.testing.assert_array_equal(localizer.describe([grey], channel_order="BGR"), localizer.describe([grey]))


def test_an_unknown_channel_order_is_refused_by_name(localizer: Localizer, frame: np.ndarray, cases) -> None:
    for call in (lambda: localizer.localize(frame, channel_order="GRB"),
                 lambda: localizer.localize(cases["rgba"].path, channel_order="GRB"),
                 lambda: localizer.describe([frame], channel_order="GRB"),
                 lambda: localizer.prepare(frame, channel_order="GRB"),
                 lambda: array_to_image(frame, channel_order="GRB")):  # fmt: skip
        with pytest.raises(ValueError, match=r"channel_order.*'GRB'"):
            call()
    with pytest.raises(ValueError, match="'bgr'"):
        to_rgb_image(frame, channel_order="bgr")

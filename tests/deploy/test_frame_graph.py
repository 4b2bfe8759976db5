"""Frame-in ONNX graphs: uint8 camera frames of any size in, the PyTorch path's descriptors out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from tests.deploy.helpers import save_tiny_model
from vprdistill.cli import export as export_cli
from vprdistill.cli.main import main
from vprdistill.data.images import load_image
from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from vprdistill.deploy import export as export_module
from vprdistill.deploy import frame_graph
from vprdistill.deploy.export import OnnxMismatchError, export_onnx, sidecar_path
from vprdistill.deploy.frame_graph import FRAME_ATOL, FrameGraph
from vprdistill.models.checkpoint import load_model, model_fingerprint
from vprdistill.models.registry import build_model

IMAGE_SIZE = (48, 64)  # H != W, so that a swapped height and width cannot pass
MAP_SIZE, NUM_QUERIES, TOP_K = 12, 6, 3


def scene(rng: np.random.Generator, kind: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A picture of one of four kinds (colour layout, stripes, checkerboard, radial gradient) plus noise: `(H, W, 3)` uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour_a, colour_b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if kind == 0:
        cells = int(rng.integers(2, 7))
        layout = Image.fromarray(rng.integers(0, 256, (cells, cells + 1, 3), dtype=np.uint8))
        picture = np.asarray(layout.resize((width, height), Image.BICUBIC), np.float32)
    elif kind == 1:
        frequency, angle = rng.uniform(0.05, 0.4), rng.uniform(0, np.pi)
        mask = np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy)) > 0
        picture = np.where(mask[..., None], colour_a, colour_b).astype(np.float32)
    elif kind == 2:
        cell = int(rng.integers(4, 24))
        mask = ((xx // cell) + (yy // cell)) % 2 == 0
        picture = np.where(mask[..., None], colour_a, colour_b).astype(np.float32)
    else:
        centre_y, centre_x = rng.uniform(0, height), rng.uniform(0, width)
        radius = np.hypot(yy - centre_y, xx - centre_x)[..., None] / max(height, width)
        picture = colour_a * (1 - radius) + colour_b * radius
    return np.clip(picture + rng.normal(0, 5, picture.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18-gem").eval()


def export_frame_graph(model: torch.nn.Module, folder: Path, order: str) -> tuple[Path, dict]:
    path = folder / f"frames-{order.lower()}.onnx"
    return path, export_onnx(model, path, IMAGE_SIZE, embed_preprocessing=True, channel_order=order)


# One fixture per graph, so that no test waits for both exports.
@pytest.fixture(scope="module")
def rgb_graph(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return export_frame_graph(model, tmp_path_factory.mktemp("rgb_graph"), "RGB")


@pytest.fixture(scope="module")
def bgr_graph(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return export_frame_graph(model, tmp_path_factory.mktemp("bgr_graph"), "BGR")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """A map of ``MAP_SIZE`` PNG pictures (96×128) and ``NUM_QUERIES`` queries: noisy copies of the first
    pictures, saved as JPEG or PNG at a different frame size each (larger, smaller, other aspect ratios)."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(3)
    pictures = [scene(rng, i % 4) for i in range(MAP_SIZE)]
    database = []
    for i, picture in enumerate(pictures):
        database.append(folder / f"map{i:02d}.png")
        Image.fromarray(picture).save(database[-1])
    queries = []
    for i, picture in enumerate(pictures[:NUM_QUERIES]):
        noisy = np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8)
        frame = Image.fromarray(noisy).resize((110 - 7 * i, 75 + 5 * i), Image.BICUBIC)
        queries.append(folder / (f"query{i}.jpg" if i % 2 == 0 else f"query{i}.png"))
        frame.save(queries[-1], **({"quality": 92} if i % 2 == 0 else {}))
    return database, queries


def pytorch_path(model: torch.nn.Module, paths: list[Path]) -> np.ndarray:
    """``load_image`` + ``build_transform`` + model, as the index and the localiser describe photos: `(N, D)`."""
    transform = build_transform(IMAGE_SIZE)
    with torch.inference_mode():
        return model(torch.stack([transform(load_image(path)) for path in paths])).numpy()


def onnx_path(session: ort.InferenceSession, paths: list[Path], channel_order: str = "RGB") -> np.ndarray:
    """Each decoded file as a `(1, H_in, W_in, 3)` uint8 frame through the graph: `(N, D)`."""
    rows = []
    for path in paths:
        frame = np.asarray(load_image(path))[None]
        (descriptors,) = session.run(["descriptors"], {"frames": frame_graph.as_channel_order(frame, channel_order)})
        rows.append(descriptors[0])
    return np.stack(rows)


def session_of(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_frame_graph_matches_pytorch_path_on_image_files(
    model: torch.nn.Module, rgb_graph: tuple[Path, dict], image_files: tuple[list[Path], list[Path]]
) -> None:
    database, queries = image_files
    session = session_of(rgb_graph[0])
    found, expected = onnx_path(session, queries), pytorch_path(model, queries)
    # The two resizes (PIL's rounded fixed-point filter, ONNX Runtime's float one) differ by up to one grey
    # level: descriptors move by a few 1e-4 (4.7e-4 here), never as far as a wrong layout would.
    assert np.abs(found - expected).max() <= FRAME_ATOL
    assert np.sum(found * expected, axis=1).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)

    # Ranking against a map described by PyTorch: the same top-3 places, in the same order, whichever path
    # described the queries (the smallest score gap among the top 4, 1.2e-3, is 4x the largest score change here).
    map_descriptors = pytorch_path(model, database)
    top_onnx = np.argsort(-(found @ map_descriptors.T), axis=1)[:, :TOP_K]
    top_torch = np.argsort(-(expected @ map_descriptors.T), axis=1)[:, :TOP_K]
    np.testing.assert_array_equal(top_onnx, top_torch)
    np.testing.assert_array_equal(top_torch[:, 0], np.arange(NUM_QUERIES))  # each query finds its own picture


def test_bgr_graph_takes_bgr_frames(
    rgb_graph: tuple[Path, dict], bgr_graph: tuple[Path, dict], image_files: tuple[list[Path], list[Path]]
) -> None:
    _, queries = image_files
    rgb_session, bgr_session = session_of(rgb_graph[0]), session_of(bgr_graph[0])
    from_rgb = onnx_path(rgb_session, queries, "RGB")
    from_bgr = onnx_path(bgr_session, queries, "BGR")  # frame[..., ::-1] into the BGR graph
    np.testing.assert_allclose(from_bgr, from_rgb, atol=1e-6)  # a channel flip is exact: same float inputs
    # RGB frames into the BGR graph: red and blue swapped, and the descriptors move far beyond the tolerance (6e-2).
    wrong = onnx_path(bgr_session, queries, "RGB")
    assert np.abs(wrong - from_rgb).max() > 4 * FRAME_ATOL


def test_frames_of_several_sizes_in_one_session(model: torch.nn.Module, bgr_graph: tuple[Path, dict]) -> None:
    session = session_of(bgr_graph[0])
    (declared,) = session.get_inputs()
    assert declared.name == "frames" and declared.type == "tensor(uint8)"
    assert declared.shape[3] == 3 and all(isinstance(axis, str) for axis in declared.shape[:3])  # N, H_in, W_in dynamic
    # Larger (shrunk with antialiasing), smaller (enlarged), the model's own size (no resize) and a 16:9 frame.
    for seed, shape in enumerate([(2, 120, 90, 3), (1, 37, 53, 3), (3, *IMAGE_SIZE, 3), (1, 90, 160, 3)]):
        frames_rgb = frame_graph.synthetic_frames(shape, seed=seed)
        (found,) = session.run(["descriptors"], {"frames": np.ascontiguousarray(frames_rgb[..., ::-1])})
        assert found.shape == (shape[0], model.descriptor_dim)
        expected = frame_graph.reference_descriptors(model, frames_rgb, IMAGE_SIZE)
        tolerance = 1e-5 if shape[1:3] == IMAGE_SIZE else FRAME_ATOL  # no resize on either path: float rounding only
        assert np.abs(found - expected).max() <= tolerance, shape
    with pytest.raises(Exception, match="tensor\\(float\\)|tensor\\(uint8\\)"):  # float images are not frames
        session.run(["descriptors"], {"frames": np.zeros((1, *IMAGE_SIZE, 3), np.float32)})


def test_sidecar_states_the_input_contract(
    model: torch.nn.Module, rgb_graph: tuple[Path, dict], bgr_graph: tuple[Path, dict]
) -> None:
    for order, (path, record) in {"RGB": rgb_graph, "BGR": bgr_graph}.items():
        sidecar = json.loads(sidecar_path(path).read_text())
        assert sidecar == json.loads(json.dumps(record))
        contract = sidecar["input"]
        assert contract["name"] == "frames" and contract["dtype"] == "uint8" and contract["layout"] == "NHWC"
        assert contract["channel_order"] == order and contract["any_size"] is True
        assert contract["shape"] == ["batch", "height", "width", 3] and contract["resized_to"] == list(IMAGE_SIZE)
        assert contract["resize"]["antialias"] is True and contract["resize"]["mode"] == "bilinear"
        assert contract["normalisation"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        assert sidecar["embedded_preprocessing"] is True and sidecar["output"]["l2_normalised"] is True
        assert sidecar["fingerprint"] == model_fingerprint(model) and sidecar["image_size"] == list(IMAGE_SIZE)
        assert sidecar["exporter"] == "dynamo" and sidecar["opset"] >= 18 and sidecar["atol"] == FRAME_ATOL
        # The check ran on two frame sizes; the recorded differences are real measurements, not zeros.
        assert len(sidecar["max_abs_diff"]) == 2
        assert all(1e-7 < diff <= FRAME_ATOL for diff in sidecar["max_abs_diff"].values())
        assert all(diff <= frame_graph.EAGER_ATOL for diff in sidecar["max_abs_diff_eager"].values())
        assert all(0.9999 < cosine <= 1.0 + 1e-6 for cosine in sidecar["min_cosine"].values())


def test_frame_graph_equals_its_steps_written_out(model: torch.nn.Module) -> None:
    """``FrameGraph.preprocess`` against the steps done one by one in numpy and torch (independent order of axes)."""
    frames = frame_graph.synthetic_frames((2, 70, 90, 3), seed=5)
    graph = FrameGraph(model, IMAGE_SIZE, "BGR")
    with torch.no_grad():
        found = graph.preprocess(torch.from_numpy(np.ascontiguousarray(frames[..., ::-1]))).numpy()
    nchw = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32))
    resized = torch.nn.functional.interpolate(nchw, size=IMAGE_SIZE, mode="bilinear", antialias=True).numpy()
    expected = (resized / 255.0 - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(found, expected, atol=1e-5)
    # The resize is PIL's filter within one grey level (the Python path rounds to integers, this one does not).
    pil = np.stack([np.asarray(Image.fromarray(f).resize(IMAGE_SIZE[::-1], Image.BILINEAR)) for f in frames])
    assert np.abs(resized.transpose(0, 2, 3, 1) - pil).max() <= 1.0 + 1e-3


def test_export_command_embed_preprocessing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stem = save_tiny_model(tmp_path)
    out = tmp_path / "robot.onnx"
    args = ["export", "--model", str(stem), "--format", "onnx", "--out", str(out), "--image-size", "32", "40"]
    assert main([*args, "--embed-preprocessing", "--channel-order", "bgr"]) == 0
    printed = capsys.readouterr().out
    assert "uint8 frames" in printed and "BGR" in printed and "min cosine" in printed
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["input"]["channel_order"] == "BGR" and sidecar["input"]["resized_to"] == [32, 40]
    assert sidecar["fingerprint"] == model_fingerprint(load_model(stem))
    frames_rgb = frame_graph.synthetic_frames((2, 81, 67, 3), seed=7)
    (found,) = session_of(out).run(["descriptors"], {"frames": np.ascontiguousarray(frames_rgb[..., ::-1])})
    expected = frame_graph.reference_descriptors(load_model(stem), frames_rgb, (32, 40))
    assert np.abs(found - expected).max() <= FRAME_ATOL

    # A channel order without a frame graph, or a frame graph from the legacy exporter: refused, nothing written.
    refused = tmp_path / "refused.onnx"
    base = ["export", "--model", str(stem), "--out", str(refused), "--image-size", "32"]
    assert main([*base, "--channel-order", "BGR"]) == 1
    assert main([*base, "--embed-preprocessing", "--exporter", "legacy"]) == 1
    assert "legacy" in capsys.readouterr().err
    assert not refused.exists() and not sidecar_path(refused).exists()


def test_frame_graph_beyond_tolerance_writes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("thumbnail-16").eval()  # no weights: the fastest export
    out = tmp_path / "frames.onnx"
    # PIL's rounded resize and the graph's float one never agree this closely.
    with pytest.raises(OnnxMismatchError, match="not written"):
        export_onnx(model, out, image_size=32, embed_preprocessing=True, atol=1e-9)
    assert list(tmp_path.iterdir()) == []


def test_cli_help_constants_agree_with_the_package() -> None:
    assert export_cli.DEFAULT_ATOL == export_module.DEFAULT_ATOL
    assert export_cli.FRAME_ATOL == frame_graph.FRAME_ATOL
    assert export_cli.CHANNEL_ORDERS == frame_graph.CHANNEL_ORDERS

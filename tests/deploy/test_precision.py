"""fp16 and int8 versions of an exported graph: agreement with float32, size, calibration, and the recall cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vprdistill.data.images import load_image
from vprdistill.data.readers import open_dataset
from vprdistill.data.transforms import build_transform
from vprdistill.deploy.export import export_onnx, sidecar_path
from vprdistill.deploy.precision import (
    GraphInput,
    ImageCalibrationReader,
    PrecisionCheckError,
    convert_fp16,
    convert_precision,
    float32_path_for,
    quantize_int8,
    read_sidecar,
)
from vprdistill.models.registry import build_model

SIDE = 32
# Measured on this fixture (resnet18-gem, random weights, the 152 images of the test split at 32 px):
# fp16 max |difference| 7.9e-5 and min cosine 0.9999999 where, as on this x86 CPU, ONNX Runtime runs
# the float16 convolutions in float32 between casts; 2.5e-3 and 0.99990 when every float16 tensor is
# really rounded (measured with a float16 round trip after each head node), which the bounds allow
# for CPUs with float16 kernels. int8 (min/max calibration on the split's 104 database images) min
# cosine 0.9977, mean 0.9993. The bounds leave 2x (fp16 difference) to 4-5x (1 - cosine) of margin.
# What they catch: int8 ranges calibrated at a tenth of the input's scale give min 0.64, mean 0.82.
# (Calibrated on unit Gaussian noise instead of images: 0.994 / 0.998, which passes: the gain of
# calibrating on real images is what the recall cost measures, not this bound.)
FP16_ATOL = 5e-3
FP16_MIN_COSINE = 0.9995
INT8_MIN_COSINE = 0.99
INT8_MEAN_COSINE = 0.997


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def describe(path: Path, image_paths: list[Path], batch_size: int = 32) -> np.ndarray:
    """Descriptors through a fresh session, fed as the sidecar says: `(N, D)`."""
    transform = build_transform(SIDE)
    images = np.stack([transform(load_image(p)).numpy() for p in image_paths])
    run = session(path)
    return np.concatenate([run.run(["descriptors"], {"images": images[i : i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])  # fmt: skip


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("precision") / "student.onnx"
    export_onnx(build_model("resnet18-gem").eval(), path, SIDE)
    return path


def convert(fp32_onnx: Path, synth_tiny: Path, precision: str) -> Path:
    """The ``precision`` version, evaluated on the test split (int8: calibrated on its database, the map)."""
    out = fp32_onnx.with_name(f"student.{precision}.onnx")
    convert_precision(fp32_onnx, out, precision, calibrate=synth_tiny if precision == "int8" else None,
                      evaluate=(synth_tiny, "test"), threads=1, timing_repeats=1)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def fp16_onnx(fp32_onnx: Path, synth_tiny: Path) -> Path:
    return convert(fp32_onnx, synth_tiny, "fp16")


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx: Path, synth_tiny: Path) -> Path:
    return convert(fp32_onnx, synth_tiny, "int8")


@pytest.fixture(scope="module")
def converted(fp16_onnx: Path, int8_onnx: Path) -> dict[str, Path]:
    return {"fp16": fp16_onnx, "int8": int8_onnx}


@pytest.fixture(scope="module")
def test_split(synth_tiny: Path):
    return open_dataset(synth_tiny, split="test")


def test_fp16_agrees_with_fp32_at_half_the_size(fp32_onnx: Path, fp16_onnx: Path, test_split) -> None:
    fp16 = fp16_onnx
    assert fp16.stat().st_size < 0.6 * fp32_onnx.stat().st_size
    # The I/O contract is unchanged: float32 images in, float32 descriptors out.
    for graph in (session(fp32_onnx), session(fp16)):
        assert [(i.name, i.type) for i in graph.get_inputs()] == [("images", "tensor(float)")]
        assert [(o.name, o.type) for o in graph.get_outputs()] == [("descriptors", "tensor(float)")]
    paths = test_split.query_paths[:16]
    reference, found = describe(fp32_onnx, paths), describe(fp16, paths)
    assert np.abs(found - reference).max() <= FP16_ATOL
    assert cosine(found, reference).min() >= FP16_MIN_COSINE

    # The convolutions (nearly all weights and FLOPs) are float16; GeM's x^p, the projection after it and
    # the L2 norm (the head) compute in float32.
    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp16)))
    onnx.checker.check_model(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    conv_weights = [types[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert len(conv_weights) == 20 and set(conv_weights) == {onnx.TensorProto.FLOAT16}
    head = [n for n in model.graph.node if n.op_type in ("Pow", "ReduceL2")]
    assert head and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in head)
    assert any(types.get(n.input[0]) == onnx.TensorProto.FLOAT16 for n in model.graph.node if n.op_type == "Conv")


def test_int8_is_smaller_and_close(fp32_onnx: Path, int8_onnx: Path, test_split) -> None:
    int8 = int8_onnx
    assert int8.stat().st_size < 0.4 * fp32_onnx.stat().st_size
    model = onnx.load(str(int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    initializers = {t.name: t for t in model.graph.initializer}
    assert any(t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1000 for t in initializers.values())
    # Activations are unsigned by default (U8S8): their QuantizeLinear zero points are uint8.
    zero_points = {initializers[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points == {onnx.TensorProto.UINT8}
    paths = test_split.query_paths  # queries were not among the calibration images
    similarity = cosine(describe(int8, paths), describe(fp32_onnx, paths))
    assert similarity.min() >= INT8_MIN_COSINE and similarity.mean() >= INT8_MEAN_COSINE

    record = read_sidecar(int8)
    assert record["precision"] == "int8" and record["onnx_file"] == int8.name
    assert record["calibration"]["dataset"] == test_split.name and record["calibration"]["split"] == "test"
    assert record["calibration"]["n_images"] == test_split.num_database  # fewer than the 256 cap: all of them
    assert record["conversion"]["format"] == "QDQ" and record["conversion"]["per_channel"] is True
    # The rest of the source's sidecar is kept (input contract, fingerprint), and the source is identified.
    source = read_sidecar(fp32_onnx)
    assert record["input"] == source["input"] and record["fingerprint"] == source["fingerprint"]
    assert record["source"]["onnx_file"] == fp32_onnx.name and "precision" not in source
    # The float32 graph's agreement with PyTorch is kept as the source's, not shown as the int8 graph's.
    assert "max_abs_diff" not in record and record["source"]["export_check"]["max_abs_diff"] == source["max_abs_diff"]


def test_recall_cost_matches_an_independent_computation(
    fp32_onnx: Path, converted: dict[str, Path], test_split
) -> None:
    # Brute-force nearest neighbours in NumPy and positives from the UTM positions (25 m), no project code.
    distances = np.linalg.norm(test_split.query_utm[:, None, :] - test_split.database_utm[None, :, :], axis=2)
    positive = distances <= 25.0
    descriptors = {}
    for name, path in (("fp32", fp32_onnx), *converted.items()):
        database = describe(path, test_split.database_paths)
        queries = describe(path, test_split.query_paths)
        descriptors[name] = (database, queries)
    rankings = {name: np.argsort(-(q @ d.T), axis=1, kind="stable") for name, (d, q) in descriptors.items()}
    for precision, path in converted.items():
        cost = json.loads(sidecar_path(path).read_text())["recall_cost"]
        assert cost["num_queries"] == test_split.num_queries and cost["split"] == "test"
        for name in ("fp32", precision):
            hits = np.take_along_axis(positive, rankings[name], axis=1)
            for n in (1, 5, 10):
                expected = 100.0 * hits[:, :n].any(axis=1).mean()
                assert cost["recall"][name][str(n)] == pytest.approx(expected, abs=1e-9), (precision, name, n)
        for n in ("1", "5", "10"):
            delta = cost["recall"][precision][n] - cost["recall"]["fp32"][n]
            assert cost["recall_delta"][n] == pytest.approx(delta)
        first, other = rankings["fp32"][:, 0], rankings[precision][:, 0]
        assert cost["top1_agreement"] == pytest.approx((first == other).mean(), abs=1e-9)
        apart = np.linalg.norm(test_split.database_utm[first] - test_split.database_utm[other], axis=1)
        assert cost["top1_same_place"] == pytest.approx((apart <= 25.0).mean(), abs=1e-9)
        assert cost["top1_same_place"] >= cost["top1_agreement"]
        both = [np.concatenate(descriptors[k]) for k in ("fp32", precision)]
        assert cost["descriptor_difference"]["max_abs"] == pytest.approx(np.abs(both[1] - both[0]).max(), rel=1e-4)
        assert cost["file_bytes"] == {"fp32": fp32_onnx.stat().st_size, precision: path.stat().st_size}
        assert set(cost["ms_per_image"][precision]) == {"1", "8"} and cost["ms_per_image"]["fp32"]["8"] > 0


def test_calibration_reader_gives_what_the_graph_takes(test_split, tmp_path: Path) -> None:
    paths = test_split.database_paths[:11]
    images = GraphInput("images", frames=False, image_size=(SIDE, 48))
    batches = list(ImageCalibrationReader(images, paths, batch_size=4))
    assert [b["images"].shape for b in batches] == [(4, 3, SIDE, 48)] * 2 + [(3, 3, SIDE, 48)]
    assert all(b["images"].dtype == np.float32 for b in batches)
    expected = build_transform((SIDE, 48))(load_image(paths[0])).numpy()
    np.testing.assert_array_equal(batches[0]["images"][0], expected)

    # Frame-in graphs: uint8 NHWC frames in the graph's channel order; a size change ends a batch.
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "small.png")
    frames = GraphInput("images", frames=True, image_size=SIDE, channel_order="BGR")
    batches = list(ImageCalibrationReader(frames, [*paths[:3], tmp_path / "small.png"], batch_size=8))
    assert [b["images"].shape for b in batches] == [(3, 64, 64, 3), (1, 20, 30, 3)]
    assert all(b["images"].dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(batches[0]["images"][0], np.asarray(load_image(paths[0]))[..., ::-1])


def test_graph_input_reads_the_sidecar_record() -> None:
    frame_in = {"image_size": [64, 48], "input": {"name": "frames", "dtype": "uint8", "layout": "NHWC",
                                                  "channel_order": "bgr"}}  # fmt: skip
    spec = GraphInput.from_sidecar(frame_in)
    assert (spec.name, spec.frames, spec.image_size, spec.channel_order) == ("frames", True, (64, 48), "BGR")
    with pytest.raises(ValueError, match="layout 'NCHW'"):
        GraphInput.from_sidecar({"image_size": [8, 8], "input": {"dtype": "uint8"}}, "x.onnx.json")
    with pytest.raises(ValueError, match="x.onnx.json: field 'input'"):
        GraphInput.from_sidecar({"image_size": [8, 8]}, "x.onnx.json")


def test_int8_without_calibration_images_is_refused(fp32_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.int8.onnx"
    with pytest.raises(ValueError, match="--calibrate DATASET"):
        convert_precision(fp32_onnx, out, "int8")
    with pytest.raises(ValueError, match="calibration images"):
        quantize_int8(fp32_onnx, out, [])
    with pytest.raises(ValueError, match="precision must be one of fp16, int8"):
        convert_precision(fp32_onnx, out, "int4")
    assert list(tmp_path.iterdir()) == []


def test_source_and_destination_are_checked(fp32_onnx: Path, fp16_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would replace its float32 source"):
        convert_fp16(fp32_onnx, fp32_onnx)
    with pytest.raises(ValueError, match="the source is fp16"):
        convert_fp16(fp16_onnx, tmp_path / "again.onnx")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(fp32_onnx.read_bytes())
    with pytest.raises(FileNotFoundError, match="lonely.onnx.json"):
        convert_fp16(lonely, tmp_path / "out.onnx")
    for name in ("student.onnx", "student.int8.onnx", "student.fp16.onnx"):
        assert float32_path_for(tmp_path / name) == tmp_path / "student.fp32.onnx"


class Bright(torch.nn.Module):
    """A conv whose activations reach ~150, then GeM (p = 3, ``pow``) or a cube by products (``mul``), and L2
    normalisation: 150³ = 3.4e6 overflows float16 (largest value 65504)."""

    descriptor_dim = 8

    def __init__(self, cube: str) -> None:
        super().__init__()
        self.cube = cube
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.bias.fill_(150.0)
        self.p = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(images)).clamp(min=1e-6)
        if self.cube == "pow":
            pooled = features.pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        else:
            pooled = (features * features * features).mean(dim=(2, 3))
        return torch.nn.functional.normalize(pooled, dim=1)


def strict_session(path: Path) -> ort.InferenceSession:
    """No graph optimisation: ONNX Runtime then keeps every Cast, so each float16 tensor is really rounded to
    float16, as on hardware with float16 kernels (with optimisation, the CPU drops float32 → float16 → float32
    round trips around ops it only has in float32, and hides overflows)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def test_fp16_head_stays_float32_and_broken_conversions_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    gem = tmp_path / "gem.onnx"
    export_onnx(Bright("pow").eval(), gem, 16)
    expected = session(gem).run(["descriptors"], {"images": images.numpy()})[0]
    # The head (x^p, the mean, the root, the norm) computes in float32, with no float16 round trip between its
    # nodes (the converter puts one after each kept node): no overflow even with every cast kept.
    record = convert_fp16(gem, tmp_path / "gem.fp16.onnx")
    assert record["precision_check"]["inputs"] == "random input" and record["precision_check"]["min_cosine"] > 0.9999
    assert record["conversion"]["float16_round_trips_removed"] > 0
    assert record["recall_cost"] is None and record["calibration"] is None
    found = strict_session(tmp_path / "gem.fp16.onnx").run(["descriptors"], {"images": images.numpy()})[0]
    np.testing.assert_allclose(found, expected, atol=1e-3)
    to_float16 = [n for n in onnx.load(str(tmp_path / "gem.fp16.onnx")).graph.node
                  if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]  # fmt: skip
    assert [list(n.input) for n in to_float16] == [["images"]]

    # A cube by products overflows in float16 even on the CPU: the check refuses it and writes nothing.
    cube = tmp_path / "cube.onnx"
    export_onnx(Bright("mul").eval(), cube, 16)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PrecisionCheckError, match="nothing was written"):
        convert_fp16(cube, tmp_path / "cube.fp16.onnx", fp16_head_ops=())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_frame_in_graph_is_calibrated_and_evaluated_on_frames(synth_tiny: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tmp_path / "frames.onnx"
    export_onnx(build_model("resnet18-gem").eval(), source, SIDE, embed_preprocessing=True, channel_order="BGR")
    assert read_sidecar(source)["input"]["dtype"] == "uint8"
    record = convert_precision(source, tmp_path / "frames.int8.onnx", "int8", calibrate=synth_tiny,
                               calibrate_split="val", evaluate=(synth_tiny, "test"), threads=1, timing_repeats=1)  # fmt: skip
    assert record["input"] == read_sidecar(source)["input"] and record["calibration"]["split"] == "val"
    cost = record["recall_cost"]
    assert cost["descriptor_difference"]["mean_cosine"] >= INT8_MEAN_COSINE
    assert 0.5 <= cost["top1_agreement"] <= 1.0 and cost["size_ratio"] < 0.4
    graph = session(tmp_path / "frames.int8.onnx")
    assert [(i.name, i.type) for i in graph.get_inputs()] == [("frames", "tensor(uint8)")]


def test_cli_precision_exports(tmp_path: Path, synth_tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.deploy.helpers import save_tiny_model
    from vprdistill.cli.main import main
    from vprdistill.deploy.export import sidecar_path

    stem = save_tiny_model(tmp_path)
    base = ["export", "--model", str(stem), "--format", "onnx", "--image-size", "32"]
    # int8 needs calibration images: refused before anything is exported.
    refused = tmp_path / "refused.int8.onnx"
    assert main([*base, "--out", str(refused), "--precision", "int8"]) == 1
    assert "--calibrate" in capsys.readouterr().err
    assert not refused.exists() and not (tmp_path / "refused.fp32.onnx").exists()
    # fp16 with its recall cost: the checked float32 graph sits beside it.
    out = tmp_path / "student.fp16.onnx"
    assert main([*base, "--out", str(out), "--precision", "fp16", "--eval-dataset", str(synth_tiny)]) == 0
    assert (tmp_path / "student.fp32.onnx").is_file() and out.is_file()
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["precision"] == "fp16"
    cost = sidecar["recall_cost"]
    assert set(cost["recall"]) == {"fp32", "fp16"} and cost["top1_agreement"] >= 0.9

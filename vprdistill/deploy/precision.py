"""fp16 and int8 versions of an exported ONNX place model, and what they cost in recall.

The source is a float32 graph written by ``export.export_onnx`` with its sidecar
``<file>.onnx.json``; the sidecar's ``input`` record says how to feed it:
``images`` `(B, 3, H, W)` float32, ImageNet-normalised, at ``image_size``, or
(frame-in graphs) `(B, H_in, W_in, 3)` uint8 frames in ``channel_order``.

- **fp16** (:func:`convert_fp16`): ``onnxruntime.transformers.float16``
  converts weights and compute to float16 with ``keep_io_types``, so inputs and
  outputs keep their types and the caller feeds the graph as before. The
  descriptor head (every node from the first ``Pow`` / ``ReduceL2`` /
  ``ReduceSumSquare`` / ``LpNormalization`` on, see :data:`FP16_HEAD_OPS`) stays
  float32: GeM's ``x^p`` and the sum of squares of an L2 norm are where
  float16 (largest value 65504) overflows, and the head holds few weights.
- **int8** (:func:`quantize_int8`): ``quant_pre_process`` (symbolic and ONNX
  shape inference plus ONNX Runtime's graph optimisation, which ONNX Runtime
  recommends before QDQ quantisation; when symbolic inference fails on a
  graph, as on the dynamo-exported TSCM teacher, it is retried without it),
  then ``quantize_static`` in QDQ format: signed 8-bit per-channel weights,
  8-bit activations with ranges from min/max calibration on the map's own
  images. Activations are unsigned by default (``activations="uint8"``, U8S8),
  which ONNX Runtime advises for x86 CPUs and which ran 2.5-4× faster than
  float32 on an AMD EPYC with VNNI, where signed activations (S8S8, its
  advice for ARM) were barely faster than float32; ``activations="int8"``
  gives S8S8. Both have the same 256 levels per tensor.
- Before anything is written, the converted graph and the source describe the
  same images (evaluation queries, else calibration images, else random
  input); non-finite descriptors, descriptors no longer unit length, or a
  cosine similarity below ``min_cosine`` raise :class:`PrecisionCheckError`.
- **Recall cost** (:func:`precision_cost`): both graphs describe a split's
  database and queries with ONNX Runtime on the CPU; Recall@N comes from
  ``eval.evaluate.evaluate_descriptors`` (what ``vprdistill eval`` reports:
  exact inner-product search, positives within ``threshold_m`` by UTM
  position), with the share of queries whose top-1 match is the same for
  both, the descriptor difference, ms per image at batches 1 and 8, and file
  sizes.

:func:`convert_precision` does all of it; the converted ``.onnx`` and its
sidecar are written atomically, and only once every step has passed. The
sidecar is the source's (input and output records, model config,
fingerprint, image size) with ``precision``, ``sha256``, ``file_bytes``,
``conversion``, ``calibration``, ``precision_check`` and ``recall_cost``; the
source's own export check (``atol``, ``max_abs_diff``, ...) moves under
``source.export_check``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, image_size_hw
from vprdistill.deploy.export import INPUT_NAME, OUTPUT_NAME, onnx_session, sidecar_path
from vprdistill.deploy.frame_graph import check_channel_order
from vprdistill.eval.recall import DEFAULT_QUERIES_WITHOUT_POSITIVE, QueriesWithoutPositive
from vprdistill.utils.atomic import atomic_path, atomic_write_json
from vprdistill.utils.extras import require
from vprdistill.utils.hashing import file_sha256
from vprdistill.utils.logging import get_logger

if TYPE_CHECKING:
    from vprdistill.data.place_dataset import PlaceDataset

__all__ = [
    "FP16_HEAD_OPS",
    "PRECISIONS",
    "CostOptions",
    "GraphInput",
    "ImageCalibrationReader",
    "PrecisionCheckError",
    "check_precision_arguments",
    "convert_fp16",
    "convert_precision",
    "describe_images",
    "float32_path_for",
    "precision_cost",
    "quantize_int8",
    "read_sidecar",
]

PRECISIONS = ("fp16", "int8")
#: Ops from which on (with everything downstream of them) an fp16 graph keeps float32: see the module docstring.
FP16_HEAD_OPS = ("Pow", "ReduceL2", "ReduceSumSquare", "LpNormalization")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_MAX_CALIBRATION_IMAGES = 256
DEFAULT_RECALL_NS = (1, 5, 10)
TIMING_BATCHES = (1, 8)
CHECK_IMAGES = 16
# Below this cosine similarity to the float32 descriptors a conversion is broken, not imprecise: the lowest
# measured were 0.9999 (fp16) and 0.987 (int8 calibrated on another area), trained and untrained models.
DEFAULT_MIN_COSINE = 0.9
UNIT_NORM_ATOL = 1e-2
# Fields of an export sidecar that describe how the float32 graph matched PyTorch: in a converted graph's
# sidecar they move under "source", so that they are not read as the converted graph's own agreement.
_EXPORT_CHECK_FIELDS = ("atol", "atol_eager", "max_abs_diff", "max_abs_diff_eager", "min_cosine", "check")
ACTIVATION_TYPES = ("int8", "uint8")
log = get_logger("deploy.precision")


class PrecisionCheckError(RuntimeError):
    """The converted graph is broken: non-finite descriptors, no longer unit length, or far from float32's."""


# --------------------------------------------------------------------------- sidecar and input


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar record ``<file>.onnx.json`` of an exported graph; errors name the file."""
    path = sidecar_path(onnx_path)
    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} not found")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the sidecar written by `vprdistill export` next to {onnx_path} says how to feed the graph"
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")  # noqa: TRY004 (a file error)
    return record


class GraphInput:
    """How to feed a graph, from its sidecar: normalised float32 `(B, 3, H, W)` or uint8 frames `(B, H_in, W_in, 3)`.

    ``image_size`` is the `(H, W)` the graph describes at (float32 graphs take
    exactly that size; frame-in graphs take any frame size and resize inside).
    """

    def __init__(self, name: str, frames: bool, image_size: tuple[int, int], channel_order: str = "RGB") -> None:
        self.name = name
        self.frames = frames
        self.image_size = image_size_hw(image_size)
        self.channel_order = check_channel_order(channel_order)

    @classmethod
    def from_sidecar(cls, record: dict[str, Any], where: str | Path = "sidecar") -> GraphInput:
        """Read the ``input`` record (and ``image_size``) of a sidecar; ``where`` names it in errors."""
        spec = record.get("input")
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: field 'input' is missing or not an object")  # noqa: TRY004 (a file error)
        size = record.get("image_size") or spec.get("image_size")
        if size is None:
            raise ValueError(f"{where}: field 'image_size' is missing")
        dtype = str(spec.get("dtype", "float32")).lower()
        layout = str(spec.get("layout", "NCHW")).upper()
        name = str(spec.get("name", INPUT_NAME))
        if dtype == "uint8" and layout == "NHWC":
            return cls(name, True, size, spec.get("channel_order", "RGB"))
        if dtype == "float32" and layout == "NCHW":
            normalisation = spec.get("normalisation") or {}
            for key, expected in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
                found = normalisation.get(key, expected)
                if len(found) != 3 or not np.allclose(found, expected, atol=1e-6):
                    raise ValueError(
                        f"{where}: input normalisation {key} {found} is not ImageNet's {list(expected)}, "
                        "which is the only one this package feeds"
                    )
            return cls(name, False, size)
        raise ValueError(
            f"{where}: input dtype {dtype!r} with layout {layout!r} is not one this package feeds "
            "(float32 NCHW, or uint8 NHWC frames)"
        )

    @cached_property
    def _transform(self):
        from vprdistill.data.transforms import build_transform

        return build_transform(self.image_size)

    def load(self, path: str | Path) -> np.ndarray:
        """One image as the graph takes it: `(3, H, W)` float32, or a `(H_in, W_in, 3)` uint8 frame."""
        from vprdistill.data.images import load_image

        image = load_image(path)
        if not self.frames:
            return self._transform(image).numpy()
        frame = np.asarray(image, dtype=np.uint8)
        return np.ascontiguousarray(frame[..., ::-1] if self.channel_order == "BGR" else frame)

    def random(self, batch: int, seed: int = 0) -> np.ndarray:
        """A random batch of the right type: normal float32 `(B, 3, H, W)` or uniform uint8 `(B, H, W, 3)`."""
        rng = np.random.default_rng(seed)
        if self.frames:
            return rng.integers(0, 256, (batch, *self.image_size, 3), dtype=np.uint8)
        return rng.standard_normal((batch, 3, *self.image_size), dtype=np.float32)

    def batches(self, paths: Sequence[str | Path], batch_size: int) -> Iterator[np.ndarray]:
        """Batches of ``paths`` in order, at most ``batch_size`` each.

        Frames of different sizes cannot share a batch, so a frame-in batch also
        ends where the frame size changes.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pending: list[np.ndarray] = []
        for path in paths:
            array = self.load(path)
            if pending and (len(pending) == batch_size or array.shape != pending[0].shape):
                yield np.stack(pending)
                pending = []
            pending.append(array)
        if pending:
            yield np.stack(pending)


# --------------------------------------------------------------------------- sessions and descriptors


def _session(path: str | Path, graph_input: GraphInput, threads: int | None = None):
    """An ONNX Runtime CPU session whose one input is the one the sidecar describes (name and element type)."""
    session = onnx_session(path, threads=threads)
    inputs = session.get_inputs()
    expected_type = "tensor(uint8)" if graph_input.frames else "tensor(float)"
    if len(inputs) != 1 or inputs[0].name != graph_input.name or inputs[0].type != expected_type:
        found = [(i.name, i.type) for i in inputs]
        raise ValueError(
            f"{path}: graph inputs {found} do not match the sidecar ({graph_input.name!r}, {expected_type})"
        )
    return session


def describe_images(
    session, graph_input: GraphInput, paths: Sequence[str | Path], batch_size: int = 32, output_name: str = OUTPUT_NAME
) -> np.ndarray:
    """Descriptors `(N, D)` float32 of ``paths`` through an ONNX Runtime session, in order."""
    rows = [
        session.run([output_name], {graph_input.name: batch})[0] for batch in graph_input.batches(paths, batch_size)
    ]
    if not rows:
        raise ValueError("describe_images: no images given")
    return np.concatenate(rows).astype(np.float32, copy=False)


def _ms_per_image(session, graph_input: GraphInput, batch: np.ndarray, output_name: str, repeats: int) -> float:
    """Best of ``repeats`` timed runs after one warm-up, per image (the least noisy estimate on a shared machine)."""
    from vprdistill.deploy.bench import best_seconds

    seconds = best_seconds(lambda: session.run([output_name], {graph_input.name: batch}), repeats)
    return 1e3 * seconds / len(batch)


def _timing_batch(graph_input: GraphInput, paths: Sequence[Path], batch: int) -> np.ndarray:
    """``batch`` real images: the first ones (up to the first change of frame size), repeated if there are fewer."""
    images = next(graph_input.batches(paths[:batch], batch))
    return np.resize(images, (batch, *images.shape[1:]))  # rows repeat in order: images[i % len(images)]


def _difference(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max / mean absolute difference and min / mean cosine similarity of two `(N, D)` descriptor sets."""
    if reference.shape != other.shape:
        raise PrecisionCheckError(f"descriptor shapes differ: float32 {reference.shape}, converted {other.shape}")
    absolute = np.abs(other.astype(np.float64) - reference)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    cosine = np.sum(reference.astype(np.float64) * other, axis=1) / np.maximum(norms, 1e-12)
    return {"max_abs": float(absolute.max()), "mean_abs": float(absolute.mean()),
            "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}  # fmt: skip


def _evenly_spaced(paths: Sequence[Path], count: int) -> list[Path]:
    """``count`` of ``paths`` spread over the whole list (a route's images are in order along it)."""
    if count >= len(paths):
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


# --------------------------------------------------------------------------- fp16


def _consumers(graph) -> dict[str, list[Any]]:
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _fp16_head_nodes(graph, head_ops: Sequence[str]) -> list[str]:
    """Names of the nodes to keep float32.

    The head: the nodes of an op in ``head_ops`` and every node downstream of
    one. With them, the constant computations that feed only the head (GeM's
    ``1 / p``, a norm's epsilon), which would otherwise be rounded to float16
    and cast back. ``graph`` must be topologically sorted, as exported graphs are.
    """
    consumers = _consumers(graph)
    head: set[str] = set()
    frontier = [node for node in graph.node if node.op_type in set(head_ops)]
    while frontier:
        node = frontier.pop()
        if node.name in head:
            continue
        head.add(node.name)
        for output in node.output:
            frontier.extend(consumers.get(output, []))
    static = {tensor.name for tensor in graph.initializer} | {""}
    static_nodes = []
    for node in graph.node:
        if all(name in static for name in node.input):  # Constant nodes have no inputs
            static.update(node.output)
            static_nodes.append(node)
    kept = set(head)
    for node in reversed(static_nodes):  # consumers first, so chains of constant nodes are kept whole
        users = [user for output in node.output for user in consumers.get(output, [])]
        if users and all(user.name in kept for user in users):
            kept.add(node.name)
    return sorted(kept)


def _cast_to(node) -> int | None:
    return next((attribute.i for attribute in node.attribute if attribute.name == "to"), None)


def _remove_float16_round_trips(graph, kept: Sequence[str]) -> int:
    """Remove float32 → float16 → float32 Cast pairs after kept nodes; return how many float16 tensors went.

    ``convert_float_to_float16`` casts every output of a kept node to float16
    and casts it back for the next kept node, so without this the head would
    still round (and overflow above 65504) between each of its nodes. The cast
    back becomes an Identity of the float32 tensor: its output keeps its name,
    so no reader (graph outputs included) needs rewiring.
    """
    import onnx

    kept = set(kept)
    producers = {output: node for node in graph.node for output in node.output}
    consumers = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    removed = []
    for cast in graph.node:
        if cast.op_type != "Cast" or _cast_to(cast) != onnx.TensorProto.FLOAT16:
            continue
        source, rounded = cast.input[0], cast.output[0]
        producer = producers.get(source)
        users = consumers.get(rounded, [])
        if producer is None or producer.name not in kept or rounded in graph_outputs or not users:
            continue
        if not all(user.op_type == "Cast" and _cast_to(user) == onnx.TensorProto.FLOAT for user in users):
            continue  # a float16 node reads it too: the cast is needed
        for user in users:
            user.op_type = "Identity"
            del user.attribute[:]
            user.input[0] = source
        removed.append(cast)
    for cast in removed:
        graph.node.remove(cast)
    stale = [info for info in graph.value_info if info.name in {cast.output[0] for cast in removed}]
    for info in stale:
        graph.value_info.remove(info)
    return len(removed)


def _drop_duplicate_casts(graph) -> int:
    """Remove repeated identical Cast nodes; return how many.

    ``convert_float_to_float16`` adds one float16 → float32 Cast per blocked
    consumer of a tensor, all with the same name and output, so a tensor that
    feeds two kept nodes would be defined twice (an invalid graph). The copies
    compute the same value, so one of each is kept.
    """
    seen, duplicates = set(), []
    for node in graph.node:
        if node.op_type != "Cast":
            continue
        key = (node.name, tuple(node.input), tuple(node.output), node.SerializeToString())
        if key in seen:
            duplicates.append(node)
        seen.add(key)
    for node in duplicates:
        graph.node.remove(node)
    return len(duplicates)


def _convert_fp16_file(src: Path, dst: Path, head_ops: Sequence[str]) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    for index, node in enumerate(model.graph.node):
        if not node.name:  # the block list names nodes; exporters name them all, but the format does not require it
            node.name = f"{node.op_type}_{index}"
    kept = _fp16_head_nodes(model.graph, head_ops)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=kept)
    dropped = _drop_duplicate_casts(converted.graph)
    round_trips = _remove_float16_round_trips(converted.graph, kept)
    # The converter appends its Cast nodes at the end; ONNX Runtime sorts on load, but the checker and other
    # runtimes expect every node after the producers of its inputs (a stable sort: the order is kept where it can be).
    OnnxModel.graph_topological_sort(converted.graph)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
            "float32_head_ops": list(head_ops), "float32_nodes": len(kept), "nodes": len(model.graph.node),
            "duplicate_casts_dropped": dropped, "float16_round_trips_removed": round_trips}  # fmt: skip


# --------------------------------------------------------------------------- int8


class ImageCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over image files.

    ``get_next()`` returns ``{input name: batch}`` — `(B, 3, H, W)` float32
    normalised images or `(B, H_in, W_in, 3)` uint8 frames, as ``graph_input``
    says — and ``None`` once every image was given. Images are read lazily, a
    batch at a time.
    """

    def __init__(self, graph_input: GraphInput, paths: Sequence[str | Path], batch_size: int = 8) -> None:
        if not paths:
            raise ValueError("ImageCalibrationReader: no calibration images given")
        self.graph_input = graph_input
        self.paths = [Path(p) for p in paths]
        self.batch_size = int(batch_size)
        self.rewind()

    def rewind(self) -> None:
        self._batches = self.graph_input.batches(self.paths, self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.graph_input.name: batch}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item


def _pre_process(src: Path, dst: Path) -> dict[str, Any]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return {"symbolic_shape_inference": True, "optimisation": True}
    except Exception as error:  # noqa: BLE001 (symbolic inference raises assorted errors on ops it does not model)
        log.warning("symbolic shape inference failed (%s: %s); quantising with ONNX shape inference only",
                    type(error).__name__, str(error)[:200])  # fmt: skip
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return {"symbolic_shape_inference": False, "optimisation": True}


def _quantize_int8_file(
    src: Path, dst: Path, reader: ImageCalibrationReader, work: Path, per_channel: bool, method: str, activations: str
) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if activations not in ACTIVATION_TYPES:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {activations!r}")
    prepared = work / "preprocessed.onnx"
    pre = _pre_process(src, prepared)
    calibrate_method = {member.name.lower(): member for member in CalibrationMethod}[method]
    quantize_static(
        str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=calibrate_method,
    )  # fmt: skip
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "activations": activations,
            "weights": "int8", "per_channel": bool(per_channel), "calibration_method": method,
            "pre_process": pre}  # fmt: skip


# --------------------------------------------------------------------------- recall cost


@dataclass(frozen=True)
class CostOptions:
    """How :func:`precision_cost` measures (and :func:`convert_precision` passes on as keywords).

    ``threshold_m``, ``recall_ns``, ``queries_without_positive``: Recall@N as
    ``vprdistill eval`` computes it; ``batch_size``: images per ONNX Runtime run;
    ``threads``: its intra-op threads (None: its default); ``timing_batches``,
    ``timing_repeats``: the batch sizes timed, best of how many runs.
    """

    threshold_m: float = 25.0
    recall_ns: Sequence[int] = DEFAULT_RECALL_NS
    queries_without_positive: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE
    batch_size: int = 32
    threads: int | None = None
    timing_batches: Sequence[int] = TIMING_BATCHES
    timing_repeats: int = 5


def precision_cost(
    fp32_onnx: str | Path,
    other_onnx: str | Path,
    dataset: PlaceDataset,
    options: CostOptions | None = None,
    *,
    names: tuple[str, str] = ("fp32", "other"),
    graph_input: GraphInput | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """What ``other_onnx`` costs against ``fp32_onnx`` on ``dataset`` (ONNX Runtime, CPU).

    ``options`` (or its ``fields`` as keywords, over the defaults) say how, see
    :class:`CostOptions`. Both graphs take the input the float32 graph's sidecar
    describes (unless ``graph_input`` is given). Returns a JSON-able dict keyed by ``names``:

    - ``recall``: ``{name: {"N": percent}}``, Recall@N as ``vprdistill eval``
      computes it (exact search, positives within ``threshold_m`` metres);
    - ``recall_delta``: other − fp32, in points;
    - ``top1_agreement``: share (0–1) of queries whose top-1 database match is
      the same image for both (``top1_agreement_count`` of ``num_queries``);
      ``top1_same_place``: share whose two top-1 matches lie within ``threshold_m``
      (None for a dataset without database positions);
    - ``descriptor_difference``: ``max_abs``, ``mean_abs``, ``min_cosine``,
      ``mean_cosine`` over the `(N + M, D)` database and query descriptors;
    - ``ms_per_image``: ``{name: {"B": ms}}`` for each batch size in
      ``timing_batches`` (best of ``timing_repeats`` after a warm-up, real images);
    - ``file_bytes`` and ``size_ratio`` (other / fp32); dataset, split, counts,
      threshold, convention and threads.
    """
    from vprdistill.eval.evaluate import evaluate_descriptors

    options = replace(options or CostOptions(), **fields)
    threshold_m, batch_size, threads = options.threshold_m, options.batch_size, options.threads
    fp32_onnx, other_onnx = Path(fp32_onnx), Path(other_onnx)
    record = read_sidecar(fp32_onnx)
    graph_input = graph_input or GraphInput.from_sidecar(record, sidecar_path(fp32_onnx))
    output_name = str((record.get("output") or {}).get("name", OUTPUT_NAME))
    paths = {"database": list(dataset.database_paths), "queries": list(dataset.query_paths)}
    results, descriptors, timings = {}, {}, {}
    timing_inputs = {b: _timing_batch(graph_input, paths["queries"], int(b)) for b in options.timing_batches}
    for name, path in zip(names, (fp32_onnx, other_onnx)):
        session = _session(path, graph_input, threads)
        start = time.perf_counter()
        database = describe_images(session, graph_input, paths["database"], batch_size, output_name)
        queries = describe_images(session, graph_input, paths["queries"], batch_size, output_name)
        log.info("%s: %d descriptors in %.1f s", name, len(database) + len(queries), time.perf_counter() - start)
        if not (np.isfinite(database).all() and np.isfinite(queries).all()):
            raise PrecisionCheckError(f"{path}: non-finite descriptors on {dataset!r}")
        descriptors[name] = (database, queries)
        results[name] = evaluate_descriptors(
            database, queries, dataset, threshold_m=threshold_m, recall_ns=options.recall_ns,
            queries_without_positive=options.queries_without_positive,
        )  # fmt: skip
        timings[name] = {str(b): _ms_per_image(session, graph_input, batch, output_name, options.timing_repeats)
                         for b, batch in timing_inputs.items()}  # fmt: skip
    reference, other = names
    first = {name: results[name].predictions[:, 0] for name in names}
    top1 = first[reference] == first[other]
    # Neighbouring database images of a route are often near-ties: a changed top-1 that lies within the
    # threshold of the float32 one moves the answer by less than the ground truth's tolerance.
    same_place = None
    if getattr(dataset, "has_positions", True):  # ground truth given as lists may come without positions
        positions = dataset.database_utm
        apart = np.linalg.norm(positions[first[reference]] - positions[first[other]], axis=1)
        same_place = float(np.mean(apart <= threshold_m))
    sizes = {reference: fp32_onnx.stat().st_size, other: other_onnx.stat().st_size}
    return {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "split": dataset.split,
        "num_database": dataset.num_database,
        "num_queries": dataset.num_queries,
        "threshold_m": float(threshold_m),
        "queries_without_positive": results[reference].queries_without_positive,
        "num_queries_without_positive": results[reference].num_queries_without_positive,
        "recall": {name: dict(result.recall) for name, result in results.items()},
        "recall_delta": {n: results[other].recall[n] - results[reference].recall[n] for n in results[reference].recall},
        "top1_agreement": float(top1.mean()),
        "top1_agreement_count": int(top1.sum()),
        "top1_same_place": same_place,
        "descriptor_difference": _difference(
            np.concatenate(descriptors[reference]), np.concatenate(descriptors[other])
        ),
        "ms_per_image": timings,
        "file_bytes": sizes,
        "size_ratio": sizes[other] / sizes[reference],
        "threads": threads,
        "runtime": "onnxruntime CPUExecutionProvider",
    }


# --------------------------------------------------------------------------- the whole conversion


def check_precision_arguments(precision: str, calibrate: Any = None, calibration_images: Any = None) -> None:
    """Raise ``ValueError`` before any work when ``precision`` is unknown or int8 has no calibration images."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibrate is None and not calibration_images:
        raise ValueError(
            "int8 quantisation needs calibration images to fix its activation ranges: give --calibrate DATASET "
            "(calibrate=DATASET, or calibration_images=[paths]), e.g. the dataset of the map the model will match against"
        )


def float32_path_for(out_path: str | Path) -> Path:
    """Where the float32 graph goes when ``out_path`` holds another precision.

    ``student.int8.onnx`` → ``student.fp32.onnx`` (a ``.fp16`` / ``.int8`` before the suffix is replaced),
    ``student.onnx`` → ``student.fp32.onnx``.
    """
    out_path = Path(out_path)
    stem = out_path.stem
    for precision in PRECISIONS:
        if stem.endswith(f".{precision}"):
            stem = stem[: -len(precision) - 1]
    return out_path.with_name(f"{stem}.fp32{out_path.suffix or '.onnx'}")


def _as_eval_spec(evaluate: Any) -> tuple[Path, str]:
    if isinstance(evaluate, (str, Path)):
        return Path(evaluate), "test"
    try:
        root, split = evaluate
    except (TypeError, ValueError) as error:
        raise ValueError(f"evaluate takes a dataset path or (dataset path, split), got {evaluate!r}") from error
    return Path(root), str(split)


def convert_precision(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    precision: str,
    calibrate: str | Path | None = None,
    evaluate: tuple[str | Path, str] | str | Path | None = None,
    *,
    calibrate_split: str = "test",
    calibration_images: Sequence[str | Path] | None = None,
    max_calibration_images: int = DEFAULT_MAX_CALIBRATION_IMAGES,
    calibration_method: str = "minmax",
    activations: str = "uint8",
    per_channel: bool = True,
    fp16_head_ops: Sequence[str] = FP16_HEAD_OPS,
    min_cosine: float = DEFAULT_MIN_COSINE,
    reader: str = "auto",
    dataset_name: str | None = None,
    **cost_options: Any,
) -> dict[str, Any]:
    """Write ``dst_onnx`` (``precision`` ``fp16`` or ``int8``) from the float32 graph ``src_onnx``; return its sidecar.

    Args:
        src_onnx: a float32 graph with its sidecar (``vprdistill export``).
        dst_onnx: the converted graph; ``<dst>.onnx.json`` gets the sidecar.
        precision: ``fp16`` or ``int8``.
        calibrate: int8: a dataset whose ``calibrate_split`` database images
            (the map's own images; at most ``max_calibration_images``, spread
            along the database) calibrate the activation ranges. Ignored for fp16.
        evaluate: a dataset path (split ``test``) or ``(path, split)`` on which
            :func:`precision_cost` measures the recall cost; None skips it.
        calibration_images: int8: image paths to calibrate on instead of ``calibrate``.
        activations: int8: ``uint8`` (U8S8, the x86 choice) or ``int8`` (S8S8, the ARM choice).
        cost_options: the fields of :class:`CostOptions` (``threshold_m``, ``recall_ns``,
            ``queries_without_positive``, ``batch_size``, ``threads``, ``timing_batches``,
            ``timing_repeats``); ``threads`` (ONNX Runtime intra-op threads) also runs the check.
        fp16_head_ops: fp16: the ops from which on the graph stays float32 (``()``: all float16).
        min_cosine: the check on a few images (evaluation queries, else calibration images,
            else random input) refuses a conversion whose cosine similarity to the float32
            descriptors falls below this.

    Returns:
        The sidecar record written next to ``dst_onnx``.

    Raises:
        ValueError: unknown precision, int8 without calibration images, a
            source that is not float32, ``dst_onnx`` the same file as ``src_onnx``.
        PrecisionCheckError: the converted graph gives non-finite descriptors,
            descriptors that are no longer unit length, or ones below ``min_cosine``
            (nothing is written then).
    """
    onnx = require("onnx", "export", "the fp16 / int8 conversion")
    onnxruntime = require("onnxruntime", "export", "the fp16 / int8 conversion")

    from vprdistill.data.readers import open_dataset

    check_precision_arguments(precision, calibrate, calibration_images)
    cost = CostOptions(**cost_options)
    src, dst = Path(src_onnx), Path(dst_onnx)
    source_record = read_sidecar(src)
    where = sidecar_path(src)
    if source_record.get("precision", "fp32") != "fp32":
        raise ValueError(f"{where}: the source is {source_record['precision']}; convert from the float32 graph")
    if dst.resolve() == src.resolve() or sidecar_path(dst).resolve() == where.resolve():
        raise ValueError(f"the converted model {dst} would replace its float32 source {src}")
    graph_input = GraphInput.from_sidecar(source_record, where)

    # Datasets are opened first, so a wrong path fails before minutes of conversion.
    calibration: dict[str, Any] | None = None
    images: list[Path] | None = None
    if precision == "int8":
        if calibration_images:
            images = [Path(p) for p in calibration_images]
            calibration = {"dataset": None, "split": None, "subset": "given", "n_images": len(images)}
        else:
            calibration_set = open_dataset(calibrate, split=calibrate_split, reader=reader, name=dataset_name)
            images = _evenly_spaced(calibration_set.database_paths, max_calibration_images)
            calibration = {"dataset": calibration_set.name, "root": str(calibrate), "split": calibration_set.split,
                           "subset": "database", "n_images": len(images),
                           "n_available": calibration_set.num_database}  # fmt: skip
        calibration["method"] = calibration_method
    elif calibrate is not None or calibration_images:
        log.warning("calibration images are used by int8 only; ignored for %s", precision)
    eval_set = None
    if evaluate is not None:
        eval_root, eval_split = _as_eval_spec(evaluate)
        eval_set = open_dataset(eval_root, split=eval_split, reader=reader, name=dataset_name)

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", dir=dst.parent) as folder:
        work = Path(folder)
        converted = work / "converted.onnx"
        start = time.perf_counter()
        if precision == "fp16":
            conversion = _convert_fp16_file(src, converted, fp16_head_ops)
        else:
            calibration_reader = ImageCalibrationReader(graph_input, images or [])
            conversion = _quantize_int8_file(
                src, converted, calibration_reader, work, per_channel, calibration_method, activations
            )
        conversion["seconds"] = time.perf_counter() - start
        check = _check_converted(src, converted, graph_input, eval_set, images, cost.threads, source_record, min_cosine)
        recall_cost = None
        if eval_set is not None:
            recall_cost = precision_cost(
                src, converted, eval_set, cost, names=("fp32", precision), graph_input=graph_input
            )
        record = {key: value for key, value in source_record.items() if key not in _EXPORT_CHECK_FIELDS}
        export_check = {key: source_record[key] for key in _EXPORT_CHECK_FIELDS if key in source_record}
        record.update({
            "onnx_file": dst.name,
            "precision": precision,
            "sha256": file_sha256(converted),
            "file_bytes": converted.stat().st_size,
            "source": {"onnx_file": src.name, "precision": "fp32", "sha256": file_sha256(src),
                       "file_bytes": src.stat().st_size, "export_check": export_check},
            "conversion": conversion,
            "calibration": calibration,
            "precision_check": check,
            "recall_cost": recall_cost,
            "versions": {**(record.get("versions") or {}), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        })  # fmt: skip
        with atomic_path(dst) as tmp:
            shutil.copyfile(converted, tmp)
    atomic_write_json(sidecar_path(dst), record)
    return record


def _check_converted(
    src: Path,
    converted: Path,
    graph_input: GraphInput,
    eval_set: PlaceDataset | None,
    calibration_images: Sequence[Path] | None,
    threads: int | None,
    source_record: dict[str, Any],
    min_cosine: float,
) -> dict[str, Any]:
    """Describe a few images with both graphs; raise when the converted one is broken, not merely less precise.

    Broken: a non-finite descriptor, descriptors that are no longer unit length
    when the float32 ones are, or a cosine similarity below ``min_cosine``.
    """
    if eval_set is not None:
        paths, source = eval_set.query_paths, f"queries of {eval_set.name} {eval_set.split}"
    else:
        paths, source = calibration_images or [], "calibration images" if calibration_images else "random input"
    batches = list(graph_input.batches(_evenly_spaced(list(paths), CHECK_IMAGES), CHECK_IMAGES))
    batches = batches or [graph_input.random(CHECK_IMAGES)]
    output_name = str((source_record.get("output") or {}).get("name", OUTPUT_NAME))
    found = {}
    for name, path in (("fp32", src), ("converted", converted)):
        session = _session(path, graph_input, threads)
        found[name] = np.concatenate([session.run([output_name], {graph_input.name: batch})[0] for batch in batches])
    if not np.isfinite(found["converted"]).all():
        raise PrecisionCheckError(
            f"the converted graph gives non-finite descriptors on {source} where the float32 graph "
            f"{'does not' if np.isfinite(found['fp32']).all() else 'does too'}; nothing was written"
        )
    norms = np.linalg.norm(found["converted"], axis=1)
    if np.abs(np.linalg.norm(found["fp32"], axis=1) - 1).max() < 1e-3 and np.abs(norms - 1).max() > UNIT_NORM_ATOL:
        raise PrecisionCheckError(
            f"the converted graph's descriptors on {source} are no longer unit length (norms {norms.min():.3g} to "
            f"{norms.max():.3g}; an overflow or underflow inside the graph); nothing was written"
        )
    difference = _difference(found["fp32"], found["converted"])
    if not difference["min_cosine"] >= min_cosine:
        raise PrecisionCheckError(
            f"the converted graph's descriptors on {source} have cosine similarity down to "
            f"{difference['min_cosine']:.4f} with the float32 ones (below min_cosine {min_cosine:g}); nothing was written"
        )
    return {"inputs": source, "n_images": len(found["fp32"]), **difference}


def convert_fp16(src_onnx: str | Path, dst_onnx: str | Path, **options: Any) -> dict[str, Any]:
    """fp16 weights and compute, float32 I/O (``keep_io_types``); the descriptor head stays float32.

    ``options`` as :func:`convert_precision` (``evaluate=...`` adds the recall
    cost). Writes ``dst_onnx`` and its sidecar atomically; returns the sidecar.
    """
    return convert_precision(src_onnx, dst_onnx, "fp16", **options)


def quantize_int8(
    src_onnx: str | Path, dst_onnx: str | Path, calibration_images: Sequence[str | Path] | None, **options: Any
) -> dict[str, Any]:
    """Static int8 (QDQ, per-channel weights) calibrated on ``calibration_images`` (paths, e.g. a map's database).

    ``options`` as :func:`convert_precision`. Raises ``ValueError`` when no
    calibration image is given.
    """
    if not calibration_images:
        check_precision_arguments("int8", None, None)
    return convert_precision(src_onnx, dst_onnx, "int8", calibration_images=calibration_images, **options)

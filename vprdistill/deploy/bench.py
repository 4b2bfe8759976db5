"""Latency benchmark of a deployed model: descriptor time, matching time, memory, and the machine's limits.

Each figure comes with the limit it can be read against, measured in the same
run: descriptor throughput as a share of the machine's float32 matmul rate
(from the model's FLOPs), matching as a share of its memory bandwidth (from
the bytes a query reads).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprdistill.deploy.export import INPUT_NAME, export_onnx, onnx_session
from vprdistill.deploy.matching_bench import EXACT_MODE, applicable_modes, measure_mode, random_unit_rows
from vprdistill.models.inference import chunk_for, inference_copy, run_in_chunks
from vprdistill.utils.extras import require
from vprdistill.utils.logging import get_logger

log = get_logger("deploy.bench")
_BYTES_PER_VALUE = {"float32": 4, "float16": 2, "int8": 1}


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """Best wall-clock time of ``repeats`` calls after one warm-up (the least noisy estimate)."""
    seconds = []
    for _ in range(max(1, repeats) + 1):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])  # the first call is the warm-up


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 3) -> float:
    """Measured float32 matrix-product rate of ``device`` in GFLOP/s (a `(size, size)` square product)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = best_seconds(lambda: torch.matmul(a, b), repeats, device)
    return 2.0 * size**3 / seconds / 1e9


def memory_bandwidth_gbs(device: torch.device, megabytes: int = 256, repeats: int = 3) -> dict[str, float]:
    """Measured memory bandwidth of ``device`` in GB/s: ``read`` (a sum) and ``copy`` (read + write)."""
    values = megabytes * 2**20 // 4
    source = torch.ones(values, device=device)
    target = torch.empty_like(source)
    read = best_seconds(lambda: source.sum(), repeats, device)
    copy = best_seconds(lambda: target.copy_(source), repeats, device)
    nbytes = source.numel() * 4
    return {"read": nbytes / read / 1e9, "copy": 2 * nbytes / copy / 1e9}


def model_gflops_per_image(model: torch.nn.Module, image_size: tuple[int, int], device: torch.device) -> float:
    """GFLOP of one forward pass per image, counted by ``torch.utils.flop_counter`` (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.zeros(2, 3, *image_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(images)
    return counter.get_total_flops() / 2 / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def time_pytorch(
    model: torch.nn.Module, image_size: tuple[int, int], batch: int, device: torch.device, repeats: int
) -> float:
    """ms per image of the eager model on a `(batch, 3, H, W)` input, run as ``eval`` runs it (CPU: chunks of 8)."""
    images = torch.randn(batch, 3, *image_size, device=device)
    with torch.inference_mode():
        seconds = best_seconds(lambda: run_in_chunks(model, images, chunk_for(device)), repeats, device)
    return 1e3 * seconds / batch


def time_onnxruntime(session: Any, image_size: tuple[int, int], batch: int, repeats: int) -> float:
    """ms per image of an ONNX Runtime session on a `(batch, 3, H, W)` input."""
    images = np.random.default_rng(0).standard_normal((batch, 3, *image_size), dtype=np.float32)
    seconds = best_seconds(lambda: session.run(None, {INPUT_NAME: images}), repeats)
    return 1e3 * seconds / batch


def available_providers() -> list[str]:
    """ONNX Runtime's execution providers usable here, fastest first (TensorRT, CUDA, then the CPU).

    The CPU wheel of ``onnxruntime`` has only the CPU provider; the ``gpu`` extra
    (``onnxruntime-gpu``) adds CUDA and TensorRT.
    """
    ort = require("onnxruntime", "export", "the ONNX Runtime benchmark")

    order = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    available = set(ort.get_available_providers())
    return [name for name in order if name in available]


def bench_descriptors(
    model: torch.nn.Module,
    image_size: tuple[int, int],
    batch_sizes: Sequence[int],
    device: torch.device,
    repeats: int,
    with_onnx: bool = True,
    opset: int = 17,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Rows ``{batch, pytorch_ms_per_image, onnxruntime_ms_per_image[, <provider>_ms_per_image…]}`` and the export record.

    PyTorch runs the inference copy on the CPU (BatchNorm folded, channels-last:
    ``vprdistill.models.inference``), as ``eval`` and the localizer do. ONNX
    Runtime is timed on every available provider; ``onnxruntime_ms_per_image`` is
    the first (fastest) provider's figure. The record is ``None`` without ONNX.
    """
    runner = inference_copy(model, device) if device.type == "cpu" else model
    rows = [
        {"batch": int(b), "pytorch_ms_per_image": time_pytorch(runner, image_size, b, device, repeats)}
        for b in batch_sizes
    ]
    if not with_onnx:
        return rows, None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        record = export_onnx(model, path, image_size, opset=opset)
        model.to(device)  # export moves the model to the CPU
        providers = available_providers() if device.type == "cuda" else ["CPUExecutionProvider"]
        record["providers"] = []
        for provider in providers:
            try:
                session = onnx_session(path, threads=torch.get_num_threads(), provider=provider)
            except Exception as error:  # a provider listed but unusable (no driver, no TensorRT libraries)
                log.warning("ONNX Runtime provider %s is unusable here: %s", provider, error)
                continue
            record["providers"].append(provider)
            short = provider.removesuffix("ExecutionProvider").lower()
            for row in rows:
                row[f"onnxruntime_{short}_ms_per_image"] = time_onnxruntime(session, image_size, row["batch"], repeats)
                row.setdefault("onnxruntime_ms_per_image", row[f"onnxruntime_{short}_ms_per_image"])
    return rows, record


def bench_matching(db_size: int, dim: int, num_queries: int, repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """ms per query of exact and compact matching against a random `(db_size, dim)` database."""
    rng = np.random.default_rng(seed)
    database = random_unit_rows(rng, db_size, dim)
    queries = random_unit_rows(rng, num_queries, dim)
    rows = []
    for mode in [EXACT_MODE, *applicable_modes(dim)]:
        if mode.pca_dim is not None and mode.pca_dim > db_size:
            continue
        row = measure_mode(mode, database, queries, k=min(10, db_size), repeats=repeats)
        row["bytes_per_query"] = db_size * int(row["stored_dim"]) * _BYTES_PER_VALUE[mode.dtype]
        rows.append(row)
    return rows


def run_benchmark(
    model: torch.nn.Module,
    image_size: tuple[int, int],
    batch_sizes: Sequence[int],
    device: torch.device,
    db_size: int,
    dim: int | None = None,
    num_queries: int = 100,
    repeats: int = 3,
    with_onnx: bool = True,
) -> dict[str, Any]:
    """The whole report of ``vprdistill bench`` (see docs/DEPLOYMENT.md for its fields)."""
    from vprdistill.eval.evaluate import model_summary

    model = model.to(device).eval()
    dim = int(dim or model.descriptor_dim)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info("timing descriptors at batch sizes %s", list(batch_sizes))
    descriptor_rows, export_record = bench_descriptors(model, image_size, batch_sizes, device, repeats, with_onnx)
    log.info("timing matching against %d × %d", db_size, dim)
    matching_rows = bench_matching(db_size, dim, num_queries, repeats)
    memory = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        memory["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    # The machine's limits are measured last so their large arrays do not count in the peaks above.
    log.info("measuring matmul rate and memory bandwidth")
    machine = {}
    for name, where in [("cpu", torch.device("cpu"))] + ([("device", device)] if device.type == "cuda" else []):
        machine[f"{name}_matmul_gflops"] = matmul_gflops(where)
        machine[f"{name}_memory_bandwidth_gbs"] = memory_bandwidth_gbs(where)
    peak_gflops = machine.get("device_matmul_gflops", machine["cpu_matmul_gflops"])
    gflops = model_gflops_per_image(model, image_size, device)
    for row in descriptor_rows:
        for runtime in ("pytorch", "onnxruntime"):
            if f"{runtime}_ms_per_image" in row:
                achieved = gflops / (row[f"{runtime}_ms_per_image"] / 1e3)
                row[f"{runtime}_gflops"] = achieved
                row[f"{runtime}_share_of_matmul_peak"] = achieved / peak_gflops
    read_bandwidth = machine["cpu_memory_bandwidth_gbs"]["read"]
    for row in matching_rows:
        achieved = row["bytes_per_query"] / (row["ms_per_query_single"] / 1e3) / 1e9
        row["single_query_gbs"] = achieved
        row["single_query_share_of_bandwidth"] = achieved / read_bandwidth
    return {
        "model": {
            **model_summary(model),
            "descriptor_dim": int(getattr(model, "descriptor_dim", dim)),
            "gflops_per_image": gflops,
        },  # fmt: skip
        "settings": {
            "image_size": list(image_size),
            "batch_sizes": [int(b) for b in batch_sizes],
            "device": str(device),
            "threads": torch.get_num_threads(),
            "db_size": int(db_size),
            "dim": dim,
            "num_queries": int(num_queries),
            "repeats": int(repeats),
        },  # fmt: skip
        "descriptors": descriptor_rows,
        "onnx": export_record,
        "matching": matching_rows,
        "memory": memory,
        "machine": machine,
    }

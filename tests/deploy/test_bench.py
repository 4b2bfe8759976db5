"""`vprdistill bench --json`: every figure is there and reads as a share of a measured limit."""

from __future__ import annotations

import json
from pathlib import Path

from vprdistill.cli.main import main


def test_bench_json_has_the_fields(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "resnet18-gem", "--image-size", "32", "--batch", "2", "--db-size", "300",
                 "--dim", "64", "--queries", "3", "--repeats", "1", "--json", str(out), "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    (row,) = report["descriptors"]
    assert row["batch"] == 2 and row["pytorch_ms_per_image"] > 0 and row["onnxruntime_ms_per_image"] > 0
    assert 0 < row["pytorch_share_of_matmul_peak"] and 0 < row["onnxruntime_share_of_matmul_peak"]
    assert max(report["onnx"]["max_abs_diff"].values()) <= 1e-4
    # The CPU wheel has one provider; its figure is the one reported as ONNX Runtime's.
    assert report["onnx"]["providers"] == ["CPUExecutionProvider"]
    assert row["onnxruntime_cpu_ms_per_image"] == row["onnxruntime_ms_per_image"]
    modes = {r["mode"]: r for r in report["matching"]}
    # PCA sizes at or above the 64-d test descriptors are left out: they would save nothing.
    assert set(modes) == {"exact-float32", "float16", "int8"}
    assert modes["int8"]["bytes_per_query"] * 4 == modes["exact-float32"]["bytes_per_query"] == 300 * 64 * 4
    for mode in modes.values():
        assert mode["ms_per_query_single"] > 0 and mode["ms_per_query_batched"] > 0
        assert mode["single_query_share_of_bandwidth"] > 0
    assert report["machine"]["cpu_matmul_gflops"] > 0
    assert report["machine"]["cpu_memory_bandwidth_gbs"]["read"] > 0
    assert report["memory"]["peak_rss_mb"] > 100  # torch alone takes more
    assert report["model"]["gflops_per_image"] > 0
    assert report["settings"]["db_size"] == 300 and report["settings"]["dim"] == 64

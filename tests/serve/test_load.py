"""A short run of benchmarks/serve_load.py against a real `vprdistill serve` subprocess on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.serve_load import (
    PHONE_SIZE,
    ServeProcess,
    decode_bound_mib,
    decode_growth_mib,
    hostile_payloads,
    hostile_requests,
    large_uploads,
    localisation_load,
    png_bytes,
)
from vprdistill.data.readers import open_dataset
from vprdistill.serve.limits import DEFAULT_DECODE_SLOTS, DEFAULT_MAX_PIXELS


@pytest.fixture(scope="module")
def queries(tiny_dataset: Path) -> list[tuple[bytes, str]]:
    dataset = open_dataset(tiny_dataset, "test")
    return [(p.read_bytes(), dataset.database_paths[row].name) for p, row in zip(dataset.query_paths, [1, 4, 7, 10])]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
def test_real_server_under_load_and_abuse(tiny_index: Path, queries: list[tuple[bytes, str]], tmp_path: Path) -> None:
    server = ServeProcess(tiny_index, ["--threads", "1"], log_path=tmp_path / "serve.log")
    server.launch()
    try:
        payloads, phone_png = hostile_payloads(), png_bytes(*PHONE_SIZE)  # made while the server starts
        server.wait_ready()
        hostile = hostile_requests(server.url, queries[0][0], payloads)
        assert hostile == {"no key": 401, "wrong key": 401, "non-image": 400, "64 MiB body": 413,
                           "39.7 MP PNG (116 KB)": 413, "400 MP PNG bomb": 413}, server.log_tail()  # fmt: skip

        load = localisation_load(server.url, queries, total=100, concurrency=8)
        assert load["ok"] == load["right"] == 100, (load, server.log_tail())

        # 16 simultaneous 12 MP uploads: decoded in Starlette's 40 threads, as before decoding had threads of
        # its own, they added 1.9 GB to the server's peak; two at a time, 4 bytes a pixel, about 100 MB.
        large = large_uploads(server, phone_png, count=16)
        assert large["statuses"] == [200] * 16, server.log_tail()
        bound = decode_bound_mib(DEFAULT_DECODE_SLOTS, DEFAULT_MAX_PIXELS / 1e6)
        assert decode_growth_mib(large) < bound, f"decoding added {decode_growth_mib(large):.0f} MiB > {bound:.0f}"
    finally:
        server.stop()

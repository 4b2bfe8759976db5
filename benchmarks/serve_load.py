"""Load test of ``vprdistill serve``: a real server process on loopback, called over HTTP.

One run, against one ``vprdistill serve`` subprocess with an API key:

- hostile requests: no key and a wrong key (401), a non-image (400), a 64 MiB
  body (413), a 116 KB PNG that decodes to 39.7 megapixels (413 from its header
  at the default 16 MP limit), a 400 MP PNG decompression bomb (413);
- ``--requests`` localisation requests at ``--concurrency`` (all must answer 200
  with the database image the query copies): p50/p99 latency and requests/s;
- ``--large`` simultaneous uploads of a 12 MP PNG (accepted at the default limit),
  with the server's resident memory before and its peak (``VmHWM`` of
  ``/proc/<pid>/status``, reset before the uploads) during them.

Then a second server, started with ``--max-megapixels 40``, takes ``--large``
simultaneous uploads of the 39.7 MP PNG, decoded ``--decode-slots`` at a time.
Both peaks are checked against the documented bound of the memory decoding
adds (``decode_memory_bound``). The map is a tiny model and index built in a
temporary folder (the fixtures of the test suite), so the figures measure the
service, not a network.

    python benchmarks/serve_load.py [--requests 500] [--concurrency 8] [--large 16] [--no-write]
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import REPO_ROOT, machine_description, today, update_section  # noqa: E402

API_KEY = "load-test-key"
LARGE_SIZE = (7280, 5456)  # 39.7 megapixels from 116 KB of PNG
PHONE_SIZE = (4000, 3000)  # 12 megapixels, a phone photo: under the default limit
BOMB_SIDE = 20_000  # 400 megapixels of grey from a few hundred kilobytes
MIB = 2**20


@functools.lru_cache(maxsize=8)  # a few hundred kilobytes each, a second to make the largest
def png_bytes(width: int, height: int, channels: int = 3, value: int = 0) -> bytes:
    """A PNG of one flat colour, compressed row by row so that a huge image costs no memory to make."""
    colour_type = {1: 0, 3: 2}[channels]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * (width * channels)  # filter byte "none", then the pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_status_kib(pid: int, field_name: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no {field_name}")


def reset_peak_rss(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); ``False`` where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class ServeProcess:
    """``vprdistill serve`` in a subprocess on a free loopback port, with ``API_KEY`` required."""

    index: Path
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process (importing torch takes it several seconds to listen; see ``wait_ready``)."""
        self.port = free_port()
        command = [sys.executable, "-m", "vprdistill", "serve", "--index", str(self.index), "--port", str(self.port),
                   "--device", "cpu", "--log-level", "warning", *self.extra_args]  # fmt: skip
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
        env = {**os.environ, "VPRDISTILL_API_KEY": API_KEY}
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vprdistill serve exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"vprdistill serve did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _post_image(client, url: str, data: bytes, name: str = "photo.jpg", key: str | None = API_KEY, timeout=120):
    headers = {"X-API-Key": key} if key else {}
    return client.post(f"{url}/localize", files={"image": (name, data)}, headers=headers, timeout=timeout)


def hostile_payloads() -> dict[str, tuple[bytes, str]]:
    """The uploads a service must refuse, with their file names (a few seconds to make)."""
    return {
        "non-image": (b"plain text, not a photo " * 40, "x.jpg"),
        "64 MiB body": (bytes(64 * MIB), "big.jpg"),
        "39.7 MP PNG (116 KB)": (png_bytes(*LARGE_SIZE), "large.png"),
        "400 MP PNG bomb": (png_bytes(BOMB_SIDE, BOMB_SIDE, 1), "bomb.png"),
    }


def hostile_requests(url: str, query: bytes, payloads: dict[str, tuple[bytes, str]]) -> dict[str, int]:
    """Status codes of a good upload without a key and with a wrong one, then of ``payloads`` with the key."""
    import httpx

    with httpx.Client() as client:
        statuses = {
            "no key": _post_image(client, url, query, key=None).status_code,
            "wrong key": _post_image(client, url, query, key="wrong-" + API_KEY).status_code,
        }
        for label, (data, name) in payloads.items():
            statuses[label] = _post_image(client, url, data, name=name).status_code
    return statuses


def localisation_load(url: str, queries: list[tuple[bytes, str]], total: int, concurrency: int) -> dict[str, Any]:
    """``total`` uploads of ``queries`` (bytes, expected best-match file name) at ``concurrency``."""
    import httpx

    def call(i: int) -> tuple[int, float, bool]:
        data, expected = queries[i % len(queries)]
        start = time.perf_counter()
        response = _post_image(client, url, data, name=f"q{i}.jpg")
        elapsed = time.perf_counter() - start
        right = response.status_code == 200 and Path(response.json()["matches"][0]["path"]).name == expected
        return response.status_code, elapsed, right

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        results = list(pool.map(call, range(total)))
        wall = time.perf_counter() - start
    latencies = np.array([r[1] for r in results]) * 1e3
    return {
        "requests": total,
        "concurrency": concurrency,
        "ok": sum(r[0] == 200 for r in results),
        "right": sum(r[2] for r in results),
        "statuses": sorted({r[0] for r in results}),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "rps": total / wall,
        "wall_s": wall,
    }


def large_uploads(server: ServeProcess, data: bytes, count: int) -> dict[str, Any]:
    """``count`` simultaneous uploads of ``data``; status codes and the server's memory around them (MiB)."""
    import httpx

    rss_before = proc_status_kib(server.pid, "VmRSS") / 1024
    peak_before = proc_status_kib(server.pid, "VmHWM") / 1024
    peak_reset = reset_peak_rss(server.pid)
    barrier = threading.Barrier(count)

    def call(i: int) -> int:
        with httpx.Client() as client:
            barrier.wait()
            return _post_image(client, server.url, data, name=f"large{i}.png").status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(call, range(count)))
    return {
        "count": count,
        "statuses": statuses,
        "wall_s": time.perf_counter() - start,
        "rss_before_mib": rss_before,
        "peak_before_mib": peak_before,
        "peak_reset": peak_reset,
        "peak_after_mib": proc_status_kib(server.pid, "VmHWM") / 1024,
        "rss_after_mib": proc_status_kib(server.pid, "VmRSS") / 1024,
    }


def decode_bound_mib(decode_slots: int, max_megapixels: float) -> float:
    """The service's documented bound of the memory decoding adds, in MiB (8 bytes a pixel per slot)."""
    from vprdistill.serve.limits import decode_memory_bound

    return decode_memory_bound(decode_slots, int(max_megapixels * 1e6)) / MIB


def tiny_map(folder: Path, image_size: int = 64) -> tuple[Path, list[tuple[bytes, str]]]:
    """A tiny model and index of the test suite's fixture dataset; returns the index and the queries
    (bytes, name of the database image each copies)."""
    from tests.deploy.helpers import make_dataset, save_tiny_model
    from vprdistill.cli.main import main
    from vprdistill.data.readers import open_dataset

    dataset_dir = make_dataset(folder / "dataset")
    model = save_tiny_model(folder)
    index = folder / "index"
    code = main(["index", "build", "--model", str(model), "--dataset", str(dataset_dir), "--split", "test",
                 "--out", str(index), "--image-size", str(image_size), "--no-progress", "--device", "cpu"])  # fmt: skip
    if code != 0:
        raise RuntimeError("building the tiny index failed")
    dataset = open_dataset(dataset_dir, "test")
    queries = [(p.read_bytes(), dataset.database_paths[row].name) for p, row in zip(dataset.query_paths, [1, 4, 7, 10])]
    return index, queries


@contextmanager
def load_average() -> Iterator[dict[str, str]]:
    """``/proc/loadavg`` before and after the block (its 1-, 5- and 15-minute averages)."""
    loads = {"before": Path("/proc/loadavg").read_text().split()[:3]}
    yield loads
    loads["after"] = Path("/proc/loadavg").read_text().split()[:3]


def run(folder: Path, requests: int, concurrency: int, large: int, decode_slots: int = 2) -> dict[str, Any]:
    """The whole load test; ``folder`` receives the tiny map and the server logs."""
    index, queries = tiny_map(folder)
    payloads = hostile_payloads()
    phone_png, large_png = png_bytes(*PHONE_SIZE), payloads["39.7 MP PNG (116 KB)"][0]
    report: dict[str, Any] = {"decode_slots": decode_slots, "large_png_kb": len(large_png) / 1024}
    slots = ["--decode-slots", str(decode_slots)]
    with ServeProcess(index, slots, log_path=folder / "serve-default.log") as server:
        report["hostile"] = hostile_requests(server.url, queries[0][0], payloads)
        report["load"] = localisation_load(server.url, queries, requests, concurrency)
        report["large_default"] = large_uploads(server, phone_png, large)
    with ServeProcess(index, [*slots, "--max-megapixels", "40"], log_path=folder / "serve-40mp.log") as server:
        report["large_40mp"] = large_uploads(server, large_png, large)
    report["bound_default_mib"] = decode_bound_mib(decode_slots, 16)
    report["bound_40mp_mib"] = decode_bound_mib(decode_slots, 40)
    return report


LARGE_RUNS = (
    ("large_default", "default (16 MP limit)", f"{PHONE_SIZE[0]} × {PHONE_SIZE[1]} (12 MP) PNG", "bound_default_mib"),
    ("large_40mp", "`--max-megapixels 40`", f"{LARGE_SIZE[0]} × {LARGE_SIZE[1]} (39.7 MP) PNG", "bound_40mp_mib"),
)


def decode_growth_mib(run_: dict[str, Any]) -> float:
    """What the uploads added to the server's memory at its peak."""
    return run_["peak_after_mib"] - run_["rss_before_mib"]


def failures_of(report: dict[str, Any]) -> list[str]:
    """What the run shows wrong: a refused or wrong answer, a status other than expected, memory above its bound."""
    failures = []
    load = report["load"]
    if not load["ok"] == load["right"] == load["requests"]:
        failures.append(f"{load['requests']} localisation requests: {load['ok']} answered 200, {load['right']} right")
    expected = {"no key": 401, "wrong key": 401, "non-image": 400, "64 MiB body": 413, "39.7 MP PNG (116 KB)": 413,
                "400 MP PNG bomb": 413}  # fmt: skip
    failures += [f"{k}: {v}, expected {expected[k]}" for k, v in report["hostile"].items() if v != expected[k]]
    for key, label, _, bound_key in LARGE_RUNS:
        run_ = report[key]
        if run_["statuses"] != [200] * run_["count"]:
            failures.append(f"{label}: large uploads answered {sorted(set(run_['statuses']))}")
        if decode_growth_mib(run_) > report[bound_key]:
            failures.append(f"{label}: decoding added {decode_growth_mib(run_):.0f} MiB, above {report[bound_key]:.0f}")
    return failures


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def format_section(report: dict[str, Any], command: str, loads: dict[str, list[str]]) -> str:
    load, hostile = report["load"], report["hostile"]
    busy = max(float(loads["before"][0]), float(loads["after"][0])) > (os.cpu_count() or 1)
    lines = [
        "## serve-load: `vprdistill serve` under load and abuse",
        "",
        f"- Machine: {machine_description()}, {memory_gib():.0f} GiB RAM, CPU only; client and server share it.",
        (
            f"- Date: {today()}. Load average (1/5/15 min) {' '.join(loads['before'])} before, "
            f"{' '.join(loads['after'])} after."
            + (" Other jobs were running (load above the core count): absolute times are pessimistic." if busy else "")
        ),
        f"- Command: `{command}`",
        (
            "- Server: `vprdistill serve` subprocess on 127.0.0.1 with an API key and default limits "
            f"(10 MB body, 16 MP, {report['decode_slots']} decode slots, 30 s request deadline, 64 connections); "
            "tiny resnet18-gem at 64 px and a 12-image index, so the figures measure the service more than the "
            "network. Localisation uploads are the fixture's 64 × 64 JPEG queries; httpx client, one thread per "
            "connection."
        ),
        "",
        "| request | status |",
        "|---|---|",
        *(f"| {name} | {status} |" for name, status in hostile.items()),
        "",
        (
            f"Localisation: {load['requests']} requests at concurrency {load['concurrency']}: "
            f"{load['ok']} answered 200 ({load['right']} with the right best match), "
            f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, {load['rps']:.1f} requests/s."
        ),
        "",
        (
            "Simultaneous large uploads, server memory: RSS before, peak RSS during (`VmHWM`, reset before), "
            "RSS after; bound = decode slots × max pixels × 8 bytes:"
        ),
        "",
        "| server | uploads | statuses | RSS before MiB | peak MiB | peak − before MiB | bound MiB | RSS after MiB | s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label, upload, bound_key in LARGE_RUNS:
        run_ = report[key]
        codes = ", ".join(f"{run_['statuses'].count(c)}× {c}" for c in sorted(set(run_["statuses"])))
        lines.append(
            f"| {label} | {run_['count']} × {upload} | {codes} | {run_['rss_before_mib']:.0f} | "
            f"{run_['peak_after_mib']:.0f} | {decode_growth_mib(run_):.0f} | {report[bound_key]:.0f} | "
            f"{run_['rss_after_mib']:.0f} | {run_['wall_s']:.1f} |"
        )
    if not all(report[key]["peak_reset"] for key, *_ in LARGE_RUNS):
        lines.append("\n(The kernel refused to reset `VmHWM`: a peak column is the process's lifetime peak.)")
    failures = failures_of(report)
    lines += ["", *(f"- FAIL: {f}" for f in failures)] if failures else ["", "- PASS: every check"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="localisation requests")
    parser.add_argument("--concurrency", type=int, default=8, help="localisation requests in flight")
    parser.add_argument("--large", type=int, default=16, help="simultaneous large uploads")
    parser.add_argument("--decode-slots", type=int, default=2, help="the servers' --decode-slots")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/serve_load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as folder, load_average() as loads:
        report = run(Path(folder), args.requests, args.concurrency, args.large, args.decode_slots)
    section = format_section(report, command.strip(), loads)
    print(section)
    if not args.no_write:
        print(f"wrote {update_section('serve-load', section)}")
    return 1 if failures_of(report) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The localisation service, run for real: uvicorn on a loopback port, called over HTTP with httpx."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn

from vprdistill.data.readers import open_dataset
from vprdistill.deploy.localizer import Localizer
from vprdistill.serve.app import create_app

API_KEY = "s3cret-key"
MAX_UPLOAD = 64 * 1024


class ServerThread:
    """uvicorn serving ``app`` in a background thread on a socket bound to a free loopback port."""

    def __init__(self, app) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="module")
def localizer(tiny_index: Path) -> Localizer:
    return Localizer.from_index_folder(tiny_index)


@pytest.fixture(scope="module")
def open_server(localizer: Localizer) -> Iterator[str]:
    with ServerThread(create_app(localizer, MAX_UPLOAD)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(localizer: Localizer) -> Iterator[str]:
    with ServerThread(create_app(localizer, MAX_UPLOAD, api_key=API_KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def query(tiny_dataset: Path) -> tuple[bytes, str]:
    """A query photo's bytes and the name of the database image it copies."""
    dataset = open_dataset(tiny_dataset, "test")
    return dataset.query_paths[2].read_bytes(), dataset.database_paths[7].name


def test_health_and_info(open_server: str, localizer: Localizer) -> None:
    assert httpx.get(f"{open_server}/health").json()["status"] == "ok"
    info = httpx.get(f"{open_server}/info").json()
    assert info["fingerprint"] == localizer.index.model_fingerprint
    assert info["descriptor_dim"] == 512 and info["index_size"] == 12
    assert info["model"] == "resnet18-gem" and info["image_size"] == [64, 64]


def test_localize_returns_the_copied_database_image(open_server: str, query: tuple[bytes, str]) -> None:
    data, expected = query
    response = httpx.post(f"{open_server}/localize", params={"topk": 3}, files={"image": ("q.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert Path(body["matches"][0]["path"]).name == expected
    assert len(body["matches"]) == 3 and body["source"] == "q.jpg" and body["unknown"] is False
    assert body["position"] == body["matches"][0]["position"]


def test_garbage_bytes_get_400_with_a_reason(open_server: str) -> None:
    response = httpx.post(f"{open_server}/localize", files={"image": ("x.jpg", b"\x00garbage" * 20, "image/jpeg")})
    assert response.status_code == 400
    assert "cannot decode image x.jpg" in response.json()["detail"]


def test_missing_field_and_bad_topk_are_client_errors(open_server: str, query: tuple[bytes, str]) -> None:
    response = httpx.post(f"{open_server}/localize", files={"photo": ("q.jpg", query[0], "image/jpeg")})
    assert response.status_code == 400 and "'image'" in response.json()["detail"]
    response = httpx.post(f"{open_server}/localize", params={"topk": 0}, files={"image": ("q.jpg", query[0])})
    assert response.status_code == 422


def test_oversize_body_gets_413(open_server: str) -> None:
    too_big = b"\xff" * (2 * MAX_UPLOAD)
    response = httpx.post(f"{open_server}/localize", files={"image": ("big.jpg", too_big, "image/jpeg")})
    assert response.status_code == 413


def test_oversize_body_without_content_length_gets_413_while_reading(open_server: str) -> None:
    def chunks() -> Iterator[bytes]:  # a generator body goes out chunked, with no Content-Length
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n\r\n"
        for _ in range(8):
            yield b"\xff" * (MAX_UPLOAD // 2)
        yield b"\r\n--b--\r\n"

    response = httpx.post(
        f"{open_server}/localize", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413


def test_api_key_is_required_when_configured(keyed_server: str, query: tuple[bytes, str]) -> None:
    files = {"image": ("q.jpg", query[0], "image/jpeg")}
    assert httpx.post(f"{keyed_server}/localize", files=files).status_code == 401
    assert httpx.post(f"{keyed_server}/localize", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{keyed_server}/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{keyed_server}/info", headers={"Authorization": f"Basic {API_KEY}"}).status_code == 401
    ok = httpx.post(f"{keyed_server}/localize", files=files, headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200 and Path(ok.json()["matches"][0]["path"]).name == query[1]
    assert httpx.get(f"{keyed_server}/info", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(f"{keyed_server}/health").status_code == 200  # liveness stays open


def test_concurrent_requests_all_succeed(open_server: str, tiny_dataset: Path) -> None:
    dataset = open_dataset(tiny_dataset, "test")
    expected = {p.read_bytes(): dataset.database_paths[row].name for p, row in zip(dataset.query_paths, [1, 4, 7, 10])}
    uploads = list(expected.items()) * 3

    def call(item: tuple[bytes, str]) -> tuple[int, str, str]:
        response = httpx.post(f"{open_server}/localize", files={"image": ("q.jpg", item[0])}, timeout=60)
        return response.status_code, Path(response.json()["matches"][0]["path"]).name, item[1]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, uploads))
    assert all(status == 200 for status, _, _ in results)
    assert all(found == wanted for _, found, wanted in results)

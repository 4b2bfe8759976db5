"""The localisation service, run for real: uvicorn on a loopback port, called over HTTP with httpx."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from vprdistill.data.readers import open_dataset
from vprdistill.deploy.localizer import Localizer
from vprdistill.serve.app import create_app
from vprdistill.serve.server import server_config

API_KEY = "s3cret-key"
MAX_UPLOAD = 2**20  # above the 40 MP PNG and the bomb below: their pixels, not their bytes, must stop them


class ServerThread:
    """uvicorn, configured as ``vprdistill serve`` runs it, serving ``app`` in a background thread
    on a socket bound to a free loopback port; ``settings`` go to ``server_config``."""

    def __init__(self, app, **settings) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(server_config(app, log_level="warning", **settings))
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
    assert info["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_pixels": 16_000_000, "decode_slots": 2,
                              "decode_memory_bytes": 2 * 16_000_000 * 8, "max_batch_images": 16}  # fmt: skip


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
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
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


def flat_png(width: int, height: int, channels: int = 3) -> bytes:
    from benchmarks.serve_load import png_bytes

    return png_bytes(width, height, channels)


def test_a_40_megapixel_png_gets_413_from_its_header(open_server: str) -> None:
    bomb = flat_png(7280, 5456)  # 39.7 MP in 116 KB: under the body limit, far above what the model needs
    assert len(bomb) < MAX_UPLOAD
    start = time.perf_counter()
    response = httpx.post(f"{open_server}/localize", files={"image": ("big.png", bomb, "image/png")})
    assert response.status_code == 413, response.text
    assert "7280×5456" in response.json()["detail"] and "16,000,000" in response.json()["detail"]
    assert time.perf_counter() - start < 0.3  # refused from the header: decoding alone takes about 0.4 s


def test_a_decompression_bomb_gets_413(open_server: str) -> None:
    bomb = flat_png(20_000, 20_000, channels=1)  # 400 MP of grey; PIL's own bomb check trips before ours
    response = httpx.post(f"{open_server}/localize", files={"image": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413 and "bomb.png" in response.json()["detail"]


def test_formats_outside_the_allow_list_get_400(open_server: str, query: tuple[bytes, str]) -> None:
    from PIL import Image

    photo = Image.open(io.BytesIO(query[0]))
    for fmt in ("GIF", "PPM", "TGA"):
        encoded = io.BytesIO()
        photo.save(encoded, format=fmt)
        response = httpx.post(f"{open_server}/localize", files={"image": (f"q.{fmt.lower()}", encoded.getvalue())})
        assert response.status_code == 400, (fmt, response.text)
        assert "JPEG, PNG, WebP, BMP or TIFF" in response.json()["detail"]
    for fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        encoded = io.BytesIO()
        photo.save(encoded, format=fmt)
        response = httpx.post(f"{open_server}/localize", files={"image": (f"q.{fmt.lower()}", encoded.getvalue())})
        assert response.status_code == 200 and Path(response.json()["matches"][0]["path"]).name == query[1], fmt


@pytest.fixture(scope="module")
def non_utf8_index(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, tiny_model_stem: Path) -> Path:
    """The tiny test split with database row 7 renamed to a file name that is not valid UTF-8."""
    from vprdistill.cli.main import main

    root = tmp_path_factory.mktemp("non_utf8")
    shutil.copytree(tiny_dataset / "images" / "test", root / "images" / "test")
    database = root / "images" / "test" / "database"
    original = open_dataset(tiny_dataset, "test").database_paths[7].name
    os.rename(database / original, os.fsdecode(os.fsencode(database / original)[:-5] + b"caf\xe9@.jpg"))
    out = root / "index"
    assert main(["index", "build", "--model", str(tiny_model_stem), "--dataset", str(root), "--split", "test",
                 "--out", str(out), "--image-size", "64", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    return out


def test_index_paths_that_are_not_utf8_are_answered(non_utf8_index: Path, query: tuple[bytes, str], capsys) -> None:
    from vprdistill.cli.main import main

    with ServerThread(create_app(Localizer.from_index_folder(non_utf8_index), MAX_UPLOAD)) as url:
        response = httpx.post(f"{url}/localize", params={"topk": 3}, files={"image": ("q.jpg", query[0])})
    assert response.status_code == 200, response.text
    best = response.json()["matches"][0]["path"]
    assert os.fsencode(best).endswith(b"caf\xe9@.jpg")  # the file name's bytes come back as they are on disk
    assert Path(best).exists()
    # the service and `vprdistill localize --json` agree on the answer
    query_file = non_utf8_index.parent / "q.jpg"
    query_file.write_bytes(query[0])
    assert main(["localize", "--index", str(non_utf8_index), str(query_file), "--json", "--topk", "3"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]
    assert [m["path"] for m in cli["matches"]] == [m["path"] for m in response.json()["matches"]]


def test_half_open_connections_are_closed_at_the_request_deadline(localizer: Localizer) -> None:
    timeout = 1.0
    with ServerThread(create_app(localizer, MAX_UPLOAD), request_timeout=timeout) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        partial_head = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        partial_body = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for connection in partial_head:
            connection.sendall(b"POST /localize HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        for connection in partial_body:
            connection.sendall(b"POST /localize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                               b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")  # fmt: skip
        start = time.monotonic()
        answers = []
        for connection in silent + partial_head + partial_body:
            connection.settimeout(timeout + 5)
            received = b""
            while chunk := connection.recv(4096):  # b"" once the server has closed the connection
                received += chunk
            answers.append(received)
            connection.close()
        waited = time.monotonic() - start
        # a good client on a fresh connection is still served
        response = httpx.get(f"{url}/health")
    assert timeout * 0.8 < waited < timeout + 3
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers[:20])
    assert all(not answer.startswith(b"HTTP/1.1 200") for answer in answers[20:])
    assert response.status_code == 200


def test_a_slow_answer_is_not_cut_off_by_the_request_deadline(localizer: Localizer) -> None:
    # The deadline covers receiving a request only: with one decode slot, four 12 MP uploads sent at once
    # wait for each other well past the deadline, and each is still answered.
    photo = flat_png(4000, 3000)
    app = create_app(localizer, MAX_UPLOAD, decode_slots=1)
    with ServerThread(app, request_timeout=0.25) as url, ThreadPoolExecutor(max_workers=4) as pool:
        start = time.monotonic()
        statuses = list(pool.map(lambda i: httpx.post(f"{url}/localize", files={"image": (f"{i}.png", photo)},
                                                      timeout=60).status_code, range(4)))  # fmt: skip
        waited = time.monotonic() - start
    assert statuses == [200] * 4
    assert waited > 0.5  # the last answer came well after its request's deadline

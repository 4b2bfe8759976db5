"""POST /localize/batch: several images in one multipart request, one forward pass, one answer each."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from vprdistill.data.readers import open_dataset
from vprdistill.deploy.localizer import Localizer
from vprdistill.serve.app import create_app

API_KEY = "batch-key"
MAX_UPLOAD = 2**20
MAX_IMAGES = 4


@pytest.fixture(scope="module")
def localizer(tiny_index: Path) -> Localizer:
    return Localizer.from_index_folder(tiny_index)


@pytest.fixture(scope="module")
def client(localizer: Localizer) -> Iterator[TestClient]:
    with TestClient(create_app(localizer, MAX_UPLOAD, max_batch_images=MAX_IMAGES)) as client:
        yield client


@pytest.fixture(scope="module")
def queries(tiny_dataset: Path) -> list[tuple[str, bytes, int]]:
    """``(file name, bytes, database row it copies)`` of the four test queries."""
    dataset = open_dataset(tiny_dataset, "test")
    return [(f"q{row}.jpg", path.read_bytes(), row) for path, row in zip(dataset.query_paths, [1, 4, 7, 10])]


def parts(*uploads: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, data, "image/jpeg")) for name, data in uploads]


def png(width: int, height: int) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 30)).save(encoded, format="PNG")
    return encoded.getvalue()


def test_a_batch_answers_as_single_requests_do(client: TestClient, queries, localizer, monkeypatch) -> None:
    batches: list[int] = []
    describe = localizer.describe_batch

    def counting(batch: torch.Tensor) -> np.ndarray:
        batches.append(len(batch))
        return describe(batch)

    uploads = [(name, data) for name, data, _ in queries[:3]] + [("again.jpg", queries[0][1])]
    singles = [client.post("/localize", params={"topk": 3}, files={"image": upload}).json() for upload in uploads]
    monkeypatch.setattr(localizer, "describe_batch", counting)
    response = client.post("/localize/batch", params={"topk": 3}, files=parts(*uploads))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert batches == [4]  # the four descriptors in one forward pass
    assert len(results) == 4
    assert [Path(r["matches"][0]["path"]).name for r in results[:3]] == [
        open_dataset_name(localizer, row) for _, _, row in queries[:3]
    ]
    for single, batched, (name, _) in zip(singles, results, uploads):
        assert batched["source"] == single["source"] == name
        assert set(batched) == set(single)  # the same record, elapsed_ms included
        assert [m["path"] for m in batched["matches"]] == [m["path"] for m in single["matches"]]
        assert [m["rank"] for m in batched["matches"]] == [1, 2, 3]
        assert [m["score"] for m in batched["matches"]] == pytest.approx([m["score"] for m in single["matches"]],
                                                                       abs=1e-5)  # fmt: skip
        assert {k: v for k, v in batched.items() if k not in ("matches", "score", "confidence", "elapsed_ms")} == {
            k: v for k, v in single.items() if k not in ("matches", "score", "confidence", "elapsed_ms")
        }
    # the same photo twice in one batch: the same answer
    assert [m["path"] for m in results[3]["matches"]] == [m["path"] for m in results[0]["matches"]]
    assert results[3]["score"] == pytest.approx(results[0]["score"], abs=1e-6)


def open_dataset_name(localizer: Localizer, row: int) -> str:
    return Path(localizer.index.paths[row]).name


def test_more_images_than_the_limit_get_413(client: TestClient, queries) -> None:
    name, data, _ = queries[0]
    response = client.post("/localize/batch", files=parts(*[(f"{i}.jpg", data) for i in range(MAX_IMAGES + 1)]))
    assert response.status_code == 413
    assert f"at most {MAX_IMAGES} images" in response.json()["detail"]
    assert client.post("/localize/batch", files=parts(*[(name, data)] * MAX_IMAGES)).status_code == 200


def test_a_corrupt_part_gets_400_naming_it(client: TestClient, queries) -> None:
    good = queries[0][1]
    response = client.post(
        "/localize/batch", files=parts(("a.jpg", good), ("broken.jpg", b"\xff\xd8 no"), ("c.jpg", good))
    )
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("images[1] (broken.jpg): cannot decode image broken.jpg")
    truncated = good[: len(good) // 2]  # a header that passes, pixels that do not decode
    response = client.post("/localize/batch", files=parts(("a.jpg", good), ("b.jpg", good), ("cut.jpg", truncated)))
    assert response.status_code == 400 and response.json()["detail"].startswith("images[2] (cut.jpg)")


def test_each_image_is_held_to_the_pixel_limit(localizer: Localizer, queries) -> None:
    with TestClient(create_app(localizer, MAX_UPLOAD, max_pixels=100 * 100)) as small:
        response = small.post("/localize/batch", files=parts(("q.jpg", queries[0][1]), ("wide.png", png(200, 100))))
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "images[1] (wide.png): image wide.png is 200×100 pixels, above the limit of 10,000 pixels"
    )


def test_the_body_limit_counts_the_whole_request(localizer: Localizer, queries) -> None:
    data = queries[0][1]
    limit = 3 * len(data)  # each part fits, four together do not
    with TestClient(create_app(localizer, limit)) as tight:
        assert tight.post("/localize/batch", files=parts(("a.jpg", data), ("b.jpg", data))).status_code == 200
        response = tight.post("/localize/batch", files=parts(*[(f"{i}.jpg", data) for i in range(4)]))
    assert response.status_code == 413


def test_the_api_key_is_enforced(localizer: Localizer, queries) -> None:
    files = parts(("a.jpg", queries[0][1]), ("b.jpg", queries[1][1]))
    with TestClient(create_app(localizer, MAX_UPLOAD, api_key=API_KEY)) as keyed:
        assert keyed.post("/localize/batch", files=files).status_code == 401
        assert keyed.post("/localize/batch", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        ok = keyed.post("/localize/batch", files=files, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_malformed_batches_are_client_errors(client: TestClient, queries) -> None:
    data = queries[0][1]
    response = client.post("/localize/batch", files={"image": ("a.jpg", data)})
    assert response.status_code == 400 and "'images'" in response.json()["detail"]
    response = client.post("/localize/batch", data={"images": "not a file"})
    assert response.status_code == 400 and "'images'" in response.json()["detail"]
    response = client.post("/localize/batch", files=parts(("a.jpg", data)), data={"note": "x"})
    assert response.status_code == 400 and "'note'" in response.json()["detail"]
    assert (
        client.post("/localize/batch", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 400
    )
    assert client.post("/localize/batch", params={"topk": 0}, files=parts(("a.jpg", data))).status_code == 422


def test_the_limit_is_in_info_and_zero_turns_the_endpoint_off(
    localizer: Localizer, client: TestClient, queries
) -> None:
    assert client.get("/info").json()["limits"]["max_batch_images"] == MAX_IMAGES
    with TestClient(create_app(localizer, MAX_UPLOAD, max_batch_images=0)) as off:
        assert off.post("/localize/batch", files=parts(("a.jpg", queries[0][1]))).status_code == 404
        assert off.post("/localize", files={"image": ("a.jpg", queries[0][1])}).status_code == 200
    with pytest.raises(ValueError, match="max_batch_images"):
        create_app(localizer, MAX_UPLOAD, max_batch_images=-1)


def test_the_cli_option_sets_the_limit(tiny_index: Path, queries, monkeypatch, capsys) -> None:
    import uvicorn

    from vprdistill.cli.main import main

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: served.append(self.config.app))
    assert main(["serve", "--index", str(tiny_index), "--max-batch-images", "2"]) == 0
    with TestClient(served[0]) as app:
        assert app.get("/info").json()["limits"]["max_batch_images"] == 2
        three = parts(*[(f"{i}.jpg", queries[0][1]) for i in range(3)])
        response = app.post("/localize/batch", files=three)
    assert response.status_code == 413 and "at most 2 images" in response.json()["detail"]
    assert main(["serve", "--index", str(tiny_index), "--max-batch-images", "-1"]) == 1
    assert "--max-batch-images" in capsys.readouterr().err

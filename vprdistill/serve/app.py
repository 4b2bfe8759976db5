"""The localisation service: FastAPI app around a ``Localizer``.

Endpoints:
- ``GET /health``: liveness, no key needed.
- ``GET /info``: model, fingerprint, descriptor size, index size and settings.
- ``POST /localize?topk=5``: multipart upload of one image in the field ``image``;
  answers the JSON of a ``Localization``.

Concurrency: requests are served by uvicorn's event loop; the upload is read
asynchronously, then decoding and inference run in Starlette's thread pool so
the loop stays free. Image decoding runs in parallel, but the network and the
search hold one lock: a single model instance then never runs two forward
passes at once (CPU threads are not oversubscribed, GPU memory stays at one
batch), and requests queue for it instead of slowing each other down.

Limits: request bodies above ``max_upload_bytes`` get 413 (Starlette's body
limit checks ``Content-Length`` and counts bytes while reading); images that
do not decode get 400 with the reason.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from vprdistill.deploy.inputs import ImageLoadError, decode_image_bytes
from vprdistill.deploy.localizer import Localizer
from vprdistill.serve.auth import api_key_dependency

UPLOAD_FIELD = "image"
MAX_TOPK = 100

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                    "required": [UPLOAD_FIELD],
                }
            }
        },
    }
}


class _SerialisedLocalizer:
    """Decodes in the calling thread, runs the model and search one request at a time."""

    def __init__(self, localizer: Localizer) -> None:
        self.localizer = localizer
        self.lock = threading.Lock()

    def __call__(self, data: bytes, name: str, topk: int) -> dict[str, Any]:
        image = decode_image_bytes(data, name=name)
        start = time.perf_counter()
        with self.lock:
            result = self.localizer.localize(image, topk=topk)[0]
        record = result.to_dict()
        record["source"] = name
        record["elapsed_ms"] = 1e3 * (time.perf_counter() - start)
        return record


def _info(localizer: Localizer) -> dict[str, Any]:
    index = localizer.index
    manifest = index.manifest
    calibration = index.calibration
    return {
        "model": manifest.get("model_config", {}).get("name"),
        "model_config": manifest.get("model_config"),
        "fingerprint": index.model_fingerprint,
        "descriptor_dim": index.descriptor_dim,
        "stored_dim": manifest.get("stored_dim"),
        "index_size": len(index),
        "index_type": manifest.get("type"),
        "pca": manifest.get("pca"),
        "dtype": manifest.get("dtype"),
        "image_size": list(localizer.image_size),
        "device": str(localizer.device),
        "calibrated_threshold": None if calibration is None else calibration["threshold"],
    }


def create_app(localizer: Localizer, max_upload_bytes: int, api_key: str | None = None) -> FastAPI:
    """The service for ``localizer``; bodies above ``max_upload_bytes`` get 413; with ``api_key``,
    ``/info`` and ``/localize`` need it (401 otherwise)."""
    if max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    app = FastAPI(title="vprdistill localisation service", max_body_size=int(max_upload_bytes))
    require_key = Depends(api_key_dependency(api_key))
    run_localizer = _SerialisedLocalizer(localizer)
    info = _info(localizer)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "index_size": info["index_size"]}

    @app.get("/info", dependencies=[require_key])
    def get_info() -> dict[str, Any]:
        return info

    @app.post("/localize", dependencies=[require_key], openapi_extra=_UPLOAD_SCHEMA)
    async def localize(request: Request, topk: int = Query(5, ge=1, le=MAX_TOPK)) -> dict[str, Any]:
        # The form is read here, after the key check, so an unauthorised client never gets its upload parsed.
        form = await request.form(max_files=1, max_fields=1)
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, detail=f"send the image as a multipart file field named '{UPLOAD_FIELD}'")
        data = await upload.read()
        name = upload.filename or UPLOAD_FIELD
        try:
            return await run_in_threadpool(run_localizer, data, name, topk)
        except ImageLoadError as error:
            raise HTTPException(400, detail=str(error)) from error

    return app

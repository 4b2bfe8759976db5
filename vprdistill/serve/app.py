"""The localisation service: FastAPI app around a ``Localizer``.

Endpoints:
- ``GET /health``: liveness, no key needed.
- ``GET /info``: model, fingerprint, descriptor size, index size and settings.
- ``POST /localize?topk=5``: multipart upload of one image in the field ``image``;
  answers the JSON of a ``Localization``.
- ``POST /localize/batch?topk=5``: up to ``max_batch_images`` images in one
  multipart request, each a file field named ``images``; answers
  ``{"results": [...]}``, one ``/localize`` answer per image in upload order,
  their descriptors computed in one forward pass. ``max_batch_images=0`` leaves
  the endpoint out.

Concurrency: requests are served by uvicorn's event loop; the upload is read
asynchronously (Starlette spools it to a temporary file above 1 MB), then the
header check and inference run in Starlette's thread pool and decoding in
``decode_slots`` threads of its own, so the loop stays free. Each decode is
reduced to the network's input before its thread takes the next one. The
network and the search hold one lock: a single model instance never runs two
forward passes at once (CPU threads are not oversubscribed, GPU memory stays at
one batch), and requests queue for it instead of slowing each other down.

Limits: request bodies above ``max_upload_bytes`` get 413 (Starlette's body
limit checks ``Content-Length`` and counts bytes while reading); images whose
header announces more than ``max_pixels`` get 413 before any pixel is decoded;
images that are not JPEG, PNG, WebP, BMP or TIFF, or do not decode, get 400
with the reason. Memory the decoding adds is then bounded by
``decode_slots × max_pixels × 8`` bytes (``serve.limits.decode_memory_bound``).
A batch obeys the same limits: the body limit counts the whole request, each
image is checked against ``max_pixels`` and decoded in the same slots, and the
first bad image (by position) gets the same 413 or 400, naming its position and
file name; more than ``max_batch_images`` images get 413 while the form is read.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, BinaryIO

import torch

from vprdistill.utils.extras import require

# The service's packages come with the `serve` extra: a missing one is named before the imports below fail.
# python_multipart parses the uploads (without it starlette still imports, and fails only when a form arrives).
for _module in ("fastapi", "python_multipart"):
    require(_module, "serve", "the HTTP service (vprdistill.serve)")
del _module

from fastapi import Depends, FastAPI, HTTPException, Query, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.datastructures import FormData, UploadFile  # noqa: E402
from starlette.formparsers import MultiPartException, MultiPartParser  # noqa: E402

from vprdistill.deploy.inputs import ImageLoadError, ImageTooLargeError, check_image_header, decode_image_file  # noqa: E402
from vprdistill.deploy.localizer import Localizer  # noqa: E402
from vprdistill.serve.auth import api_key_dependency  # noqa: E402
from vprdistill.serve.limits import (  # noqa: E402
    DEFAULT_DECODE_SLOTS,
    DEFAULT_MAX_BATCH_IMAGES,
    DEFAULT_MAX_PIXELS,
    decode_memory_bound,
)

UPLOAD_FIELD = "image"
BATCH_FIELD = "images"
MAX_TOPK = 100


def _multipart_body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a multipart form with one required ``field`` of ``schema``."""
    form = {"type": "object", "properties": {field: schema}, "required": [field]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


_FILE = {"type": "string", "format": "binary"}
_UPLOAD_SCHEMA = _multipart_body(UPLOAD_FIELD, _FILE)
_BATCH_SCHEMA = _multipart_body(BATCH_FIELD, {"type": "array", "items": _FILE})


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, as ``json.dumps`` writes it by default.

    Index paths read from file names that are not valid UTF-8 hold surrogate
    escapes (``\\udce9`` for the byte 0xe9), which UTF-8 cannot encode: escaped,
    they come out as ``vprdistill localize --json`` prints them, and
    ``os.fsencode(path)`` gives back the bytes of the file name.
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class _Pipeline:
    """Header check, then decoding in ``decode_slots`` threads of its own, then one forward pass at a time.

    Decodes run in a pool of their own rather than in Starlette's 40 threads
    under a semaphore: glibc gives each thread that allocates a large image a
    heap of its own and keeps freed pages there, so with a semaphore of two,
    16 simultaneous 40 MP uploads still added 1.2 GB to the peak; in two
    threads of their own they add 0.33 GB (BENCHMARKS.md, serve-load).
    """

    def __init__(self, localizer: Localizer, max_pixels: int, decode_slots: int) -> None:
        self.localizer = localizer
        self.max_pixels = max_pixels
        self.decoder = ThreadPoolExecutor(max_workers=decode_slots, thread_name_prefix="vprdistill-decode")
        self.model_lock = threading.Lock()

    def _prepare(self, file: BinaryIO, name: str) -> torch.Tensor:
        # Only the network's input, `(1, 3, H, W)`, leaves the decode thread: a request waiting
        # for the model never holds a full-size decoded photo.
        return self.localizer.prepare(decode_image_file(file, name, self.max_pixels))[None]

    def _answer_all(self, batch: torch.Tensor, names: list[str], topk: int) -> list[dict[str, Any]]:
        """One record per row of ``batch`` `(B, 3, H, W)`: one forward pass and one search for all of them."""
        start = time.perf_counter()
        with self.model_lock:
            results = self.localizer.match(self.localizer.describe_batch(batch), topk, list(names))
        elapsed_ms = 1e3 * (time.perf_counter() - start)  # the batch's model and search time, in each record
        return [{**result.to_dict(), "elapsed_ms": elapsed_ms} for result in results]

    async def batch(self, parts: list[tuple[BinaryIO, str]], topk: int) -> list[dict[str, Any]]:
        """``(file, name)`` parts → one record each, in order; ``BatchPartError`` names the first bad part."""
        await run_in_threadpool(self._check_headers, parts)  # every header before any decode
        loop = asyncio.get_running_loop()
        # All parts queue for the same decode slots as single uploads: the decode memory bound holds.
        prepared = await asyncio.gather(
            *(loop.run_in_executor(self.decoder, self._prepare, file, name) for file, name in parts),
            return_exceptions=True,
        )
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, ImageLoadError):
                raise BatchPartError(index, parts[index][1], outcome) from outcome
            if isinstance(outcome, BaseException):
                raise outcome
        return await run_in_threadpool(self._answer_all, torch.cat(prepared), [name for _, name in parts], topk)

    def _check_headers(self, parts: list[tuple[BinaryIO, str]]) -> None:
        for index, (file, name) in enumerate(parts):
            try:
                check_image_header(file, name, self.max_pixels)
            except ImageLoadError as error:
                raise BatchPartError(index, name, error) from error


class BatchPartError(Exception):
    """Image ``index`` (file name ``name``) of a batch could not be used; ``error`` says why."""

    def __init__(self, index: int, name: str, error: ImageLoadError) -> None:
        super().__init__(f"{BATCH_FIELD}[{index}] ({name}): {error}")
        self.index, self.name, self.error = index, name, error


class _BatchFormParser(MultiPartParser):
    """Starlette's multipart parser, stopping at the first file beyond ``max_images``.

    Starlette's own ``max_files`` stops there too, but answers 400 with a
    generic message; the batch endpoint answers 413 naming its limit. The parse
    stops as soon as the part's headers arrive: its bytes are never spooled.
    ``_current_part`` is Starlette's own record of the part being read
    (tests/serve/test_batch.py fails should a Starlette release rename it).
    """

    def __init__(self, request: Request, stream: Any, max_images: int, max_fields: int) -> None:
        super().__init__(request.headers, stream, max_fields=max_fields)
        self.max_images = max_images
        self.images = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if self._current_part.file is not None:  # a part with a file name, as every image upload has
            self.images += 1
            if self.images > self.max_images:  # 413, at the first file too many
                raise HTTPException(
                    413, detail=f"a batch holds at most {self.max_images} images; send the others in another request"
                )


async def _read_batch_form(request: Request, max_images: int) -> FormData:
    """The multipart form of a batch request; 400 for a request that is not one, 413 past ``max_images`` files."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise HTTPException(400, detail=f"send the images as multipart file fields named '{BATCH_FIELD}'")
    try:
        async with aclosing(request.stream()) as stream:
            return await _BatchFormParser(request, stream, max_images, max_fields=1).parse()
    except MultiPartException as error:
        raise HTTPException(400, detail=error.message) from error


def create_app(
    localizer: Localizer,
    max_upload_bytes: int,
    api_key: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_slots: int = DEFAULT_DECODE_SLOTS,
    max_batch_images: int = DEFAULT_MAX_BATCH_IMAGES,
) -> FastAPI:
    """The service for ``localizer``; bodies above ``max_upload_bytes`` and images above ``max_pixels``
    get 413; at most ``decode_slots`` uploads are decoded at once; ``/localize/batch`` takes up to
    ``max_batch_images`` images a request (0: no batch endpoint); with ``api_key``, ``/info``,
    ``/localize`` and ``/localize/batch`` need it (401 otherwise)."""
    for label, value in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels),
                         ("decode_slots", decode_slots)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{label} must be positive, got {value}")
    if max_batch_images < 0:
        raise ValueError(f"max_batch_images must be 0 (no batch endpoint) or positive, got {max_batch_images}")
    app = FastAPI(title="vprdistill localisation service", max_body_size=int(max_upload_bytes))
    require_key = Depends(api_key_dependency(api_key))
    run_localizer = _Pipeline(localizer, int(max_pixels), int(decode_slots))
    index, manifest = localizer.index, localizer.index.manifest
    info = {
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
        "calibrated_threshold": None if index.calibration is None else index.calibration["threshold"],
        "utm_zone": index.utm_zone,
        "limits": {
            "max_upload_bytes": int(max_upload_bytes),
            "max_pixels": int(max_pixels),
            "decode_slots": int(decode_slots),
            "decode_memory_bytes": decode_memory_bound(decode_slots, max_pixels),
            "max_batch_images": int(max_batch_images),
        },
    }

    @app.get("/health")
    def health() -> AsciiJSONResponse:
        return AsciiJSONResponse({"status": "ok", "index_size": info["index_size"]})

    @app.get("/info", dependencies=[require_key])
    def get_info() -> AsciiJSONResponse:
        return AsciiJSONResponse(info)

    async def answer(form: FormData, field: str, topk: int) -> list[dict[str, Any]]:
        """The records of the uploads in the file fields ``field`` of ``form`` (closed after); 400 / 413 for a bad one."""
        single = field == UPLOAD_FIELD
        what = "the image as a multipart file field" if single else "the images as multipart file fields"
        try:
            # A batch names a field it does not know; a single upload ignores the (one) other field it may carry.
            unexpected = [] if single else sorted(set(form.keys()) - {field})
            uploads = form.getlist(field)
            if unexpected or not uploads or not all(isinstance(upload, UploadFile) for upload in uploads):
                note = f"unexpected field '{unexpected[0]}': " if unexpected else ""
                raise HTTPException(400, detail=f"{note}send {what} named '{field}'")
            names = [upload.filename or (field if single else f"{field}[{i}]") for i, upload in enumerate(uploads)]
            try:
                # Decoded from Starlette's spooled files: an upload above 1 MB is read from disk, not held in memory.
                return await run_localizer.batch([(upload.file, name) for upload, name in zip(uploads, names)], topk)
            except BatchPartError as error:
                status = 413 if isinstance(error.error, ImageTooLargeError) else 400
                # A single upload's answer names the image; a batch's also names its position.
                raise HTTPException(status, detail=str(error.error if single else error)) from error
        finally:
            await form.close()

    @app.post("/localize", dependencies=[require_key], openapi_extra=_UPLOAD_SCHEMA)
    async def localize(request: Request, topk: int = Query(5, ge=1, le=MAX_TOPK)) -> AsciiJSONResponse:
        # The form is read here, after the key check, so an unauthorised client never gets its upload parsed.
        form = await request.form(max_files=1, max_fields=1)
        return AsciiJSONResponse((await answer(form, UPLOAD_FIELD, topk))[0])

    if max_batch_images:

        @app.post("/localize/batch", dependencies=[require_key], openapi_extra=_BATCH_SCHEMA)
        async def localize_batch(request: Request, topk: int = Query(5, ge=1, le=MAX_TOPK)) -> AsciiJSONResponse:
            # As for /localize, the form is read only after the key check.
            form = await _read_batch_form(request, int(max_batch_images))
            return AsciiJSONResponse({"results": await answer(form, BATCH_FIELD, topk)})

    return app

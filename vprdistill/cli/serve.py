"""vprdistill serve: the localisation service over HTTP (FastAPI + uvicorn).

  vprdistill serve --index map_index
  VPRDISTILL_API_KEY=secret vprdistill serve --index map_index --host 0.0.0.0 --port 8000

  curl -F image=@photo.jpg 'http://127.0.0.1:8000/localize?topk=5'
  curl -F images=@a.jpg -F images=@b.jpg 'http://127.0.0.1:8000/localize/batch?topk=5'

It listens on 127.0.0.1 unless told otherwise. When the environment variable
VPRDISTILL_API_KEY is set, /info, /localize and /localize/batch need that key
(X-API-Key header or Authorization: Bearer).

Limits: bodies above --max-upload-mb and images above --max-megapixels get 413;
at most --decode-slots uploads are decoded at once, which bounds the memory
decoding adds to decode-slots × max-megapixels × 8 bytes (244 MiB by default);
a request must arrive in full within --request-timeout seconds, idle
connections close 5 s after their last answer, and connections beyond
--max-connections get 503. /localize/batch takes up to --max-batch-images
images a request (more get 413; 0 turns the endpoint off), within the same
body limit, each image checked against --max-megapixels.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from vprdistill.cli.common import add_command, add_device_args, add_index_model_arg, apply_device_args
from vprdistill.serve.limits import (
    DEFAULT_DECODE_SLOTS,
    DEFAULT_MAX_BATCH_IMAGES,
    DEFAULT_MAX_PIXELS,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT_S,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "serve", run, help="serve localisation over HTTP", description=__doc__)
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    add_index_model_arg(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="larger request bodies get 413")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="images with more pixels get 413, refused from their header")  # fmt: skip
    parser.add_argument("--decode-slots", type=int, default=DEFAULT_DECODE_SLOTS, help="uploads decoded at once")
    parser.add_argument("--max-batch-images", type=int, default=DEFAULT_MAX_BATCH_IMAGES,
                        help="images a POST /localize/batch may carry (more get 413); 0: no batch endpoint")  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                        help="seconds a client has to send a whole request")  # fmt: skip
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, help="more connections get 503")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_device_args(parser)


# The `serve` extra's packages: the web framework, the server, the multipart parser of uploads.
SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from vprdistill.utils.extras import require

    for module in SERVE_MODULES:
        require(module, "serve", "vprdistill serve")
    import uvicorn

    from vprdistill.deploy.localizer import Localizer
    from vprdistill.serve.app import create_app
    from vprdistill.serve.auth import API_KEY_ENV
    from vprdistill.serve.server import server_config

    for option in ("max_upload_mb", "max_megapixels", "decode_slots", "request_timeout", "max_connections"):
        if getattr(args, option) <= 0:
            raise ValueError(f"--{option.replace('_', '-')} must be positive")
    if args.max_batch_images < 0:
        raise ValueError("--max-batch-images must be 0 (no batch endpoint) or positive")
    device = apply_device_args(args)
    localizer = Localizer.from_index_folder(args.index, args.model, device=device)
    api_key = os.environ.get(API_KEY_ENV) or None
    if api_key is None and not _is_loopback(args.host):
        print(
            f"warning: listening on {args.host} without an API key; set {API_KEY_ENV} to require one", file=sys.stderr
        )
    app = create_app(
        localizer,
        int(args.max_upload_mb * 2**20),
        api_key=api_key,
        max_pixels=int(args.max_megapixels * 1e6),
        decode_slots=args.decode_slots,
        max_batch_images=args.max_batch_images,
    )
    print(
        f"serving index {args.index} ({len(localizer.index)} images) on http://{args.host}:{args.port} "
        f"({'API key required' if api_key else 'no API key'})",
        file=sys.stderr,
    )
    config = server_config(app, args.host, args.port, args.request_timeout, args.max_connections, args.log_level)
    uvicorn.Server(config).run()
    return 0

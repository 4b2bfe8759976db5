"""The service's limits and their defaults, in one place for the app, the server and ``vprdistill serve``."""

from __future__ import annotations

from vprdistill.deploy.inputs import DEFAULT_MAX_PIXELS

__all__ = [
    "DECODE_BYTES_PER_PIXEL",
    "DEFAULT_DECODE_SLOTS",
    "DEFAULT_MAX_BATCH_IMAGES",
    "DEFAULT_MAX_PIXELS",
    "KEEP_ALIVE_S",
    "MAX_CONNECTIONS",
    "MAX_HEADER_BYTES",
    "REQUEST_TIMEOUT_S",
    "decode_memory_bound",
]

DEFAULT_DECODE_SLOTS = 2  # uploads decoded at once: two keep two cores busy, and bound memory
# Bytes a decode may hold per pixel: PIL's RGB (4 bytes) plus one converted or
# rotated copy while a grey, palette, CMYK, alpha, 16-bit or EXIF-rotated photo becomes upright RGB
# (``vprdistill.data.images.to_upright_rgb`` composites and scales a block of rows at a time to stay
# within it). Measured peaks at 16 MP: 4.3 bytes a pixel for an RGB JPEG, 5.4 for a palette PNG,
# 6.7 for 16-bit grey, 8.3 to 8.5 for rotated, RGBA, LA and CMYK photos, 9.0 for a float TIFF; the
# excess over 8 is the file decoders' own buffers (a plain ``convert("RGB")`` peaks as high).
DECODE_BYTES_PER_PIXEL = 8
# Images one POST /localize/batch may carry. They share the decode slots above, so a batch does not
# raise the decode bound; what it adds is one network input a photo (3 × H × W float32: 3.7 MB at
# 480 × 640) held until the batch's forward pass, and that pass's activations.
DEFAULT_MAX_BATCH_IMAGES = 16

KEEP_ALIVE_S = 5  # an idle connection is closed this long after its last answer
REQUEST_TIMEOUT_S = 30.0  # a whole request (head and body) must arrive in this long: 10 MB at 2.7 Mbit/s
MAX_HEADER_BYTES = 16 * 1024  # h11's limit on the request line and headers; more gets 400
MAX_CONNECTIONS = 64  # open connections beyond this get 503


def decode_memory_bound(decode_slots: int, max_pixels: int) -> int:
    """Bytes that decoding uploads can add to the service's memory at most."""
    return decode_slots * max_pixels * DECODE_BYTES_PER_PIXEL

"""Descriptor latency of the full-size TSCM student and teacher (224×224), batch 1 and 32.

    uv run python benchmarks/tscm_latency.py [--device cpu|cuda] [--threads N]

On CUDA it also measures fp16 (autocast). Writes BENCHMARKS.md section
``tscm-latency-<device>``. Weights are random (no downloads): latency does not
depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.models.registry import build_model  # noqa: E402
from vprdistill.utils.device import resolve_device, set_threads  # noqa: E402


def time_model(
    model: torch.nn.Module, batch: int, size: int, device: torch.device, dtype: torch.dtype | None, repeats: int
) -> float:
    """Median ms per image over ``repeats`` timed batches (after one warm-up batch)."""
    images = torch.randn(batch, 3, size, size, device=device)
    timings = []
    with torch.inference_mode():
        for index in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if dtype is None:
                model(images)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    model(images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index:
                timings.append((time.perf_counter() - start) * 1e3 / batch)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    precisions = [("fp32", None)] + ([("fp16", torch.float16)] if device.type == "cuda" else [])

    rows = []
    for preset in ("tscm-student", "tscm-teacher"):
        model = build_model(preset).to(device).eval()
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        for precision, dtype in precisions:
            for batch in args.batches:
                ms = time_model(model, batch, args.image_size, device, dtype, args.repeats)
                rows.append((preset, parameters, precision, batch, ms))
                print(f"{preset} {precision} batch {batch}: {ms:.2f} ms/image", flush=True)
        del model
    student = {(p, b): ms for name, _, p, b, ms in rows if name == "tscm-student"}
    table = ["| model | params (M) | precision | batch | ms / image | teacher / student |", "|---|---|---|---|---|---|"]
    for name, parameters, precision, batch, ms in rows:
        ratio = ms / student[(precision, batch)] if name == "tscm-teacher" else 1.0
        table.append(f"| {name} | {parameters:.2f} | {precision} | {batch} | {ms:.2f} | {ratio:.2f}× |")
    body = "\n".join(
        [
            f"## TSCM full-size descriptor latency ({device.type})",
            "",
            f"Command: `uv run python benchmarks/tscm_latency.py --device {args.device}"
            + (f" --threads {args.threads}" if args.threads else "")
            + "`",
            f"Machine: {machine_description()}; date {today()}; device {device}; "
            f"{args.image_size}×{args.image_size} px; median of {args.repeats} batches after one warm-up; random weights. "
            "The paper's 1.3 ms per descriptor is a GPU figure; no GPU was lent to this task, so only CPU figures exist.",
            "",
            *table,
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"tscm-latency-{device.type}", body)


if __name__ == "__main__":
    main()

"""TSCM student and teacher latency on a GPU against the paper's figures (1.3 ms a descriptor, 0.6 ms a match).

    uv run --no-sync python benchmarks/gpu_latency.py [--device cuda] [--image-size 224]
        [--batches 1 8 32] [--modes eager compiled onnxruntime] [--db-size 10000] [--dim 2048] [--no-write]

For each model (``tscm-student``, ``tscm-teacher``; random weights, latency does
not depend on them), batch size, precision (fp32, fp16) and runtime:
- ``eager``: PyTorch (fp16 through autocast);
- ``compiled``: ``torch.compile`` of the same module;
- ``onnxruntime``: the exported graph on the first available GPU provider
  (TensorRT, CUDA; needs the ``gpu`` extra), fp16 through
  ``vprdistill.deploy.precision.convert_fp16``.
Then matching: ms per query of exact inner-product search of one query and of a
batch of 1,000 against a ``--db-size`` × ``--dim`` database on the device.
Writes BENCHMARKS.md section ``gpu-latency-<device type>``. ``--device cpu
--preset-suffix -tiny`` runs the same code on the tiny presets, as a check of
the script on a machine without a GPU (its figures are not GPU figures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import load_average, machine_description, today, update_section  # noqa: E402
from vprdistill.models.registry import build_model  # noqa: E402
from vprdistill.utils.device import resolve_device  # noqa: E402


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(run, repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls after two warm-ups (compilation and autotuning happen there)."""
    for _ in range(2):
        run()
    synchronise(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronise(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def torch_runner(model: torch.nn.Module, images: torch.Tensor, fp16: bool, device: torch.device):
    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            return model(images)

    return run


def onnx_sessions(model: torch.nn.Module, size: int, folder: Path, device: torch.device) -> dict[str, object]:
    """``{"fp32": session, "fp16": session}`` on the first GPU provider (the CPU one when there is none)."""
    from vprdistill.deploy.bench import available_providers
    from vprdistill.deploy.export import export_onnx, onnx_session
    from vprdistill.deploy.precision import convert_fp16

    fp32 = folder / "model.onnx"
    export_onnx(model, fp32, size, opset=18)
    model.to(device)
    fp16 = folder / "model.fp16.onnx"
    convert_fp16(fp32, fp16)
    provider = available_providers()[0] if device.type == "cuda" else "CPUExecutionProvider"
    return {
        "fp32": onnx_session(fp32, provider=provider),
        "fp16": onnx_session(fp16, provider=provider),
        "provider": provider,
    }


def matching_rows(db_size: int, dim: int, device: torch.device, repeats: int) -> list[tuple[str, float]]:
    """ms per query of exact search (top 10) for one query and for a batch of 1,000, on ``device``."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    database = torch.nn.functional.normalize(torch.randn(db_size, dim, generator=generator), dim=1).to(device)
    queries = torch.nn.functional.normalize(torch.randn(1000, dim, generator=generator), dim=1).to(device)
    rows = []
    for label, batch in (("1 query", queries[:1]), ("1,000 queries", queries)):
        with torch.inference_mode():
            ms = best_ms(lambda batch=batch: torch.topk(batch @ database.T, 10, dim=1), repeats, device)
        rows.append((label, ms / len(batch)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled", "onnxruntime"],
                        choices=["eager", "compiled", "onnxruntime"])  # fmt: skip
    parser.add_argument("--db-size", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preset-suffix", default="", help="-tiny: the tiny presets (a check of the script)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    load_before = load_average()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    size = args.image_size

    rows: list[tuple[str, str, int, str, float]] = []
    providers = set()
    for preset in (f"tscm-student{args.preset_suffix}", f"tscm-teacher{args.preset_suffix}"):
        model = build_model(preset).to(device).eval()
        compiled = torch.compile(model) if "compiled" in args.modes else None
        with tempfile.TemporaryDirectory() as folder:
            sessions = onnx_sessions(model, size, Path(folder), device) if "onnxruntime" in args.modes else {}
            if sessions:
                providers.add(sessions["provider"])
            for batch in args.batches:
                images = torch.randn(batch, 3, size, size, device=device)
                array = images.cpu().numpy()
                for precision in ("fp32", "fp16"):
                    fp16 = precision == "fp16"
                    timings = {"eager": torch_runner(model, images, fp16, device)}
                    if compiled is not None:
                        timings["compiled"] = torch_runner(compiled, images, fp16, device)
                    if sessions:
                        session = sessions[precision]
                        timings["onnxruntime"] = lambda session=session, array=array: session.run(
                            None, {"images": array}
                        )
                    for mode, run in timings.items():
                        ms = best_ms(run, args.repeats, device) / batch
                        rows.append((preset, mode, batch, precision, ms))
                        print(f"{preset} {mode} batch {batch} {precision}: {ms:.3f} ms/image", flush=True)
        del model, compiled
    matching = matching_rows(args.db_size, args.dim, device, args.repeats)
    load_after = load_average()

    table = ["| model | runtime | batch | fp32 ms / image | fp16 ms / image |", "|---|---|---|---|---|"]
    by = {(p, m, b, q): ms for p, m, b, q, ms in rows}
    for preset, mode, batch in dict.fromkeys((p, m, b) for p, m, b, _, _ in rows):
        table.append(
            f"| {preset} | {mode} | {batch} | {by[preset, mode, batch, 'fp32']:.3f} | {by[preset, mode, batch, 'fp16']:.3f} |"
        )
    match_table = ["| search | ms / query |", "|---|---|"] + [f"| {label} | {ms:.4f} |" for label, ms in matching]
    body = "\n".join(
        [
            f"## gpu-latency: TSCM descriptor and matching latency on {device_name}",
            "",
            f"Command: `uv run --no-sync python benchmarks/gpu_latency.py {' '.join(sys.argv[1:])}`",
            f"Machine: {machine_description()}; device {device_name}; date {today()}; "
            f"load average {load_before} before, {load_after} after.",
            f"- {size}×{size} px, random weights, best of {args.repeats} after two warm-ups; ONNX Runtime provider "
            f"{', '.join(sorted(providers)) or 'none'}. The paper: 1.3 ms per descriptor (student), "
            f"under 0.6 ms per query against a 10k database.",
            "",
            *table,
            "",
            f"Exact search (inner product, top 10) against {args.db_size:,} × {args.dim} float32 on the device:",
            "",
            *match_table,
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"gpu-latency-{device.type}", body)


if __name__ == "__main__":
    main()

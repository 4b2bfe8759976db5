"""Memory and compute of one TSCM training step at full size (224×224), for planning a Pittsburgh run.

    uv run python benchmarks/tscm_train_memory.py [--device cpu|cuda] [--tuples 1] [--negatives 10]

One step is what the training loop does per batch: the model's forward and backward pass
over ``tuples × (1 query + 1 positive + negatives)`` images, and an Adam update. For the
student the frozen teacher's forward pass (no gradient) is included, as when a teacher is
re-run on a batch. Weights are random (no downloads): memory and FLOPs do not depend on them.

On CUDA the figure is ``torch.cuda.max_memory_allocated``. On a CPU it is the growth of the
process's peak resident memory over the step, which holds the same tensors (activations,
gradients, Adam's two moments) plus allocator slack, so it is an estimate of the GPU figure,
labelled as such. Activation memory grows linearly with the batch, so the table extrapolates
from the measured batch to the presets' 8 tuples: ``fixed + 8/tuples · (measured − fixed)``,
where ``fixed`` = parameters + gradients + Adam moments (4 bytes each, fp32).
Writes BENCHMARKS.md section ``tscm-train-memory-<device>``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.models.registry import build_model  # noqa: E402
from vprdistill.train.config import load_config  # noqa: E402
from vprdistill.utils.device import resolve_device, set_threads  # noqa: E402

# Pitts30k training split: 7,416 queries, 10,000 database images (docs/METHODS.md §2).
PITTS30K_TRAIN_QUERIES = 7416
PITTS30K_TRAIN_IMAGES = 7416 + 10000


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _step(
    student: torch.nn.Module, teacher: torch.nn.Module | None, images: torch.Tensor, optimizer: torch.optim.Optimizer
) -> None:
    optimizer.zero_grad(set_to_none=True)
    descriptors = student(images)
    loss = descriptors.square().sum()
    if teacher is not None:
        with torch.no_grad():
            target = teacher(images)
        loss = loss + (descriptors - target).square().sum()
    loss.backward()
    optimizer.step()


def measure(preset: str, teacher_preset: str | None, images_per_step: int, device: torch.device) -> dict:
    """Peak memory (bytes), fixed memory, seconds and FLOPs of one step of ``preset``."""
    model_config = load_config(preset).model
    student = build_model(model_config).to(device).train()
    teacher = build_model(load_config(teacher_preset).model).to(device).eval() if teacher_preset else None
    if teacher is not None:
        teacher.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-5)
    parameters = sum(p.numel() for p in student.parameters())
    images = torch.randn(images_per_step, 3, 224, 224, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            student.eval()
            student(images[:1])
            student.train()
    forward_flops_per_image = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _peak_rss_bytes()
    start = time.perf_counter()
    _step(student, teacher, images, optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _peak_rss_bytes() - before
    # Memory already held before the step (weights, the images) is not in `peak`; the step adds
    # gradients and Adam's moments (3 × 4 bytes per parameter) and the activations.
    return {
        "parameters": parameters,
        "weights": 4 * parameters,
        "fixed_step": 12 * parameters,
        "step_growth": peak,
        "seconds": seconds,
        "forward_flops_per_image": forward_flops_per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tuples", type=int, default=1, help="tuples in the measured step (the presets use 8)")
    parser.add_argument("--negatives", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device(args.device)
    images_per_tuple = 2 + args.negatives
    images_per_step = args.tuples * images_per_tuple
    cases = [
        ("TSCM teacher, recommended", "tscm/pitts30k-teacher", None),
        ("TSCM teacher, official", "tscm/pitts30k-teacher-official", None),
        ("TSCM student + frozen teacher", "tscm/pitts30k-student", "tscm/pitts30k-teacher"),
    ]
    if args.case is not None:
        _, preset, teacher_preset = cases[args.case]
        print(json.dumps(measure(preset, teacher_preset, images_per_step, device)))
        return
    gib = 2**30
    rows = []
    for index, (label, _preset, teacher_preset) in enumerate(cases):
        # A fresh process per case: the peak resident memory of a process only ever grows.
        child = [
            sys.executable,
            __file__,
            "--device",
            args.device,
            "--tuples",
            str(args.tuples),
            "--negatives",
            str(args.negatives),
            "--case",
            str(index),
        ]
        if args.threads:
            child += ["--threads", str(args.threads)]
        output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        activations = max(figures["step_growth"] - figures["fixed_step"], 0)
        at_eight = figures["weights"] + figures["fixed_step"] + activations * 8 / args.tuples
        if teacher_preset:
            teacher_parameters = sum(p.numel() for p in build_model(load_config(teacher_preset).model).parameters())
            at_eight += 4 * teacher_parameters
        # Per epoch: forward + backward ≈ 3 forward passes for every tuple image, plus one forward
        # pass over the split for each descriptor-cache refresh (refresh_every = 1000 queries).
        refreshes = -(-PITTS30K_TRAIN_QUERIES // 1000)
        epoch_flops = figures["forward_flops_per_image"] * (
            3 * PITTS30K_TRAIN_QUERIES * images_per_tuple + refreshes * PITTS30K_TRAIN_IMAGES
        )
        rows.append((label, figures, activations, at_eight, epoch_flops))
        print(label, {k: v for k, v in figures.items()}, flush=True)
    kind = "measured" if device.type == "cuda" else "estimated from the CPU's peak resident memory"
    table = [
        f"| model | params (M) | step growth, {args.tuples} tuple(s) (GiB) | activations per tuple (GiB) "
        "| memory at 8 tuples (GiB) | forward GFLOP / image | PFLOP per Pitts30k epoch | s / step here |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, figures, activations, at_eight, epoch_flops in rows:
        table.append(
            f"| {label} | {figures['parameters'] / 1e6:.2f} | {figures['step_growth'] / gib:.2f} | "
            f"{activations / args.tuples / gib:.2f} | {at_eight / gib:.1f} | "
            f"{figures['forward_flops_per_image'] / 1e9:.1f} | {epoch_flops / 1e15:.1f} | {figures['seconds']:.1f} |"
        )
    body = "\n".join(
        [
            f"## TSCM full-size training step: memory and compute ({device.type})",
            "",
            f"Command: `uv run python benchmarks/tscm_train_memory.py --device {args.device} --tuples {args.tuples}`",
            f"Machine: {machine_description()}; date {today()}; device {device}; 224×224 px; "
            f"{images_per_tuple} images per tuple; fp32; random weights. Memory is {kind}; the 8-tuple column "
            "extrapolates the activations linearly and adds weights, gradients and Adam's moments (and the "
            "frozen teacher's weights for the student). Epoch PFLOP: 3 forward passes per training image "
            "(forward + backward) plus one pass over the split per 1,000-query cache refresh.",
            "",
            *table,
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"tscm-train-memory-{device.type}", body)


if __name__ == "__main__":
    main()

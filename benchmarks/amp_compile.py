"""Training steps per second with mixed precision and torch.compile: off vs bf16 vs compile.

Each mode runs the training loop's own step (``vprdistill.train.amp_compile``:
autocast of the student's forward, descriptors cast to float32, triplet loss,
backward, Adam step) on one fixed batch of mined-tuple layout — B queries, B
positives, B×Nn negatives — so image decoding and mining do not dilute the
difference. Every mode starts from the same weights; the first step
(compilation included, into an empty compile cache unless
``--keep-compile-cache``) is reported apart, then the modes take turns for a
few rounds and the median steps/s of each is kept, so slow phases of a shared
machine hit every mode alike. Writes the ``amp-compile`` section of BENCHMARKS.md.

    python benchmarks/amp_compile.py [--preset tscm-student-tiny] [--image-size 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.losses import build_loss  # noqa: E402
from vprdistill.models.registry import build_model  # noqa: E402
from vprdistill.train.amp_compile import StudentForward, autocast, grad_scaler  # noqa: E402
from vprdistill.train.tuples import TupleBatch, split_tuple_descriptors  # noqa: E402
from vprdistill.utils.device import set_threads  # noqa: E402
from vprdistill.utils.seed import seed_everything  # noqa: E402

MODES = {  # name: (amp, compile)
    "off": ("off", False),
    "bf16": ("bf16", False),
    "compile": ("off", True),
    "compile+bf16": ("bf16", True),
}


def tuple_batch(tuples: int, negatives: int, image_size: int, channels: int, seed: int) -> TupleBatch:
    """A batch laid out like ``collate_tuples`` output: (2B + B·Nn, C, H, W) images, all negatives valid."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((2 * tuples + tuples * negatives, channels, image_size, image_size), generator=generator)
    return TupleBatch(
        images=images,
        query_index=torch.arange(tuples),
        positive_index=torch.arange(tuples),
        negative_index=torch.arange(tuples * negatives).view(tuples, negatives),
        negative_mask=torch.ones((tuples, negatives), dtype=torch.bool),
    )


class StepRunner:
    """One mode's student, optimiser and scaler, stepping on the fixed batch like the training loop."""

    def __init__(self, model: torch.nn.Module, amp: str, compile: bool, batch: TupleBatch, lr: float) -> None:
        self.device = torch.device("cpu")
        self.model = model.train()
        self.amp = amp
        self.forward = StudentForward(model, compile=compile)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.scaler = grad_scaler(amp, self.device)
        self.loss = build_loss({"name": "triplet", "margin": 0.1})
        self.batch = batch

    def step(self) -> float:
        with autocast(self.amp, self.device):
            descriptors = self.forward(self.batch.images)
        output = self.loss(split_tuple_descriptors(descriptors.float(), self.batch), None)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(output.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(output.total.detach())

    def timed(self, steps: int) -> float:
        """Steps per second over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="tscm-student-tiny", help="model preset (the student)")
    parser.add_argument("--image-size", type=int, default=96, help="square input side in pixels")
    parser.add_argument("--tuples", type=int, default=4, help="tuples per batch (batch_size)")
    parser.add_argument("--negatives", type=int, default=4, help="negatives per tuple")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per mode (compilation)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds; the modes take turns in each")
    parser.add_argument("--steps", type=int, default=3, help="steps per mode per round")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--keep-compile-cache",
        action="store_true",
        help="reuse the inductor cache of earlier runs (the first step then omits most compile time)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.keep_compile_cache:
        return run(args, argv)
    # A fresh cache: the first compiled step then shows what a new training run pays.
    cache = tempfile.mkdtemp(prefix="amp_compile_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        return run(args, argv)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Time the modes and write the report section."""

    seed_everything(args.seed)
    reference = build_model(dict(preset=args.preset, image_size=[args.image_size, args.image_size]))
    batch = tuple_batch(args.tuples, args.negatives, args.image_size, reference.input_channels, args.seed)
    images = batch.images.shape[0]
    print(
        f"{args.preset} at {args.image_size}px, {args.tuples} tuples x (2 + {args.negatives}) = {images} images "
        f"per step, {torch.get_num_threads()} threads"
    )

    runners: dict[str, StepRunner] = {}
    first_step: dict[str, float] = {}
    first_loss: dict[str, float] = {}
    for name in args.modes:
        amp, compile = MODES[name]
        runner = StepRunner(copy.deepcopy(reference), amp, compile, batch, lr=1e-4)
        start = time.perf_counter()
        first_loss[name] = runner.step()
        first_step[name] = time.perf_counter() - start
        for _ in range(args.warmup - 1):
            runner.step()
        if compile and not runner.forward.is_compiled:
            print(f"{name}: compilation failed, the mode ran eagerly (see the warning above)")
        runners[name] = runner
        print(f"{name}: first step {first_step[name]:.1f} s, loss {first_loss[name]:.5f}")

    rates: dict[str, list[float]] = {name: [] for name in args.modes}
    for _ in range(args.rounds):
        for name in args.modes:
            rates[name].append(runners[name].timed(args.steps))
    median = {name: statistics.median(values) for name, values in rates.items()}

    rows = [
        "| mode | steps/s | images/s | vs off (median, range over rounds) | first step (s) | first loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in args.modes:
        ratio = "-"
        if "off" in rates:
            # Ratios within a round compare modes measured seconds apart, under the same machine load.
            per_round = sorted(a / b for a, b in zip(rates[name], rates["off"]))
            ratio = f"{statistics.median(per_round):.2f}x ({per_round[0]:.2f}–{per_round[-1]:.2f})"
        compiled_note = "" if not MODES[name][1] or runners[name].forward.is_compiled else " (fell back to eager)"
        rows.append(
            f"| {name}{compiled_note} | {median[name]:.2f} | {median[name] * images:.0f} | {ratio} | "
            f"{first_step[name]:.1f} | {first_loss[name]:.5f} |"
        )
    table = "\n".join(rows)
    shifts = [
        abs(first_loss[n] / first_loss["off"] - 1) for n in args.modes if MODES[n][0] == "bf16" and "off" in first_loss
    ]
    loss_shift = max(shifts) if shifts else None
    print(table)

    command = "python benchmarks/amp_compile.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    body = "\n".join(
        [
            "## Mixed precision and torch.compile: training steps/s",
            "",
            f"- Machine: {machine_description()}",
            f"- Date: {today()}; threads: {torch.get_num_threads()}",
            f"- Model: `{args.preset}` (student), image size {args.image_size}×{args.image_size}; batch "
            f"{args.tuples} tuples × (query + positive + {args.negatives} negatives) = {images} images per step",
            "- What is timed: the training loop's step (autocast forward, triplet loss in float32, backward, "
            "Adam step) on one fixed batch; "
            f"{args.warmup} untimed warm-up steps per mode (the first compiles), then {args.rounds} rounds × "
            f"{args.steps} steps with the modes taking turns; steps/s is the median round, the ratio the median "
            "of the rounds' ratios. The first step includes compilation"
            + (
                " (inductor cache of earlier runs reused)"
                if args.keep_compile_cache
                else " into an empty inductor cache"
            ),
            f"- Command: `{command.strip()}`",
            "",
            table,
            "",
            "The first loss of each mode is computed from the same weights and batch"
            + (f": bf16 moves it by {loss_shift:.2%}" if loss_shift is not None else "")
            + ". Ratios come from one run on a shared machine; the absolute figures move with its load.",
        ]
    )
    if not args.no_write:
        print(f"updated {update_section('amp-compile', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

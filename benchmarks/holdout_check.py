"""New-seed holdout check: do the demo's trained RGB models beat thumbnail-16 on a city they never saw?

    uv run python benchmarks/holdout_check.py --runs demo_out/runs --seed 7 [--data /tmp/sc-holdout-7]

Generates a SynthCity ``small`` dataset with a seed no demo run trained or was
validated on (a new city, new traversals), evaluates thumbnail-16 and every
run folder under ``--runs`` that reads photos on its test split, and checks,
for each model, overall and under every query condition, that its R@1 is above
the thumbnail's. Prints the table with the paired difference (bootstrap 95 %
interval, exact McNemar p) and writes the section ``holdout-check`` of
RESULTS.md. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import load_average, machine_description, today, update_section
from vprdistill.data.readers import open_dataset
from vprdistill.data.synth import generate
from vprdistill.eval.statistics import paired_comparison
from vprdistill.experiments.baselines import evaluate_run_row, thumbnail_row
from vprdistill.models.checkpoint import load_model
from vprdistill.utils.device import set_threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="folder of run folders (the demo's OUT/runs)")
    parser.add_argument("--seed", type=int, default=7, help="SynthCity seed of the holdout city (not the demo's)")
    parser.add_argument("--data", type=Path, default=None, help="where the holdout dataset goes (default /tmp/...)")
    parser.add_argument("--image-size", type=int, default=64, help="side the models and the thumbnail read")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args()
    set_threads(args.threads)
    started, load_before = time.time(), load_average()
    data = args.data or Path(f"/tmp/synthcity-holdout-seed{args.seed}")
    # Only the test split is read; the other splits are kept as small as the generator allows.
    generate(
        data,
        preset="small",
        seed=args.seed,
        image_size=128,
        progress=False,
        train_blocks=1,
        val_blocks=1,
        queries_train=8,
        queries_val=8,
    )
    test_set = open_dataset(data, split="test")
    size = (args.image_size, args.image_size)
    thumbnail = thumbnail_row(test_set, size, "cpu")
    conditions = list(test_set.query_conditions())
    names = sorted(set(conditions))
    runs = []
    for run_dir in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        try:
            channels = load_model(run_dir).input_channels
        except (FileNotFoundError, ValueError) as error:
            print(f"skipped {run_dir}: not a loadable run folder ({error})", file=sys.stderr)
            continue
        if channels == 3:
            runs.append(run_dir)
    if not runs:
        print(f"no RGB run folders under {args.runs}", file=sys.stderr)
        return 2
    lines = [
        "| model | R@1 [95 % CI] | − thumbnail-16, paired [95 % CI], p | " + " | ".join(names) + " | all above |",
        "|---" * (len(names) + 4) + "|",
    ]
    lines.append(
        f"| thumbnail-16 | {thumbnail.recall['1']:.1f} [{thumbnail.recall_ci['1'][0]:.1f}, "
        f"{thumbnail.recall_ci['1'][1]:.1f}] | – | "
        + " | ".join(f"{thumbnail.condition_recall(c):.1f}" for c in names)
        + " | – |"
    )
    failures = []
    for run_dir in runs:
        row = evaluate_run_row(run_dir, test_set, run_dir.name, "", image_size=size, device="cpu")
        paired = paired_comparison(row.hits["1"], thumbnail.hits["1"])
        above = {c: row.condition_recall(c) > thumbnail.condition_recall(c) for c in names}
        overall = row.recall["1"] > thumbnail.recall["1"]
        ok = overall and all(above.values())
        if not ok:
            failures.append(run_dir.name)
        cells = [f"{row.condition_recall(c):.1f}{'' if above[c] else ' ✗'}" for c in names]
        lines.append(
            f"| {run_dir.name} | {row.recall['1']:.1f} [{row.recall_ci['1'][0]:.1f}, {row.recall_ci['1'][1]:.1f}]"
            f"{'' if overall else ' ✗'} | {paired} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |"
        )
    table = "\n".join(lines)
    minutes = (time.time() - started) / 60
    verdict = (
        "every model is above thumbnail-16 overall and under every condition"
        if not failures
        else ("not above thumbnail-16 everywhere (✗ marks where): " + ", ".join(failures))
    )
    body = (
        "## New-seed holdout check (SynthCity `small`, a city the demo never saw)\n\n"
        f"Command: `uv run python benchmarks/holdout_check.py --runs {args.runs} --seed {args.seed}`\n"
        f"Machine: {machine_description()}; date {today()}; {minutes:.1f} min; load average {load_before} before, "
        f"{load_average()} after. Holdout test split: {test_set.num_queries} queries "
        f"({len(names)} conditions × {test_set.num_queries // max(len(names), 1)}), {test_set.num_database} "
        f"database images, 25 m, {args.image_size} px. Paired differences: bootstrap over queries "
        "(10,000 resamples), exact McNemar p. A per-condition figure covers 60 queries (one query = 1.7 points).\n\n"
        f"{table}\n\nResult: {verdict}.\n"
    )
    print(body)
    if not args.no_write:
        update_section("holdout-check", body, "RESULTS.md")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

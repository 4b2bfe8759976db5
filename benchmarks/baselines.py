"""Baselines on SynthCity: the thumbnail-16 preset and the tiny presets untrained, with 95 % intervals.

    uv run python benchmarks/baselines.py --dataset data/synthcity-small --seeds 0 1 2

Writes the section ``baselines-synthcity`` of RESULTS.md: thumbnail-16 (and its
centring variants) with bootstrap intervals over the test queries, per query
condition, and each tiny preset at its random initialisation over several
seeds (mean with a Student-t interval over seeds, and each seed's bootstrap
interval). The question: what does a trained model have to beat before its
training can be said to have taught it anything?
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import load_average, machine_description, today, update_section
from vprdistill.data.readers import open_dataset
from vprdistill.data.transforms import build_transform
from vprdistill.eval.statistics import detectable_difference, mean_interval, paired_comparison
from vprdistill.experiments.baselines import evaluate_model_row
from vprdistill.models.registry import build_model
from vprdistill.utils.device import set_threads
from vprdistill.utils.seed import seed_everything

PRESETS = ("tscm-teacher-tiny", "tscm-student-tiny", "structvpr-rgb-tiny")
# (label, centre, interpolation, fit the database mean): the preset first, then the variants it was chosen against.
THUMBNAIL_VARIANTS = (
    ("thumbnail-16 (preset: area, per-channel centring)", "channel", "area", False),
    ("per-image centring (one mean)", "image", "area", False),
    ("no centring", "none", "area", False),
    ("database mean subtracted", "none", "area", True),
    ("bilinear (antialiased) instead of area", "channel", "bilinear", False),
)


def _database_tensor(test_set, size: int) -> torch.Tensor:
    transform = build_transform(size)
    return torch.stack([transform(Image.open(path).convert("RGB")) for path in test_set.database_paths])


def _ci(row, n: str = "1") -> str:
    low, high = row.recall_ci[n]
    return f"{row.recall[n]:.1f} [{low:.1f}, {high:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", type=Path, required=True, help="SynthCity dataset (vprdistill synth OUT --preset small)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--section", default="baselines-synthcity", help="RESULTS.md section the tables go to")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device("cpu")
    test_set = open_dataset(args.dataset, split="test")
    size = (args.image_size, args.image_size)
    conditions = sorted(set(test_set.query_conditions()))
    load_before = load_average()
    start = time.perf_counter()

    thumbnails = []
    for label, centre, interpolation, fit in THUMBNAIL_VARIANTS:
        model = build_model("thumbnail-16", centre=centre, interpolation=interpolation)
        if fit:
            model.net.fit_mean(_database_tensor(test_set, args.image_size))
        thumbnails.append(evaluate_model_row(model, test_set, label, "", size, device, kind="baseline"))
        print(f"{label}: R@1 {_ci(thumbnails[-1])}", flush=True)

    untrained: dict[str, list] = {}
    for preset in args.presets:
        for seed in args.seeds:
            seed_everything(seed)
            model = build_model(preset, image_size=list(size)).eval()
            row = evaluate_model_row(model, test_set, preset, "", size, device, kind="untrained")
            untrained.setdefault(preset, []).append(row)
            print(f"{preset} seed {seed}: R@1 {_ci(row)}", flush=True)
    minutes = (time.perf_counter() - start) / 60
    load_after = load_average()

    thumb = thumbnails[0]
    queries = len(thumb.hits["1"])
    table = [
        "| Model | seeds | R@1 [95 % CI] | R@5 [95 % CI] | R@10 [95 % CI] | R@1 − thumbnail-16, paired [95 % CI], p | "
        + " | ".join(f"{c} R@1" for c in conditions)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(conditions),
    ]
    for index, row in enumerate(thumbnails):
        paired = str(paired_comparison(row.hits["1"], thumb.hits["1"])) if index else "–"
        cells = [_ci(row, n) for n in ("1", "5", "10")] + [paired]
        cells += [f"{row.recall_per_condition[c]['1']:.1f}" for c in conditions]
        table.append(f"| {row.name} | – | " + " | ".join(cells) + " |")
    for preset, rows in untrained.items():
        cells = []
        for n in ("1", "5", "10"):
            mean, low, high = mean_interval([r.recall[n] for r in rows])
            cells.append(f"{mean:.1f} [{low:.1f}, {high:.1f}]")
        cells.append("per seed below")
        cells += [f"{sum(r.recall_per_condition[c]['1'] for r in rows) / len(rows):.1f}" for c in conditions]
        table.append(f"| {preset}, untrained | {len(rows)} | " + " | ".join(cells) + " |")
    per_seed = [
        f"{preset}: "
        + ", ".join(
            f"seed {s} {_ci(r)} (− thumbnail-16: {paired_comparison(r.hits['1'], thumb.hits['1'])})"
            for s, r in zip(args.seeds, rows)
        )
        for preset, rows in untrained.items()
    ]
    gap = detectable_difference(thumb.recall["1"], queries)
    condition_queries = min(test_set.query_conditions().count(c) for c in conditions)
    gap_condition = detectable_difference(thumb.recall["1"], condition_queries)

    command = (
        f"uv run python benchmarks/baselines.py --dataset {args.dataset} --seeds {' '.join(map(str, args.seeds))} "
        f"--image-size {args.image_size}" + (f" --threads {args.threads}" if args.threads else "")
    )
    body = "\n".join(
        [
            "## Baselines on SynthCity small",
            "",
            f"Command: `{command}`",
            (
                f"Machine: {machine_description()}; date {today()}; CPU, {args.image_size}×{args.image_size} px "
                f"input, batch 32; {minutes:.1f} min in all; load average (1, 5, 15 min) {load_before} before, "
                f"{load_after} after. Test split: {test_set.num_queries} queries ({condition_queries} per "
                f"condition), {test_set.num_database} database images, 25 m; exact inner-product search."
            ),
            "",
            (
                "Thumbnail rows: one evaluation each, with 95 % percentile bootstrap intervals over the test "
                "queries (10,000 resamples, seed 0). Untrained rows: the preset at its random initialisation (no "
                "ImageNet weights, as the tiny runs in this file start), mean over seeds of initialisation with a "
                "95 % Student-t interval over the seeds; per-condition figures are means over the seeds."
            ),
            "",
            *table,
            "",
            "Each seed's R@1 with its bootstrap interval over queries, and its paired difference from thumbnail-16 "
            "(R@1 points, bootstrap interval, exact McNemar p): " + "; ".join(per_seed) + ".",
            "",
            (
                f"Smallest R@1 gap two independent figures near {thumb.recall['1']:.0f} % can show at the 95 % level "
                f"(z·sqrt(2p(1−p)/n)): {gap:.1f} points over {queries} queries, {gap_condition:.1f} points within one "
                f"condition ({condition_queries} queries)."
            ),
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section, body, file_name="RESULTS.md")


if __name__ == "__main__":
    main()

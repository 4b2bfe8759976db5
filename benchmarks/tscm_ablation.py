"""TSCM ablation on SynthCity: one tiny teacher, one tiny student per KD variant and seed, same budget.

    uv run python benchmarks/tscm_ablation.py --dataset data/synthcity-small --seeds 0 1

Writes the table to RESULTS.md (section ``tscm-ablation``) and the raw rows
to ``OUT/tscm_ablation.json``. The claim tested: the cross-metric student
matches or beats the teacher and beats the student without KD.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._experiments_helpers import Budget, mean_and_spread, teachers_override, train_variant  # noqa: E402
from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.data.readers import open_dataset  # noqa: E402
from vprdistill.experiments.baselines import evaluate_run_row as evaluate_run  # noqa: E402
from vprdistill.utils.device import resolve_device, set_threads  # noqa: E402

VARIANTS = [
    ("none", "no KD (triplet only)"),
    ("soft", "soft only"),
    ("cross_metric", "cross-metric only"),
    ("soft_cross_metric", "soft + cross-metric (paper form)"),
    ("official", "official form 0.5·(margin + D)²"),
    ("rkd", "RKD (distance-wise)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", type=Path, required=True, help="SynthCity dataset (vprdistill synth OUT --preset small)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/tscm_ablation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=Budget.epochs)
    parser.add_argument("--image-size", type=int, default=Budget.image_size)
    parser.add_argument("--max-train-queries", type=int, default=Budget.max_train_queries)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[v for v, _ in VARIANTS],
        choices=[v for v, _ in VARIANTS],
        help="KD variants to train",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--section", default="tscm-ablation", help="RESULTS.md section the table goes to")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    set_threads(args.threads)
    device = resolve_device("cpu")
    budget = Budget(image_size=args.image_size, epochs=args.epochs, max_train_queries=args.max_train_queries)
    common = [f"data.dataset={args.dataset}", "device=cpu"] + budget.overrides()
    test_set = open_dataset(args.dataset, split="test")
    size = (budget.image_size, budget.image_size)

    rows: list[dict] = []
    teacher_dir, teacher_command = train_variant("tscm/synth-teacher-tiny", common + ["seed=0"], args.out / "teacher")
    teacher = evaluate_run(teacher_dir, test_set, "teacher", "", size, device, command=teacher_command)
    rows.append({"variant": "teacher", "label": "TSCM teacher (tiny)", "seed": 0, **teacher.to_dict()})
    print(f"teacher: R@1 {teacher.recall['1']:.1f}", flush=True)

    variants = [(v, label) for v, label in VARIANTS if v in args.variants]
    for seed in args.seeds:
        for variant, label in variants:
            run_dir = args.out / f"student-{variant}-seed{seed}"
            if variant == "none":
                preset, extra = "tscm/synth-student-tiny-nokd", []
            else:
                preset = "tscm/synth-student-tiny"
                extra = [teachers_override([{"run": str(teacher_dir), "input": "rgb", "loss": {"name": variant}}])]
            run_dir, command = train_variant(preset, common + [f"seed={seed}"] + extra, run_dir)
            row = evaluate_run(run_dir, test_set, label, "", size, device, command=command)
            rows.append({"variant": variant, "label": label, "seed": seed, **row.to_dict()})
            print(f"{variant} seed {seed}: R@1 {row.recall['1']:.1f}", flush=True)

    (args.out / "tscm_ablation.json").write_text(json.dumps(rows, indent=2))
    table = ["| Model | seeds | Params (M) | R@1 | R@5 | R@10 | ms / image |", "|---|---|---|---|---|---|---|"]
    for variant, label in [("teacher", "TSCM teacher (tiny)")] + variants:
        group = [r for r in rows if r["variant"] == variant]
        recalls = {n: [r["recall"][n] for r in group] for n in ("1", "5", "10")}
        table.append(
            f"| {label} | {len(group)} | {group[0]['parameters'] / 1e6:.2f} | "
            + " | ".join(mean_and_spread(recalls[n]) for n in ("1", "5", "10"))
            + f" | {sum(r['ms_per_image'] for r in group) / len(group):.2f} |"
        )
    body = "\n".join(
        [
            "## TSCM ablation on SynthCity (tiny presets)",
            "",
            f"Command: `uv run python benchmarks/tscm_ablation.py --dataset {args.dataset} --seeds "
            f"{' '.join(map(str, args.seeds))} --epochs {args.epochs} --max-train-queries {args.max_train_queries}"
            " --variants " + " ".join(args.variants) + (f" --threads {args.threads}" if args.threads else "") + "`",
            f"Machine: {machine_description()}; date {today()}; CPU, batch 8 tuples, {budget.image_size}×{budget.image_size} px, "
            f"{budget.epochs} epochs of at most {budget.max_train_queries} training queries each, "
            f"{budget.num_negatives} hard negatives from {budget.negative_samples} samples. "
            f"Test split: {test_set.num_queries} queries, {test_set.num_database} database images, 25 m. "
            "Mean ± std over seeds (the teacher is trained once, seed 0). ms / image at batch 32.",
            "",
            *table,
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section, body, file_name="RESULTS.md")


if __name__ == "__main__":
    main()

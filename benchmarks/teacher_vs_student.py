"""Teacher against the student trained alone, seed by seed: is the teacher at least 3 R@1 points ahead?

    uv run --no-sync python benchmarks/teacher_vs_student.py --dataset DATA \\
        --pair SEED TEACHER_RUN STUDENT_RUN [--pair ...] [--image-size 64] [--section NAME] [--no-write]

For each seed: R@1 of both with 95 % bootstrap intervals over queries, their
paired difference on the same queries (bootstrap interval, exact McNemar p)
and R@1 per condition. Over seeds: the mean difference with its Student-t 95 %
interval (the spread between seeds, which the per-seed intervals do not see).
Thumbnail-16 (untrained) is the baseline row. Writes RESULTS.md section
``teacher-vs-student`` (or ``--section``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import load_average, machine_description, today, update_section  # noqa: E402
from vprdistill.data.readers import open_dataset  # noqa: E402
from vprdistill.eval.statistics import detectable_difference, mean_interval, paired_comparison  # noqa: E402
from vprdistill.experiments.baselines import evaluate_run_row, thumbnail_row  # noqa: E402

MARGIN = 3.0  # R@1 points the teacher must lead by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("SEED", "TEACHER", "STUDENT"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--section", default="teacher-vs-student")
    parser.add_argument("--how", default="", help="how the runs were trained (a sentence for the table's notes)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = load_average()
    test_set = open_dataset(args.dataset, split=args.split)
    size = (args.image_size, args.image_size)
    conditions = list(test_set.query_conditions())
    names = sorted(set(conditions))
    thumbnail = thumbnail_row(test_set, size, "cpu")

    header = "| row | R@1 [95 % CI] | " + " | ".join(names) + " |"
    lines = [header, "|---" * (len(names) + 2) + "|"]

    def line(label: str, row) -> str:
        low, high = row.recall_ci["1"]
        cells = [f"{row.condition_recall(c):.1f}" for c in names]
        return f"| {label} | {row.recall['1']:.1f} [{low:.1f}, {high:.1f}] | " + " | ".join(cells) + " |"

    lines.append(line("thumbnail-16 (untrained)", thumbnail))
    differences, verdicts = [], []
    for seed, teacher_dir, student_dir in args.pair:
        options = {"image_size": size, "device": "cpu"}
        teacher = evaluate_run_row(Path(teacher_dir), test_set, "teacher", "", **options)
        student = evaluate_run_row(Path(student_dir), test_set, "student alone", "", **options)
        paired = paired_comparison(teacher.hits["1"], student.hits["1"])
        differences.append(paired.difference)
        verdicts.append(
            f"seed {seed}: teacher − student {paired} "
            f"({'resolved above' if paired.low >= MARGIN else 'above' if paired.difference >= MARGIN else 'below'} "
            f"+{MARGIN:.0f})"
        )
        lines.append(line(f"seed {seed} teacher", teacher))
        lines.append(line(f"seed {seed} student alone", student))
        print(verdicts[-1], flush=True)
    mean, low, high = mean_interval(differences)
    smallest = detectable_difference(30.0, test_set.num_queries)
    load_after = load_average()
    pairs = " ".join(f"--pair {s} {t} {u}" for s, t, u in args.pair)
    body = "\n".join(
        [
            "## Teacher against the student alone, per seed (TSCM, the demo's place recipe)",
            "",
            f"Command: `uv run --no-sync python benchmarks/teacher_vs_student.py --dataset {args.dataset} "
            f"--split {args.split} --image-size {args.image_size} {pairs} --how '…'`",
            f"Machine: {machine_description()}; date {today()}; load average {load_before} before, {load_after} after. "
            f"Test: {test_set.num_queries} queries, {test_set.num_database} database images, 25 m. Intervals: 95 % "
            "bootstrap over queries; paired differences on the same queries with exact McNemar p."
            + (f" Runs: {args.how}" if args.how else ""),
            "",
            *lines,
            "",
            *[f"- {v}" for v in verdicts],
            f"- Over {len(differences)} seeds: mean teacher − student **{mean:+.1f}** R@1, Student-t 95 % interval "
            f"[{low:+.1f}, {high:+.1f}] (seed to seed). The claim teacher ≥ student + {MARGIN:.0f} holds when the "
            f"interval's lower end is at least {MARGIN:.0f}: **{'holds' if low >= MARGIN else 'not shown'}**.",
            f"- Two independent figures near 30 % differ detectably at {test_set.num_queries} queries from about "
            f"{smallest:.1f} points (normal approximation); paired differences on the same queries resolve smaller gaps.",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(args.section, body, file_name="RESULTS.md")


if __name__ == "__main__":
    main()

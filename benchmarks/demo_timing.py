"""Wall time of the README's main command from a fresh clone, set-up and dataset included.

    python benchmarks/demo_timing.py [--quick]

Clones this repository into a temporary folder, runs ``bash run.sh demo
[--quick]`` there (which syncs the locked environment, generates SynthCity and
trains and evaluates every model) and writes the wall time, CPU time and load
to BENCHMARKS.md section ``demo-timing-quick`` or ``demo-timing-full``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report_sections import REPO_ROOT, machine_description, today, update_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy the run's report, results.json and figures here before the clone is removed",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "vprdistill"
        subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
        command = ["bash", "run.sh", "demo"] + (["--quick"] if args.quick else [])
        start = time.perf_counter()
        subprocess.run(command, cwd=clone, check=True)
        wall = time.perf_counter() - start
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("report.md", "report.html", "results.json"):
                shutil.copy2(clone / "demo_out" / name, args.keep / name)
            shutil.copytree(clone / "demo_out" / "figures", args.keep / "figures", dirs_exist_ok=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    load_after = os.getloadavg()
    name = "quick" if args.quick else "full"
    body = "\n".join(
        [
            f"## `vprdistill demo{' --quick' if args.quick else ''}` from a fresh clone",
            "",
            f"Command: `python benchmarks/demo_timing.py{' --quick' if args.quick else ''}` "
            f"(runs `{' '.join(command)}` in a new clone: environment sync, SynthCity generation, training, "
            "evaluation, report).",
            f"Machine: {machine_description()}; date {today()}; load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after.",
            "",
            "| run | wall | CPU (user + system) |",
            "|---|---|---|",
            f"| demo {name} | {wall / 60:.1f} min | {cpu / 60:.1f} min |",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(f"demo-timing-{name}", body)


if __name__ == "__main__":
    main()

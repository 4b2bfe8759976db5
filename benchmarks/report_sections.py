"""Write one benchmark's figures into its own section of BENCHMARKS.md or RESULTS.md.

Each script owns a section delimited by HTML comments, so several scripts can
update the same file without overwriting each other's figures.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def machine_description() -> str:
    """One line naming the machine a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {platform.system()} {platform.release()}"
    )


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, for the line that says how idle the machine was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def today() -> str:
    return datetime.date.today().isoformat()


def update_section(name: str, body: str, file_name: str = "BENCHMARKS.md") -> Path:
    """Replace (or append) the section ``name`` of ``file_name`` at the repository root."""
    path = REPO_ROOT / file_name
    text = path.read_text() if path.exists() else f"# {Path(file_name).stem.title()}\n"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path

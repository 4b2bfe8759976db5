"""Run commands in other real processes: a process that holds a folder lock, and CLI commands started together."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Holds the lock until its stdin is closed (or it is killed), and says so on stdout once it holds it.
_HOLDER = """
import sys
from vprdistill.utils.locking import folder_lock
with folder_lock(sys.argv[1], what=sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout importable, one thread (the machine is shared)."""
    env = {key: value for key, value in os.environ.items() if key != "VPRDISTILL_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def start_holder(folder: Path, what: str = "folder") -> subprocess.Popen[str]:
    """Start a process that takes ``folder``'s lock; returns once it holds it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), what],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(),
    )
    line = process.stdout.readline() if process.stdout else ""
    if line.strip() != "locked":
        process.kill()
        raise RuntimeError(f"the lock holder did not start: {line!r} {process.stderr.read() if process.stderr else ''}")
    return process


def release_holder(process: subprocess.Popen[str]) -> None:
    """Let a holder started by ``start_holder`` release its lock and exit."""
    if process.poll() is None:
        process.communicate(timeout=60)


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path, what: str = "folder") -> Iterator[subprocess.Popen[str]]:
    """``folder`` locked by another live process for the duration of the block."""
    process = start_holder(folder, what)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def start_cli(args: list[str]) -> subprocess.Popen[str]:
    """Start ``python -m vprdistill ARGS`` in its own process (stdout and stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "vprdistill", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(),
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    """Wait for a process started by ``start_cli``: (exit code, stdout, stderr)."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err

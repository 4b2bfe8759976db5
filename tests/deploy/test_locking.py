"""Folder locks: one writer at a time across real processes, waiting with a timeout, released when a holder dies."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.deploy.lock_helpers import REPO_ROOT, child_env, lock_held_elsewhere, release_holder, start_holder
from vprdistill.utils.locking import FolderLockedError, folder_lock, lock_file_for, lock_holder


def test_a_second_process_is_refused_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "student"
    with lock_held_elsewhere(run, what="training run") as holder:
        start = time.monotonic()
        with pytest.raises(FolderLockedError) as error:
            with folder_lock(run, what="training run"):
                pytest.fail("the lock was taken while another process held it")
        assert time.monotonic() - start < 2.0, "timeout=0 must refuse at once"
        message = str(error.value)
        assert "training run" in message and str(run) in message
        assert f"pid {holder.pid}" in message
        assert error.value.holder is not None and error.value.holder["pid"] == holder.pid
        assert lock_holder(run)["pid"] == holder.pid
    # Once the holder is gone the lock is free again.
    assert lock_holder(run) is None
    with folder_lock(run, what="training run"):
        pass


def test_a_waiting_process_gets_the_lock_once_the_holder_releases_it(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    holder = start_holder(folder)
    releaser = threading.Timer(1.0, release_holder, args=(holder,))
    releaser.start()
    try:
        start = time.monotonic()
        with folder_lock(folder, timeout=60):
            waited = time.monotonic() - start
    finally:
        releaser.join()
    # The holder lets go 1 s after the start; the lock cannot have been taken before that.
    assert 0.95 <= waited < 30


def test_waiting_gives_up_after_the_timeout_and_says_how_long_it_waited(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    with lock_held_elsewhere(folder, what="map index"):
        start = time.monotonic()
        with pytest.raises(FolderLockedError, match=r"map index .* waited 0\.8 s"):
            with folder_lock(folder, what="map index", timeout=0.8):
                pass
        assert 0.8 <= time.monotonic() - start < 5


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = start_holder(folder)
    holder.kill()  # SIGKILL: no clean-up code runs in the holder
    holder.communicate(timeout=60)
    assert lock_file_for(folder).exists(), "a killed holder cannot remove its lock file"
    with folder_lock(folder, timeout=0):
        pass
    assert not lock_file_for(folder).exists()


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    outcome: dict[str, object] = {}

    def other_thread() -> None:
        try:
            with folder_lock(folder, timeout=0):
                outcome["taken"] = True
        except FolderLockedError as error:
            outcome["refused"] = str(error)

    with folder_lock(folder):
        with folder_lock(folder):  # nested use by the same writer passes through
            pass
        # Still held after the inner block ends.
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert "taken" not in outcome and "refused" in outcome
    assert not lock_file_for(folder).exists(), "the lock file goes once the outer block ends"


def test_lock_file_is_a_sibling_and_is_removed_after_use(tmp_path: Path) -> None:
    folder = tmp_path / "maps" / "city"
    assert lock_file_for(folder) == tmp_path / "maps" / ".city.lock"
    with folder_lock(folder) as lock_file:
        assert lock_file == lock_file_for(folder) and lock_file.is_file()
        assert not folder.exists(), "locking does not create the folder itself"
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == []


def test_processes_taking_turns_lose_no_update(tmp_path: Path) -> None:
    """Four processes each do 25 slow read-modify-write steps of one counter under the lock."""
    folder = tmp_path / "shared"
    folder.mkdir()
    counter = folder / "counter.txt"
    counter.write_text("0")
    script = """
import sys, time
from pathlib import Path
from vprdistill.utils.locking import folder_lock
folder = Path(sys.argv[1])
for _ in range(25):
    with folder_lock(folder, timeout=120):
        value = int((folder / "counter.txt").read_text())
        time.sleep(0.002)  # widen the window a lost update needs
        (folder / "counter.txt").write_text(str(value + 1))
"""
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=REPO_ROOT, env=child_env()) for _ in range(4)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0, 0]
    assert int(counter.read_text()) == 100
    assert not lock_file_for(folder).exists()


def test_a_folder_without_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name"):
        with folder_lock(Path("/")):
            pass

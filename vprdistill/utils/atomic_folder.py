"""Replace a whole folder at once: readers see the old one or the new one, never a mix.

The new content is written into a hidden staging folder beside the target,
``.<name>.tmp-XXXX``; only when every file is there is it renamed into place.
Replacing an existing folder takes two renames: the old folder to the backup
name ``.<name>.backup``, then the staging folder to the target. If the second
rename fails the backup is put back; if the process dies between the two
(SIGKILL, power loss) the target is missing and the backup is complete, and
``recover_folder`` (run by the next writer, or by a reader finding the target
missing) puts it back.

Every writer holds the folder's lock (``vprdistill.utils.locking``) while it
works, so leftovers found under the lock — staging folders, a backup beside a
complete target, temporary files inside the target — belong to a writer that
died, and are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vprdistill.utils.atomic import umask_mode
from vprdistill.utils.locking import FolderLockedError, folder_lock
from vprdistill.utils.logging import get_logger

log = get_logger("deploy.atomic_folder")

# mkdtemp makes 0700 folders; a finished one gets the mode a plain mkdir() would give.
_FOLDER_MODE = umask_mode(0o777)
STAGING_INFIX = ".tmp-"
BACKUP_SUFFIX = ".backup"


def backup_path(target: str | os.PathLike) -> Path:
    """Where the previous folder waits while the new one is renamed in: ``<parent>/.<name>.backup``."""
    target = Path(target)
    return target.parent / f".{target.name}{BACKUP_SUFFIX}"


def _staging_folders(target: Path) -> list[Path]:
    prefix = f".{target.name}{STAGING_INFIX}"
    if not target.parent.is_dir():
        return []
    return [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()]


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the renames themselves durable; not every file system allows it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_replaceable(target: str | os.PathLike, marker: str) -> None:
    """Raise unless ``target`` is absent, an empty folder or a folder holding ``marker`` (one of ours).

    Raises:
        NotADirectoryError: ``target`` is a file.
        FileExistsError: ``target`` is a non-empty folder without ``marker``.
        PermissionError: ``target`` is ours but its content cannot be replaced.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise FileExistsError(f"{target} is a non-empty folder without {marker}; refusing to replace it")
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(f"{target} is not writable")


def recover_folder(target: str | os.PathLike, marker: str) -> None:
    """Undo what a writer that died left at ``target``; call it holding the folder's lock.

    - target missing, backup present: the writer died between its two renames;
      the backup (the last complete folder) is put back;
    - target present, backup present: it died after them; the backup is removed;
    - staging folders are removed, and so are hidden ``*.tmp`` files inside the target.
    """
    target = Path(target)
    backup = backup_path(target)
    if backup.is_dir() and not backup.is_symlink():
        if not target.exists():
            os.rename(backup, target)
            _fsync_dir(target.parent)
            log.warning(
                "restored %s from %s, left by a write that was interrupted between its renames", target, backup.name
            )
        elif (target / marker).is_file():
            shutil.rmtree(backup, ignore_errors=True)
            log.info("removed %s, the previous version of %s left by an interrupted write", backup, target)
    for staging in _staging_folders(target):
        shutil.rmtree(staging, ignore_errors=True)
        log.info("removed %s, left by an interrupted write", staging)
    if (target / marker).is_file():
        for leftover in target.iterdir():
            if leftover.name.startswith(".") and leftover.name.endswith(".tmp") and leftover.is_file():
                leftover.unlink(missing_ok=True)
                log.info("removed %s, left by an interrupted write", leftover)


@contextlib.contextmanager
def locked_folder(
    target: str | os.PathLike, marker: str, what: str = "folder", wait: float | None = 0.0, hint: str | None = None
) -> Iterator[Path]:
    """Hold ``target``'s lock (see ``folder_lock``) with any interrupted write recovered first; yields ``target``."""
    target = Path(target)
    with folder_lock(target, what, timeout=wait, hint=hint):
        recover_folder(target, marker)
        yield target


def restore_if_interrupted(target: str | os.PathLike, marker: str, what: str = "folder", wait: float = 10.0) -> bool:
    """For readers: if ``target`` is missing but its backup exists, put the backup back (``True`` if done).

    A live writer holding the lock is between its two renames, so the target
    reappears within moments; otherwise the writer died and the backup is restored.
    """
    target = Path(target)
    deadline = time.monotonic() + wait
    while not target.exists() and backup_path(target).is_dir():
        try:
            with folder_lock(target, what, timeout=0):
                if target.exists():
                    return False
                recover_folder(target, marker)
                return target.exists()
        except FolderLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    return False


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike, marker: str, what: str = "folder", wait: float | None = 0.0, hint: str | None = None
) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` on success, holding ``target``'s lock throughout.

    ``marker`` is a file name every folder of this kind holds (e.g. ``index.json``):
    an existing non-empty ``target`` without it is refused rather than deleted.
    On an exception the staging folder is removed and ``target`` is untouched.
    ``what``, ``wait`` and ``hint`` are passed to ``folder_lock`` (a caller already
    holding the lock in this thread passes straight through).
    """
    target = Path(target)
    with locked_folder(target, marker, what, wait, hint):
        check_replaceable(target, marker)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_INFIX}", dir=target.parent))
        os.chmod(staging, _FOLDER_MODE)
        try:
            yield staging
            _fsync_tree(staging)
            if not target.exists():
                os.rename(staging, target)
                _fsync_dir(target.parent)
                return
            backup = backup_path(target)
            os.rename(target, backup)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(backup, target)
                raise
            _fsync_dir(target.parent)
            shutil.rmtree(backup, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

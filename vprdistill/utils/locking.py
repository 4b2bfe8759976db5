"""One writer at a time per folder: an OS file lock that other processes see and that dies with its holder.

``folder_lock(path, what=..., timeout=...)`` takes an exclusive ``flock`` on a
lock file next to the folder, ``<parent>/.<name>.lock``. It sits beside the
folder, not inside it, so it also guards a folder that does not exist yet or
one that is replaced by renames (a map index). The holder writes its pid, host,
command line and start time into the file, so a refused writer can say who is
in the way. The lock file is removed when the lock is released; a holder killed
outright (SIGKILL, power loss) leaves the file behind, but the kernel has
already released its lock, so the next writer takes it at once.

The lock is reentrant within one thread (a command that holds it may call code
that takes it again) and exclusive across threads and processes.

Platforms: Linux and macOS (``fcntl.flock``). On network file systems the lock
is only as good as the server's lock support (NFSv4 and Linux NFS clients map
``flock`` to byte-range locks); keep shared folders on a local disk when several
machines may write them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vprdistill.utils.logging import get_logger

log = get_logger("utils.locking")

POLL_SECONDS = 0.1


class FolderLockError(RuntimeError):
    """A folder's lock could not be taken (e.g. its lock file cannot be created)."""


class FolderLockedError(FolderLockError):
    """Another process (or thread) holds the folder's lock."""

    def __init__(self, message: str, folder: Path, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.folder = folder
        self.holder = holder


# Locks this process holds, for reentrancy, by lock-file path.
_held: dict[str, list[int]] = {}  # [owner thread id, depth, fd, pid]
_held_guard = threading.Lock()


def lock_file_for(folder: str | os.PathLike) -> Path:
    """The lock file guarding ``folder``: ``<parent>/.<name>.lock`` (the parent with symlinks resolved)."""
    folder = Path(os.path.abspath(folder))
    if not folder.name:
        raise ValueError(f"cannot lock {folder}: a folder lock needs a folder with a name (not a file-system root)")
    return folder.parent.resolve() / f".{folder.name}.lock"


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    parts = [f"pid {holder.get('pid')}"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        parts.append(f"on {holder['host']}")
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder may have just removed it)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _open_lock_file(path: Path, folder: Path, what: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # Left by another user's killed holder: a read-only descriptor locks it just as well.
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise FolderLockError(
            f"cannot lock {what} {folder}: cannot create the lock file {path}: {error.strerror or error}"
        ) from error


def _try_lock(path: Path, folder: Path, what: str) -> tuple[int | None, dict[str, Any] | None]:
    """One attempt: (fd holding the lock, None), or (None, who holds it)."""
    while True:
        fd = _open_lock_file(path, folder, what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None, holder
            raise FolderLockError(f"cannot lock {what} {folder} ({path}): {error.strerror or error}") from error
        if _same_file(fd, path):
            return fd, None
        # The previous holder removed this file as it released it; lock the file now at the path.
        os.close(fd)


_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a lock is being taken (they arrive right after), so an
    interrupt never leaves a taken lock, or a lock file, that no ``finally`` block will clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _program() -> str:
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    # ``python -m vprdistill`` runs .../vprdistill/__main__.py: name the package.
    return program.parent.name if program.name == "__main__.py" else program.name


def _record_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([_program(), *sys.argv[1:]]),
        "since": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
    }
    # Only informational (a refused writer shows it), so a failure to write it is no reason to fail.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike,
    what: str = "folder",
    timeout: float | None = 0.0,
    *,
    hint: str | None = None,
) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` for the duration of the block; yields the lock file's path.

    Args:
        folder: the folder to guard (it need not exist; its parent is created if missing).
        what: what the folder is, for messages ("map index", "training run").
        timeout: seconds to wait for another holder to finish: 0 refuses at once,
            ``None`` (or ``math.inf``) waits as long as it takes.
        hint: what the user can do when refused (default: try again later).

    Raises:
        FolderLockedError: another process or thread holds the lock (after ``timeout``);
            the message names the folder and the holder's pid and command.
        FolderLockError: the lock file cannot be created (e.g. the parent is read-only).
    """
    folder = Path(folder)
    path = lock_file_for(folder)
    key = str(path)
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[0] == me and entry[3] == os.getpid():
            entry[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return

    limit = math.inf if timeout is None else max(0.0, float(timeout))
    start = time.monotonic()
    announced = False
    while True:
        with _signals_deferred():
            fd, holder = _try_lock(path, folder, what)
            if fd is not None:
                _record_holder(fd)
                with _held_guard:
                    _held[key] = [me, 1, fd, os.getpid()]
                break
        waited = time.monotonic() - start
        if waited >= limit:
            waited_note = f"; waited {limit:g} s" if limit > 0 else ""
            raise FolderLockedError(
                f"{what} {folder} is in use by another process ({_describe(holder)}){waited_note}; it was not changed. "
                f"{hint or 'Try again once that process has finished.'}",
                folder,
                holder,
            )
        if not announced:
            log.warning("%s %s is in use (%s); waiting for it", what, folder, _describe(holder))
            announced = True
        time.sleep(min(POLL_SECONDS, max(0.0, limit - waited)))

    try:
        yield path
    finally:
        with _signals_deferred():
            with _held_guard:
                _held.pop(key, None)
            # Remove the file while still holding it; a waiter that locked the removed file
            # notices (``_same_file``) and locks the new one, so the lock stays exclusive.
            with contextlib.suppress(OSError):
                if _same_file(fd, path):
                    path.unlink()
            os.close(fd)


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds ``folder``'s lock (pid, host, command, since), or ``None`` when it looks free.

    Informational only: it reads the lock file without locking it (a probe that
    took the lock, even briefly, could make a real writer be refused), and calls a
    holder on this host alive while its pid exists. Writers rely on ``folder_lock``.
    """
    path = lock_file_for(folder)
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text) if text else {}
    except ValueError:
        holder = {}
    pid = holder.get("pid")
    if isinstance(pid, int) and holder.get("host") in (None, socket.gethostname()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # left behind by a holder that was killed
        except PermissionError:
            pass  # alive, owned by another user
    return holder

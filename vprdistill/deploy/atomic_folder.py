"""Replace a whole folder at once: readers see the old one or the new one, never a mix.

The new content is written into a hidden sibling folder; only when every file
is there is it renamed into place. Replacing an existing folder takes two
renames (old one aside, new one in), so for a moment the path is absent, but
never half-written; if the second rename fails the old folder is put back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` on success.

    ``marker`` is a file name every folder of this kind holds (e.g. ``index.json``):
    an existing non-empty ``target`` without it is refused rather than deleted.
    On an exception the temporary folder is removed and ``target`` is untouched.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise FileExistsError(f"{target} is a non-empty folder without {marker}; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
        if not target.exists():
            os.rename(staging, target)
            return
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, retired / "content")
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(retired / "content", target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

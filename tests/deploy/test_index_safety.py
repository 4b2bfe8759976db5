"""Map indexes under concurrent writers and crashes: locking, clean-up, recovery after a crash, checksums."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deploy.helpers import SPACING_M, pattern_image, place_name
from tests.deploy.lock_helpers import REPO_ROOT, child_env, finish, lock_held_elsewhere, start_cli
from vprdistill.cli.main import main
from vprdistill.deploy.index import IndexChangedError, IndexFormatError, MapIndex
from vprdistill.utils.locking import lock_file_for


def _copy_index(tiny_index: Path, tmp_path: Path) -> Path:
    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    return index_dir


def _new_places(folder: Path, count: int, seed: int, first_row: int) -> list[str]:
    """``count`` new photos east of the indexed street; returns their names."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = place_name(1000.0 + SPACING_M * (first_row + i), 5000.0)
        Image.fromarray(pattern_image(rng)).save(folder / name)
        names.append(name)
    return names


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- concurrent writers ----------------------------------------------------------------------------------


def test_two_simultaneous_adds_keep_every_image(tiny_index: Path, tmp_path: Path) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    names_a = _new_places(tmp_path / "a", 16, seed=11, first_row=100)
    names_b = _new_places(tmp_path / "b", 16, seed=12, first_row=200)
    processes = [
        start_cli(
            ["index", "add", str(index_dir), str(tmp_path / side), "--wait", "300", "--no-progress", "--device", "cpu"]
        )  # fmt: skip
        for side in ("a", "b")
    ]
    results = [finish(p) for p in processes]
    assert [code for code, _, _ in results] == [0, 0], results
    index = MapIndex.load(index_dir)
    assert len(index) == 12 + 16 + 16
    assert {Path(p).name for p in index.paths[12:]} == set(names_a) | set(names_b)


def test_calibrate_during_add_leaves_a_loadable_calibrated_index(
    tiny_index: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    _new_places(tmp_path / "new", 64, seed=13, first_row=300)
    add = start_cli(["index", "add", str(index_dir), str(tmp_path / "new"), "--wait", "300", "--no-progress",
                     "--device", "cpu"])  # fmt: skip
    calibrate = start_cli(["index", "calibrate", str(index_dir), "--dataset", str(tiny_dataset), "--split", "val",
                           "--wait", "300", "--no-progress", "--device", "cpu"])  # fmt: skip
    results = [finish(add), finish(calibrate)]
    assert [code for code, _, _ in results] == [0, 0], results
    index = MapIndex.load(index_dir)
    assert len(index) == 12 + 64 and index.manifest["count"] == 76
    assert index.calibration is not None and index.calibration["split"] == "val"


def test_a_second_writer_is_refused_with_a_clear_message(
    tiny_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    _new_places(tmp_path / "new", 2, seed=14, first_row=400)
    before = _snapshot(index_dir)
    with lock_held_elsewhere(index_dir, what="map index") as holder:
        code = main(["index", "add", str(index_dir), str(tmp_path / "new"), "--no-progress", "--device", "cpu"])
        error = capsys.readouterr().err
        assert code == 1
        assert "in use by another process" in error and f"pid {holder.pid}" in error and "--wait" in error
        assert _snapshot(index_dir) == before
        # With --wait it waits; the holder does not let go, so it gives up after the timeout.
        start = time.monotonic()
        code = main(["index", "add", str(index_dir), str(tmp_path / "new"), "--wait", "1", "--no-progress"])
        assert code == 1 and time.monotonic() - start >= 1.0 and "waited 1 s" in capsys.readouterr().err
    assert main(["index", "add", str(index_dir), str(tmp_path / "new"), "--no-progress", "--device", "cpu"]) == 0
    assert len(MapIndex.load(index_dir)) == 14


def test_a_manifest_is_not_written_over_an_index_that_changed_since_it_was_loaded(
    tiny_index: Path, tmp_path: Path
) -> None:
    """What `calibrate` during `add` did: a manifest of 12 entries written over a folder of 13."""
    index_dir = _copy_index(tiny_index, tmp_path)
    calibrating = MapIndex.load(index_dir)
    adding = MapIndex.load(index_dir)
    adding.add(np.eye(1, 512, dtype=np.float32), np.zeros((1, 2)), ["extra.jpg"])
    adding.save(index_dir)
    calibrating.manifest["calibration"] = {"threshold": 0.5}
    with pytest.raises(IndexChangedError, match="changed since it was loaded"):
        calibrating.save_manifest(index_dir)
    # The same for a whole save of a stale copy: it would drop the entry the other writer added.
    with pytest.raises(IndexChangedError):
        calibrating.save(index_dir)
    assert len(MapIndex.load(index_dir)) == 13


# --- index build checks --out before extracting -----------------------------------------------------------


@pytest.fixture
def extraction_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each descriptor extraction of `index build` (the real one still runs)."""
    import vprdistill.deploy.build as build_module

    calls: list[int] = []
    real = build_module.compute_index_descriptors

    def recording(model, paths, *args, **kwargs):
        calls.append(len(paths))
        return real(model, paths, *args, **kwargs)

    monkeypatch.setattr(build_module, "compute_index_descriptors", recording)
    return calls


def _build_args(model: Path, dataset: Path, out: Path) -> list[str]:
    return ["index", "build", "--model", str(model), "--dataset", str(dataset), "--split", "test", "--out", str(out),
            "--image-size", "64", "--no-progress", "--device", "cpu"]  # fmt: skip


def test_build_refuses_an_out_that_is_a_file_before_extracting(
    tiny_model_stem: Path, tiny_dataset: Path, tmp_path: Path, extraction_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "index"
    out.write_text("a file")
    assert main(_build_args(tiny_model_stem, tiny_dataset, out)) == 1
    assert extraction_calls == []
    assert "--out" in (err := capsys.readouterr().err) and str(out) in err and "not a folder" in err
    assert out.read_text() == "a file"


def test_build_refuses_an_out_folder_that_is_not_an_index_before_extracting(
    tiny_model_stem: Path, tiny_dataset: Path, tmp_path: Path, extraction_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "photos"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(_build_args(tiny_model_stem, tiny_dataset, out)) == 1
    assert extraction_calls == []
    assert "index.json" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_build_refuses_a_locked_out_before_extracting(
    tiny_index: Path, tiny_model_stem: Path, tiny_dataset: Path, tmp_path: Path, extraction_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = _copy_index(tiny_index, tmp_path)
    before = _snapshot(out)
    with lock_held_elsewhere(out, what="map index") as holder:
        assert main(_build_args(tiny_model_stem, tiny_dataset, out)) == 1
    assert extraction_calls == []
    assert f"pid {holder.pid}" in capsys.readouterr().err
    assert _snapshot(out) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_build_refuses_an_unwritable_out_before_extracting(
    tiny_model_stem: Path, tiny_dataset: Path, tmp_path: Path, extraction_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert main(_build_args(tiny_model_stem, tiny_dataset, parent / "index")) == 1
    finally:
        parent.chmod(0o700)
    assert extraction_calls == []
    assert str(parent) in capsys.readouterr().err


# --- temporary files ---------------------------------------------------------------------------------------


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tiny_index: Path, tmp_path: Path) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    # What a writer killed with SIGKILL leaves: a half-written staging folder and a temporary manifest.
    staging = tmp_path / ".index.tmp-k1ll3d"
    staging.mkdir()
    (staging / "descriptors.npy").write_bytes(b"half")
    (index_dir / ".index.json.a1b2c3.tmp").write_text("{")
    _new_places(tmp_path / "new", 1, seed=15, first_row=500)
    assert main(["index", "add", str(index_dir), str(tmp_path / "new"), "--no-progress", "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "new"]
    assert sorted(p.name for p in index_dir.iterdir()) == [
        "descriptors.npy",
        "index.json",
        "paths.json",
        "positions.npy",
    ]


def test_a_terminated_build_cleans_up_after_itself(tiny_model_stem: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    process = start_cli(_build_args(tiny_model_stem, tiny_dataset, out))
    lock_file = lock_file_for(out)
    deadline = time.monotonic() + 120
    while not lock_file.exists():  # the build holds the lock from its start to its end
        assert process.poll() is None and time.monotonic() < deadline, "the build never took the index's lock"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- a crash between the two renames ---------------------------------------------------------------------

_CRASH_BETWEEN_RENAMES = """
import os, sys
import numpy as np
from vprdistill.deploy.index import MapIndex

index = MapIndex.load(sys.argv[1])
index.add(np.eye(1, 512, dtype=np.float32), np.zeros((1, 2)), ["extra.jpg"])
real_rename, renames = os.rename, []

real_replace = os.replace

def rename_then_die(src, dst, real=real_rename):
    if os.path.isdir(src):  # the folder renames, not the files written inside the staging folder
        renames.append((src, dst))
        if len(renames) == 2:
            os._exit(17)  # the process dies here: no except or finally block runs
    real(src, dst)

os.rename = rename_then_die
os.replace = lambda src, dst: rename_then_die(src, dst, real_replace)
index.save(sys.argv[1])
"""


def _crash_between_renames(index_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _CRASH_BETWEEN_RENAMES, str(index_dir)], cwd=REPO_ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 17, result.stderr
    assert not index_dir.exists(), "the simulated crash must leave no index at the path"


def test_an_index_lost_between_the_two_renames_is_restored_when_loaded(
    tiny_index: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    before = _snapshot(index_dir)
    _crash_between_renames(index_dir)
    with caplog.at_level(logging.WARNING, logger="vprdistill"):
        index = MapIndex.load(index_dir)
    assert len(index) == 12 and _snapshot(index_dir) == before
    assert any("restored" in record.getMessage() and str(index_dir) in record.getMessage() for record in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_an_index_lost_between_the_two_renames_is_restored_by_the_next_add(tiny_index: Path, tmp_path: Path) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    _crash_between_renames(index_dir)
    _new_places(tmp_path / "new", 1, seed=16, first_row=600)
    assert main(["index", "add", str(index_dir), str(tmp_path / "new"), "--no-progress", "--device", "cpu"]) == 0
    assert len(MapIndex.load(index_dir)) == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "new"]


def test_a_failed_second_rename_puts_the_previous_index_back(
    tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    before = _snapshot(index_dir)
    index = MapIndex.load(index_dir)
    index.add(np.eye(1, 512, dtype=np.float32), np.zeros((1, 2)), ["extra.jpg"])
    real_rename, renames = os.rename, []

    def second_rename_fails(src, dst):
        if os.path.isdir(src):
            renames.append(src)
            if len(renames) == 2:  # the old folder is aside; moving the new one in fails
                raise OSError("Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="Input/output"):
        index.save(index_dir)
    monkeypatch.undo()
    assert _snapshot(index_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_backup_left_after_a_completed_swap_is_removed_by_the_next_write(tiny_index: Path, tmp_path: Path) -> None:
    """A crash after the second rename: the new index is in place, the previous one still lies beside it."""
    index_dir = _copy_index(tiny_index, tmp_path)
    shutil.copytree(index_dir, tmp_path / ".index.backup")
    index = MapIndex.load(index_dir)
    assert len(index) == 12 and (tmp_path / ".index.backup").is_dir(), "reading an index removes nothing"
    index.add(np.eye(1, 512, dtype=np.float32), np.zeros((1, 2)), ["extra.jpg"])
    index.save(index_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert len(MapIndex.load(index_dir)) == 13


def test_load_during_a_replacement_reads_the_new_index_whole(
    tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that opened index.json of the old folder and reads the rest after the swap retries."""
    index_dir = _copy_index(tiny_index, tmp_path)
    replacement = MapIndex.load(index_dir)
    replacement.add(np.eye(2, 512, dtype=np.float32), np.zeros((2, 2)), ["x.jpg", "y.jpg"])

    import vprdistill.deploy.index as index_module

    real_load, swapped = np.load, []

    def load_after_a_swap(file, *args, **kwargs):
        if not swapped and Path(file).name == "positions.npy":
            swapped.append(True)
            replacement.save(index_dir)  # another writer replaces the folder mid-read
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(index_module.np, "load", load_after_a_swap)
    index = MapIndex.load(index_dir)
    assert swapped and len(index) == 14 and index.paths[-1] == "y.jpg"


# --- checksums ---------------------------------------------------------------------------------------------


def test_the_manifest_records_the_sha256_of_every_data_file(tiny_index: Path) -> None:
    manifest = json.loads((tiny_index / "index.json").read_text())
    expected = {
        p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in tiny_index.iterdir()
        if p.name != "index.json"
    }
    assert manifest["files"] == expected and len(expected) == 3


@pytest.mark.parametrize("name", ["descriptors.npy", "positions.npy", "paths.json"])
def test_a_flipped_byte_is_caught_naming_the_file(tiny_index: Path, tmp_path: Path, name: str) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    data = bytearray((index_dir / name).read_bytes())
    # Past the .npy header, or inside a path string: the file still parses, with a wrong value.
    offset = len(data) - 20 if name.endswith(".npy") else data.index(b"@") + 3
    data[offset] ^= 0x01
    (index_dir / name).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"{name}.*checksum"):
        MapIndex.load(index_dir)


def test_a_missing_data_file_is_named(tiny_index: Path, tmp_path: Path) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    (index_dir / "positions.npy").unlink()
    with pytest.raises(IndexFormatError, match="positions.npy"):
        MapIndex.load(index_dir)


def test_an_index_without_checksums_still_loads_with_a_warning_and_gains_them_when_saved(
    tiny_index: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index_dir = _copy_index(tiny_index, tmp_path)
    manifest = json.loads((index_dir / "index.json").read_text())
    del manifest["files"]
    (index_dir / "index.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="vprdistill"):
        index = MapIndex.load(index_dir)
    assert len(index) == 12 and any("no checksums" in r.getMessage() for r in caplog.records)
    index.save(index_dir)
    assert set(json.loads((index_dir / "index.json").read_text())["files"]) == {
        "descriptors.npy",
        "paths.json",
        "positions.npy",
    }

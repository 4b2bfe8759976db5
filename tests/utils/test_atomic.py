import os

import pytest

from vprdistill.utils.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_leaves_the_previous_file_and_no_temporaries(tmp_path):
    target = tmp_path / "checkpoint.json"
    atomic_write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"epoch": 2, "trunc')
            raise RuntimeError("crash while writing")
    assert target.read_text().strip().startswith("{") and '"epoch": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


def test_finished_file_has_the_umask_mode_not_mkstemps_0600(tmp_path):
    target = tmp_path / "model.onnx.json"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_a_finished_atomic_folder_has_the_umask_mode_not_mkdtemps_0700(tmp_path):
    from vprdistill.utils.atomic_folder import atomic_folder

    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "model", marker="config.json") as staging:
            (staging / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755

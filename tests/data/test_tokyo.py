"""Tokyo 24/7 as distributed: .jpg listed for .png files, queries relative to the root, --queries-root."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.netvlad_files import DB_UTM, Q_NAMES, TOKYO_DB, TOKYO_Q, make_two_sets, write_tokyo
from vprdistill.data.readers import find_mat_file, open_dataset, open_dataset_with_source, read_mat_dataset


@pytest.mark.parametrize("v73", [False, True])
def test_tokyo_opens_as_distributed(tmp_path: Path, v73: bool) -> None:
    root = tmp_path / "tokyo247"
    mat = write_tokyo(root, v73=v73)
    dataset, source = open_dataset_with_source(mat)
    assert (dataset.name, dataset.split, source.which_set) == ("tokyo247", "test", "test")
    # Listed as .jpg, found as .png.
    assert dataset.database_paths == [(root / n).with_suffix(".png") for n in TOKYO_DB]
    assert all(p.is_file() for p in dataset.database_paths)
    # 247query_v3/... lies in the root itself, not in queries_real/.
    assert dataset.query_paths == [root / n for n in TOKYO_Q]
    np.testing.assert_array_equal(dataset.database_utm, DB_UTM)


def test_tokyo_by_root_and_name(tmp_path: Path) -> None:
    root = tmp_path / "tokyo247"
    mat = write_tokyo(root)
    assert find_mat_file(root, "test", "tokyo247") == mat
    assert open_dataset(root, name="tokyo247").num_database == len(TOKYO_DB)
    # Without a name, the error says how to open a file whose name carries no split.
    with pytest.raises(ValueError, match=r"\.mat files there: tokyo247\.mat .*dataset path itself"):
        open_dataset(root)


def test_queries_root_overrides_where_queries_are(tmp_path: Path) -> None:
    root = tmp_path / "tokyo247"
    elsewhere = tmp_path / "downloads"
    mat = write_tokyo(root, queries_under=elsewhere)
    with pytest.raises(FileNotFoundError) as error:
        open_dataset(mat)
    # The error names each place a query was looked for.
    message = str(error.value)
    assert "2 of 2 queries images are missing" in message
    assert str(root / TOKYO_Q[0]) in message and str(root / "queries_real" / TOKYO_Q[0]) in message
    dataset = open_dataset(mat, queries_root=elsewhere)
    assert dataset.query_paths == [elsewhere / n for n in TOKYO_Q]
    assert read_mat_dataset(mat, queries_root=elsewhere).query_paths == dataset.query_paths
    with pytest.raises(ValueError, match="queries_root apply to the .mat reader only"):
        open_dataset(tmp_path, reader="folder", queries_root=elsewhere)


def test_pittsburgh_queries_still_come_from_queries_real(tmp_path: Path) -> None:
    root = make_two_sets(tmp_path / "Pittsburgh")
    dataset = open_dataset(root, name="pitts30k")
    assert dataset.query_paths == [root / "queries_real" / n for n in Q_NAMES]


def test_missing_with_every_suffix_is_skipped_when_asked(tmp_path: Path) -> None:
    root = tmp_path / "tokyo247"
    mat = write_tokyo(root)
    (root / TOKYO_DB[1]).with_suffix(".png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 database images are missing, first: .*381408_001.jpg"):
        open_dataset(mat)
    dataset = open_dataset(mat, skip_bad_images=True)
    assert [p.name for p in dataset.database_paths] == ["381408_000.png", "381509_000.png"]


def test_eval_cli_with_queries_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vprdistill.cli.main import main

    root, elsewhere = tmp_path / "tokyo247", tmp_path / "downloads"
    mat = write_tokyo(root, queries_under=elsewhere)
    out = tmp_path / "report.json"
    assert main(["eval", "--model", "resnet18-gem", "--dataset", str(mat), "--queries-root", str(elsewhere),
                 "--image-size", "32", "--recalls", "1", "--device", "cpu", "--no-progress",
                 "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["dataset"] == "tokyo247" and report["num_database"] == 3 and report["num_queries"] == 2
    assert report["source"]["format"] == "mat" and report["source"]["which_set"] == "test"

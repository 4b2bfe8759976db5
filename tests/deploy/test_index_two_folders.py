"""``vprdistill index build/calibrate`` on plain folders with a positions file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vprdistill.cli.main import main
from vprdistill.data.readers import parse_place_filename
from vprdistill.deploy.index import MapIndex


def plain_folders(tiny_dataset: Path, root: Path, split: str) -> tuple[Path, Path, Path]:
    """The split's images renamed ``root/db/<i>.jpg``, ``root/q/<j>.jpg``, positions in ``root/positions.csv``
    (paths relative to the common parent)."""
    lines = ["path,east,north,zone"]
    for label, folder in (("database", "db"), ("queries", "q")):
        (root / folder).mkdir(parents=True)
        for index, image in enumerate(sorted((tiny_dataset / "images" / split / label).iterdir())):
            shutil.copy(image, root / folder / f"{index:03d}.jpg")
            parsed = parse_place_filename(image)
            lines.append(f"{folder}/{index:03d}.jpg,{parsed.east},{parsed.north},17T")
    (root / "positions.csv").write_text("\n".join(lines) + "\n")
    return root / "db", root / "q", root / "positions.csv"


def test_build_from_a_database_folder_and_positions(tiny_dataset: Path, tiny_model_stem: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    database, _, csv_file = plain_folders(tiny_dataset, tmp_path / "test", "test")
    out = tmp_path / "index"
    assert main(["index", "build", "--model", str(tiny_model_stem), "--database", str(database),
                 "--positions", str(csv_file), "--out", str(out), "--image-size", "32", "--no-progress"]) == 0  # fmt: skip
    index = MapIndex.load(out)
    np.testing.assert_array_equal(index.positions, [[1000.0 + 50.0 * i, 5000.0] for i in range(12)])
    assert "no position" not in capsys.readouterr().out

    # A database folder needs every position; --images keeps photos without one as NaN.
    lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join(line for line in lines if not line.startswith("db/005.jpg")) + "\n")
    assert main(["index", "build", "--model", str(tiny_model_stem), "--database", str(database),
                 "--positions", str(csv_file), "--out", str(tmp_path / "other"), "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "1 of 12 images in" in err and "005.jpg" in err
    assert main(["index", "build", "--model", str(tiny_model_stem), "--images", str(database),
                 "--positions", str(csv_file), "--out", str(tmp_path / "photos"), "--image-size", "32",
                 "--no-progress"]) == 0  # fmt: skip
    positions = MapIndex.load(tmp_path / "photos").positions
    assert np.isnan(positions[5]).all() and np.isfinite(np.delete(positions, 5, axis=0)).all()
    assert "1 image(s) have no position" in capsys.readouterr().out
    assert main(["index", "build", "--model", str(tiny_model_stem), "--dataset", str(tiny_dataset),
                 "--positions", str(csv_file), "--out", str(tmp_path / "x")]) == 1  # fmt: skip
    assert "--positions and --utm-zone go with --images or --database" in capsys.readouterr().err


def test_calibrate_on_two_folders_matches_the_dataset(tiny_index: Path, tiny_dataset: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    database, queries, csv_file = plain_folders(tiny_dataset, tmp_path / "val", "val")
    records = {}
    for name, extra in (("dataset", ["--dataset", str(tiny_dataset), "--split", "val"]),
                        ("folders", ["--database", str(database), "--queries", str(queries),
                                     "--positions", str(csv_file)])):  # fmt: skip
        index_dir = tmp_path / name
        shutil.copytree(tiny_index, index_dir)
        assert main(["index", "calibrate", str(index_dir), *extra, "--no-progress"]) == 0
        records[name] = json.loads((index_dir / "index.json").read_text())["calibration"]
    for key in ("threshold", "precision", "recall", "num_in_map", "num_out_of_map", "table"):
        assert records["folders"][key] == records["dataset"][key], key
    assert records["folders"]["positions"] == str(csv_file.resolve())
    assert records["folders"]["queries"] == str(queries.resolve())
    capsys.readouterr()
    assert main(["index", "calibrate", str(tmp_path / "folders"), "--database", str(database), "--no-progress"]) == 1
    assert "--database needs --queries" in capsys.readouterr().err

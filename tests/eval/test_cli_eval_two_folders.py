"""``vprdistill eval --database DIR --queries DIR [--positions FILE]`` end to end, against ``--dataset``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import utm

from vprdistill.cli.main import main
from vprdistill.data.readers import parse_place_filename

COMMON = ["--model", "resnet18-gem", "--image-size", "40", "--recalls", "1", "5", "--batch-size", "4",
          "--device", "cpu", "--no-progress"]  # fmt: skip


def plain_copy(tiny_places: Path, root: Path, form: str) -> tuple[Path, Path, Path]:
    """The tiny dataset's images as ``root/db/place_<i>.jpg`` and ``root/q/photo_<j>.jpg`` (no positions
    in the names) with a positions CSV: ``form`` latlon (paths relative to the common parent) or utm
    (paths relative to each folder, with zone and note columns)."""
    rows = []
    for label, folder, stem in (("database", "db", "place"), ("queries", "q", "photo")):
        source = tiny_places / "images" / "test" / label
        (root / folder).mkdir(parents=True)
        for index, image in enumerate(sorted(source.iterdir())):
            name = f"{stem}_{index}.jpg"
            shutil.copy(image, root / folder / name)
            parsed = parse_place_filename(image)
            rows.append((folder, name, parsed))
    csv_file = root / "positions.csv"
    if form == "latlon":
        lines = ["path,lat,lon"]
        for folder, name, parsed in rows:
            lat, lon = utm.to_latlon(parsed.east, parsed.north, 17, "T")
            lines.append(f"{folder}/{name},{lat:.10f},{lon:.10f}")
    else:
        lines = ["path,east,north,zone,note"] + [f"{name},{p.east},{p.north},17T,{p.note}" for _, name, p in rows]
    csv_file.write_text("\n".join(lines) + "\n")
    return root / "db", root / "q", csv_file


def test_eval_of_two_folders_matches_the_dataset(tiny_places, tmp_path, capsys):
    reference = tmp_path / "reference.json"
    assert main(["eval", *COMMON, "--dataset", str(tiny_places), "--json", str(reference)]) == 0
    expected = json.loads(reference.read_text())
    # lat/lon of northing 4 000 000 m lie in band S (36°N); the names' 17T is the same projection.
    for form, zone in (("latlon", "17S"), ("utm", "17T")):
        database, queries, csv_file = plain_copy(tiny_places, tmp_path / form / "mine", form)
        mine = tmp_path / f"{form}.json"
        capsys.readouterr()
        assert main(["eval", *COMMON, "--database", str(database), "--queries", str(queries),
                     "--positions", str(csv_file), "--json", str(mine)]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert f"read from database {database}, queries {queries} (positions from {csv_file})" in printed
        report = json.loads(mine.read_text())
        # The same images and positions in another layout: the same ground truth and results.
        for key in ("num_database", "num_queries", "num_queries_without_positive", "recall"):
            assert report[key] == expected[key], (form, key)
        assert report["num_queries_without_positive"] == 1 and report["recall"]["5"] > 0
        assert report["source"] == {"format": "folders", "path": str(database), "which_set": None,
                                    "queries_path": str(queries), "positions": str(csv_file)}  # fmt: skip
        assert report["utm_zone"] == zone and report["dataset"] == "mine"
        assert report["settings"]["positions"] == str(csv_file) and report["settings"]["dataset_root"] is None
        if form == "utm":  # the note column gives the conditions
            assert report["recall_per_condition"] == expected["recall_per_condition"]


def test_eval_of_two_folders_named_by_position(tiny_places, tmp_path, capsys):
    # @east@north@ names need no positions file.
    out = tmp_path / "r.json"
    images = tiny_places / "images" / "test"
    assert main(["eval", *COMMON, "--database", str(images / "database"), "--queries", str(images / "queries"),
                 "--json", str(out)]) == 0  # fmt: skip
    assert "positions from file names" in capsys.readouterr().out
    assert json.loads(out.read_text())["num_queries"] == 6


def test_eval_of_two_folders_refuses_unknown_query_positions_and_wrong_options(tiny_places, tmp_path, capsys):
    database, queries, csv_file = plain_copy(tiny_places, tmp_path / "mine", "utm")
    lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join(line for line in lines if not line.startswith("photo_2.jpg")) + "\n")
    assert main(["eval", *COMMON, "--database", str(database), "--queries", str(queries),
                 "--positions", str(csv_file)]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "1 of 6 query images" in err and "photo_2.jpg" in err
    cases = [
        (["--database", str(database)], "--database needs --queries"),
        (["--dataset", str(tiny_places), "--positions", str(csv_file)], "--positions: with --database only"),
        (["--database", str(database), "--queries", str(queries), "--split", "val"], "--split: for --dataset only"),
    ]
    for extra, message in cases:
        assert main(["eval", *COMMON, *extra]) == 1
        assert message in capsys.readouterr().err
    # Exactly one of --dataset and --database.
    with pytest.raises(SystemExit):
        main(["eval", *COMMON, "--dataset", str(tiny_places), "--database", str(database)])
    with pytest.raises(SystemExit):
        main(["eval", *COMMON])

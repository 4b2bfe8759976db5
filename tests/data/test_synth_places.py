"""SynthCity place set: P places x K views in the GSV-Cities layout, train region only, deterministic."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import utm
from PIL import Image

from vprdistill.cli.main import main
from vprdistill.data.place_images import open_place_images
from vprdistill.data.synth import SynthConfig, build_world, generate, parse_file_name, plan_dataset
from vprdistill.data.synth.writer import _is_complete, build_manifest

SIZE = 32
PLACES, VIEWS = 6, 3
ARGS = {
    "preset": "tiny",
    "seed": 5,
    "image_size": SIZE,
    "train_places": PLACES,
    "views_per_place": VIEWS,
    "progress": False,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("places") / "a", workers=1, **ARGS)


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "places" / "Dataframes" / "synthcity.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _utm_box(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    points = np.array(
        [
            [float(parse_file_name(p)["east"]), float(parse_file_name(p)["north"])]
            for p in (root / "images" / split / "database").glob("*.jpg")
        ]
    )
    return points.min(axis=0), points.max(axis=0)


def test_reader_gets_places_by_views_with_dense_labels(synth):
    data = open_place_images(synth / "places")
    assert (data.num_places, data.num_images) == (PLACES, PLACES * VIEWS)
    assert data.place_names == [f"synthcity/{p}" for p in range(PLACES)]
    assert data.labels.dtype == np.int64 and sorted(set(data.labels.tolist())) == list(range(PLACES))
    assert [len(m) for m in data.members()] == [VIEWS] * PLACES
    assert data.seg_paths is not None and data.conditions is not None
    for image_path, seg_path in zip(data.paths, data.seg_paths):
        assert seg_path == synth / "places" / "Segmentation" / "synthcity" / (image_path.stem + ".png")
        with Image.open(image_path) as image, Image.open(seg_path) as seg:
            assert image.size == seg.size == (SIZE, SIZE) and image.mode == "RGB" and seg.mode == "L"


def test_first_view_is_the_database_condition_and_views_differ(synth):
    config = SynthConfig.from_preset("tiny", train_places=PLACES, views_per_place=VIEWS)
    data = open_place_images(synth / "places")
    rows = {row["panoid"]: row for row in _rows(synth)}
    for label, members in enumerate(data.members()):
        notes = [data.conditions[i] for i in members]
        assert len(set(notes)) == VIEWS
        assert set(notes) <= set(config.place_condition_list())
        first = [i for i in members if data.paths[i].stem.endswith(f"p{label:06d}v0")]
        assert len(first) == 1 and data.conditions[first[0]] == config.database_condition == "day-clear-summer"
    assert {row["note"] for row in rows.values()} != {"day-clear-summer"}


def test_file_names_and_geotags_follow_gsv_cities(synth):
    for row in _rows(synth):
        # Spelled out independently of the writer: city_placeid7_year_month2_northdeg3_lat_lon_panoid.
        name = (
            f"synthcity_{int(row['place_id']):07d}_{row['year']}_{int(row['month']):02d}_{int(row['northdeg']):03d}_"
            f"{float(row['lat'])}_{float(row['lon'])}_{row['panoid']}.jpg"
        )
        assert (synth / "places" / "Images" / "synthcity" / name).is_file(), name
        east, north, zone, letter = utm.from_latlon(float(row["lat"]), float(row["lon"]))
        assert (zone, letter) == (17, "T")
        assert east == pytest.approx(float(row["east"]), abs=0.05)
        assert north == pytest.approx(float(row["north"]), abs=0.05)
        season = row["note"].split("-")[2]
        assert int(row["month"]) == {"winter": 1, "summer": 7, "autumn": 10}[season] and row["year"] == "2024"
        assert 0 <= int(row["northdeg"]) < 360


def test_places_lie_in_the_train_region_only(synth):
    positions = np.array([[float(r["east"]), float(r["north"])] for r in _rows(synth)])
    low, high = _utm_box(synth, "train")
    slack = 4.0  # lateral and along jitter around the database lane
    assert (positions >= low - slack).all() and (positions <= high + slack).all()
    for split in ("val", "test"):
        other_low, other_high = _utm_box(synth, split)
        inside = ((positions >= other_low - 10) & (positions <= other_high + 10)).all(axis=1)
        assert not inside.any(), f"a place lies in the {split} region"
    # Views of one place stand within a few metres of each other.
    for place in range(PLACES):
        views = positions[place * VIEWS : (place + 1) * VIEWS]
        assert np.linalg.norm(views - views.mean(axis=0), axis=1).max() < 8.0


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "places").rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_places_whatever_the_worker_count(synth, tmp_path):
    again = generate(tmp_path / "b", workers=2, **ARGS)
    first, second = _digest(synth), _digest(again)
    assert len(first) == 2 * PLACES * VIEWS + 1
    assert first == second
    assert json.loads((synth / "dataset.json").read_text()) == json.loads((again / "dataset.json").read_text())


def test_manifest_records_places_and_completeness_checks_them(synth):
    manifest = json.loads((synth / "dataset.json").read_text())
    places = manifest["places"]
    assert (places["count"], places["views"], places["images"]) == (PLACES, VIEWS, PLACES * VIEWS)
    assert places["conditions"][0] == "day-clear-summer" and places["root"] == "places"
    assert manifest["params"]["train_places"] == PLACES
    assert _is_complete(synth, manifest)
    victim = next((synth / "places" / "Segmentation" / "synthcity").glob("*.png"))
    data = victim.read_bytes()
    victim.unlink()
    try:
        assert not _is_complete(synth, manifest)
    finally:
        victim.write_bytes(data)


def test_a_default_config_has_no_places_in_its_manifest():
    config = SynthConfig.from_preset("tiny")
    manifest = build_manifest(config, plan_dataset(build_world(config), config))
    assert "places" not in manifest
    assert not {"train_places", "views_per_place", "place_conditions"} & set(manifest["params"])
    # The same city with places differs only by the place fields and block.
    with_places = SynthConfig.from_preset("tiny", train_places=2)
    other = build_manifest(with_places, plan_dataset(build_world(with_places), with_places))
    assert {k: v for k, v in other.items() if k not in ("places", "params")} == {
        k: v for k, v in manifest.items() if k != "params"
    }
    assert set(other["params"]) - set(manifest["params"]) == {"train_places", "views_per_place", "place_conditions"}


def test_place_config_is_validated():
    with pytest.raises(ValueError, match="views_per_place"):
        SynthConfig.from_preset("tiny", train_places=2, views_per_place=1)
    with pytest.raises(ValueError, match="views_per_place"):
        SynthConfig.from_preset("tiny", train_places=2, views_per_place=9)  # 8 distinct default conditions
    with pytest.raises(ValueError, match="train_places"):
        SynthConfig.from_preset("tiny", train_places=-1)
    with pytest.raises(ValueError, match="place_conditions"):
        SynthConfig.from_preset("tiny", train_places=2, place_conditions=("sunny",))
    # Without places, a short query mix never trips the place check.
    assert SynthConfig.from_preset("tiny", query_conditions=("night",)).views_per_place == 4
    config = SynthConfig.from_preset(
        "tiny", train_places=2, views_per_place=2, place_conditions=("night", "fog", "night")
    )
    assert config.place_condition_list() == ("night-clear-summer", "day-fog-summer")


def test_cli_writes_places(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "synth",
            str(out),
            "--preset",
            "tiny",
            "--image-size",
            "32",
            "--spacing",
            "30",
            "--headings",
            "2",
            "--queries",
            "3",
            "3",
            "4",
            "--train-places",
            "2",
            "--views-per-place",
            "2",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    assert len(_rows(out)) == 4
    assert open_place_images(out / "places").num_places == 2
    assert "places: 2 x 2 views" in capsys.readouterr().out

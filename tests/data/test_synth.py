"""SynthCity: determinism, class maps, file names, split geometry, errors, reuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from vprdistill.cli.main import main
from vprdistill.data.synth import SynthConfig, build_world, generate, parse_condition, parse_file_name, plan_dataset
from vprdistill.data.synth.camera import View
from vprdistill.data.synth.classes import RENDERED_CLASS_IDS, SKY, VEGETATION
from vprdistill.data.synth.render import render_view

SPLITS = ("train", "val", "test")
SIZE = 48
# A few dozen images: enough to exercise reuse and the CLI without rendering the tiny preset again.
MINI = dict(spacing_m=30.0, headings=2, queries_train=3, queries_val=3, queries_test=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("synth") / "a", preset="tiny", seed=3, image_size=SIZE, workers=2, progress=False
    )


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _utm(paths) -> np.ndarray:
    return np.array([[float(parse_file_name(p)["east"]), float(parse_file_name(p)["north"])] for p in paths])


def _images(root: Path, split: str, kind: str) -> list[Path]:
    return sorted((root / "images" / split / kind).glob("*.jpg"))


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny, tmp_path):
    again = generate(tmp_path / "b", preset="tiny", seed=3, image_size=SIZE, workers=1, progress=False)
    first, second = _files(tiny), _files(again)
    assert first.keys() == second.keys()
    assert len(first) > 500
    differing = [name for name in first if first[name].read_bytes() != second[name].read_bytes()]
    assert differing == []


def test_another_seed_gives_another_city():
    config = SynthConfig.from_preset("tiny", seed=4)
    other = plan_dataset(build_world(config), config)["test"]["database"]
    planned = SynthConfig.from_preset("tiny", seed=3)
    mine = plan_dataset(build_world(planned), planned)["test"]["database"]
    assert [(s.x, s.y) for s in other] != [(s.x, s.y) for s in mine]


def test_every_image_has_a_class_map_of_known_ids_and_matching_size(tiny):
    seen: set[int] = set()
    for split in SPLITS:
        for kind in ("database", "queries"):
            images = _images(tiny, split, kind)
            maps = sorted((tiny / "segmentation" / split / kind).glob("*.png"))
            assert [p.stem for p in images] == [p.stem for p in maps]
            for image_path, map_path in zip(images, maps):
                with Image.open(image_path) as image, Image.open(map_path) as seg:
                    assert image.size == seg.size == (SIZE, SIZE)
                    assert image.mode == "RGB" and seg.mode == "L"
                    ids = set(np.unique(np.asarray(seg)).tolist())
                assert ids <= set(RENDERED_CLASS_IDS), f"{map_path.name}: unknown ids {ids - set(RENDERED_CLASS_IDS)}"
                seen |= ids
    # A street scene: ground, buildings, sky, greenery and vehicles all occur.
    assert {0, 1, 2, 8, 10, 13} <= seen


def test_file_names_parse_back_to_the_planned_positions(tiny):
    config = SynthConfig.from_preset("tiny", seed=3, image_size=SIZE)
    world = build_world(config)
    plan = plan_dataset(world, config)
    for split in SPLITS:
        for kind in ("database", "queries"):
            specs = plan[split][kind]
            by_pano = {parse_file_name(p)["pano_id"]: parse_file_name(p) for p in _images(tiny, split, kind)}
            assert len(by_pano) == len(specs)
            for spec in specs:
                fields = by_pano[f"synthcity-{split}-{'db' if kind == 'database' else 'q'}{spec.index:06d}"]
                east, north = world.to_utm(spec.x, spec.y)
                assert float(fields["east"]) == pytest.approx(float(east), abs=0.006)
                assert float(fields["north"]) == pytest.approx(float(north), abs=0.006)
                assert float(fields["heading"]) == pytest.approx(spec.heading_deg, abs=0.06)
                assert (fields["zone_number"], fields["zone_letter"]) == ("17", "T")
                assert fields["note"] == spec.condition and "@" not in fields["note"]
                assert 580000 < float(fields["east"]) < 590000 and 4470000 < float(fields["north"]) < 4480000


def test_conditions_follow_the_mix_and_the_database_is_day_clear_summer(tiny):
    manifest = json.loads((tiny / "dataset.json").read_text())
    mix = manifest["params"]["query_conditions"]
    for split in SPLITS:
        assert {parse_file_name(p)["note"] for p in _images(tiny, split, "database")} == {"day-clear-summer"}
        notes = [parse_file_name(p)["note"] for p in _images(tiny, split, "queries")]
        assert set(notes) == set(mix)
        counts = [notes.count(c) for c in mix]
        assert max(counts) - min(counts) <= 1


def test_splits_are_spatially_disjoint(tiny):
    everything = {split: _utm(_images(tiny, split, "database") + _images(tiny, split, "queries")) for split in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        distance, _ = cKDTree(everything[a]).query(everything[b])
        assert distance.min() > 25.0, f"{a} and {b} come within {distance.min():.1f} m"


def test_every_query_has_a_database_image_within_25_m(tiny):
    for split in SPLITS:
        distance, _ = cKDTree(_utm(_images(tiny, split, "database"))).query(_utm(_images(tiny, split, "queries")))
        assert distance.max() <= 25.0


def test_manifest_describes_the_dataset(tiny):
    manifest = json.loads((tiny / "dataset.json").read_text())
    assert manifest["generator"] == "synthcity" and manifest["seed"] == 3
    assert manifest["params"]["preset"] == "tiny" and manifest["params"]["image_size"] == SIZE
    assert [c["id"] for c in manifest["classes"]][:19] == list(range(19))
    assert manifest["classes"][0] == {"id": 0, "name": "road", "color": [128, 64, 128]}
    assert manifest["palette"]["13"] == [0, 0, 142]
    for split in SPLITS:
        for kind in ("database", "queries"):
            assert manifest["splits"][split][kind] == len(_images(tiny, split, kind))
    with Image.open(tiny / "contact_sheet.png") as sheet:
        assert sheet.width >= 6 * 128


def test_class_map_ignores_light_and_weather_but_not_the_season():
    config = SynthConfig.from_preset("tiny", seed=3)
    world = build_world(config)
    spec = plan_dataset(world, config)["test"]["database"][5]
    view = View(spec.x, spec.y, spec.heading_deg)

    def render(condition: str):
        return render_view(
            world, view, 64, config.fov_deg, parse_condition(condition), image_seed=11, traversal_seed=12
        )

    day_rgb, day_seg = render("day-clear-summer")
    night_rgb, night_seg = render("night-fog-summer")
    _, winter_seg = render("day-clear-winter")
    np.testing.assert_array_equal(day_seg, night_seg)
    assert night_rgb.mean() < 0.5 * day_rgb.mean()
    # Bare winter trees cover less than summer crowns, and the sky shows through them.
    assert (winter_seg == VEGETATION).sum() < (day_seg == VEGETATION).sum()
    assert (winter_seg == SKY).sum() >= (day_seg == SKY).sum()


def test_single_condition_names_expand_with_defaults():
    assert parse_condition("snow").note == "day-snow-summer"
    assert parse_condition("rain-night").note == "night-rain-summer"
    assert parse_condition("winter").note == "day-clear-winter"
    assert SynthConfig.from_preset("tiny", query_conditions=("night", "fog")).query_conditions == (
        "night-clear-summer",
        "day-fog-summer",
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(conditions=["night", "sunny"]), "conditions"),
        (dict(conditions=["night-day"]), "conditions"),
        (dict(preset="huge"), "preset"),
        (dict(queries_test=0), "queries_test"),
        (dict(test_blocks=0), "test_blocks"),
        (dict(spacing_m=-5.0), "spacing_m"),
        (dict(image_size=0), "image_size"),
        (dict(workers=0), "workers"),
        (dict(number_of_cats=3), "number_of_cats"),
    ],
)
def test_bad_arguments_raise_errors_naming_them(tmp_path, kwargs, field):
    arguments = dict(preset="tiny", image_size=SIZE, progress=False) | kwargs
    with pytest.raises(ValueError, match=field):
        generate(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=re.escape(str(blocker))):
        generate(blocker / "out", preset="tiny", image_size=32, progress=False, **MINI)


def test_folder_holding_other_images_is_refused(tmp_path):
    foreign = tmp_path / "images" / "test" / "database"
    foreign.mkdir(parents=True)
    (foreign / "photo.jpg").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="not written by SynthCity"):
        generate(tmp_path, preset="tiny", image_size=32, progress=False, **MINI)
    assert (foreign / "photo.jpg").read_bytes() == b"not ours"


def test_complete_dataset_is_reused_without_rewriting(tiny):
    before = {name: p.stat().st_mtime_ns for name, p in _files(tiny).items()}
    assert generate(tiny, preset="tiny", seed=3, image_size=SIZE, workers=2, progress=False) == tiny
    assert {name: p.stat().st_mtime_ns for name, p in _files(tiny).items()} == before


def test_interrupted_or_different_dataset_is_regenerated(tmp_path, monkeypatch):
    reference = generate(tmp_path / "reference", preset="tiny", image_size=32, workers=1, progress=False, **MINI)
    expected = {name: p.read_bytes() for name, p in _files(reference).items()}
    out = tmp_path / "d"
    calls = []

    def render_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            raise RuntimeError("power cut")
        return render_view(*args, **kwargs)

    monkeypatch.setattr("vprdistill.data.synth.writer.render_view", render_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        generate(out, preset="tiny", image_size=32, workers=1, progress=False, **MINI)
    assert len(list(out.rglob("*.jpg"))) == 10 and not (out / "dataset.json").exists()
    monkeypatch.undo()
    generate(out, preset="tiny", image_size=32, workers=1, progress=False, **MINI)
    assert {name: p.read_bytes() for name, p in _files(out).items()} == expected
    # Other parameters: the old files go, the new dataset replaces them.
    generate(out, preset="tiny", image_size=32, workers=1, progress=False, **(MINI | {"queries_test": 6}))
    assert len(_images(out, "test", "queries")) == 6
    assert json.loads((out / "dataset.json").read_text())["params"]["queries_test"] == 6


def test_cli_generates_with_named_conditions(tmp_path, capsys):
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
            "--conditions",
            "night",
            "fog",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["params"]["query_conditions"] == ["night-clear-summer", "day-fog-summer"]
    assert {parse_file_name(p)["note"] for p in _images(out, "test", "queries")} == {
        "night-clear-summer",
        "day-fog-summer",
    }
    assert "SynthCity" in capsys.readouterr().out


def test_cli_reports_an_unknown_condition_with_the_valid_names(tmp_path, capsys):
    code = main(["synth", str(tmp_path / "cli"), "--preset", "tiny", "--conditions", "nite", "--no-progress"])
    assert code == 1
    error = capsys.readouterr().err
    assert "nite" in error and "night" in error and "fog" in error and "winter" in error


def test_a_finished_run_leaves_no_temporary_or_in_progress_files(tiny):
    leftovers = [name for name in _files(tiny) if name.startswith(".") or name.endswith(".tmp") or "/." in name]
    assert leftovers == []

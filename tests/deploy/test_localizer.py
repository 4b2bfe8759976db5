"""Localizer (Python API) and `vprdistill localize` (one-shot, JSON and streaming)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprdistill.cli.main import main
from vprdistill.data.readers import open_dataset
from vprdistill.deploy.index import MapIndex
from vprdistill.deploy.localizer import Localizer
from vprdistill.deploy.stream import PositionSmoother

COPIED_ROWS = [1, 4, 7, 10]  # the test split's queries are near-copies of these database images


@pytest.fixture(scope="module")
def localizer(tiny_index: Path) -> Localizer:
    return Localizer.from_index_folder(tiny_index)


def test_copy_queries_find_their_database_image(localizer: Localizer, tiny_dataset: Path) -> None:
    dataset = open_dataset(tiny_dataset, "test")
    results = localizer.localize([str(p) for p in dataset.query_paths], topk=3)
    assert len(results) == 4
    for result, row, query_position in zip(results, COPIED_ROWS, dataset.query_utm):
        assert Path(result.best.path).name == dataset.database_paths[row].name
        assert result.best.database_index == row
        assert np.linalg.norm(np.array(result.position) - query_position) < 2.0
        assert [m.rank for m in result.matches] == [1, 2, 3]
        assert result.matches[0].score > result.matches[1].score >= result.matches[2].score
        assert result.best.distance == pytest.approx(np.sqrt(2 - 2 * result.best.score), abs=1e-6)
        # Uncalibrated, the confidence is the cosine similarity mapped linearly to [0, 1].
        assert [m.confidence for m in result.matches] == pytest.approx([(m.score + 1) / 2 for m in result.matches])
        assert not result.unknown and result.threshold is None  # the index is not calibrated


def test_accepts_pil_arrays_bytes_and_batches(localizer: Localizer, tiny_dataset: Path) -> None:
    path = open_dataset(tiny_dataset, "test").query_paths[1]
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    encoded = path.read_bytes()
    expected = localizer.localize(str(path))[0]
    assert expected.best.database_index == 4 and expected.source == str(path)
    for item in (pil, array, encoded, array.astype(np.float32) / 255.0):
        result = localizer.localize(item)[0]
        assert result.best.database_index == 4
        assert result.best.score == pytest.approx(expected.best.score, abs=2e-3)
    batch = localizer.localize(np.stack([array, array]))
    assert [r.best.database_index for r in batch] == [4, 4]


def test_bad_inputs_name_the_problem(localizer: Localizer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ValueError, match="broken.jpg"):
        localizer.localize(str(broken))
    with pytest.raises(ValueError, match="topk"):
        localizer.localize(np.zeros((8, 8, 3), np.uint8), topk=0)
    with pytest.raises(ValueError, match="shape"):
        localizer.localize(np.zeros((8, 8, 5), np.uint8))


def test_localizer_refuses_a_model_the_index_was_not_built_with(tiny_index: Path) -> None:
    from vprdistill.models.registry import build_model

    with pytest.raises(ValueError, match="fingerprint"):
        Localizer(build_model("resnet18-gem"), MapIndex.load(tiny_index))


def test_localize_cli_json(tiny_index: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = tiny_dataset / "images" / "test" / "queries"
    assert main(["localize", "--index", str(tiny_index), str(queries), "--topk", "2", "--json", "--device", "cpu"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4
    names = open_dataset(tiny_dataset, "test").database_paths
    assert [Path(r["matches"][0]["path"]).name for r in records] == [names[i].name for i in COPIED_ROWS]
    assert all(len(r["matches"]) == 2 and r["unknown"] is False for r in records)


def test_localize_cli_stream_prints_one_line_per_frame(tiny_index: Path, tiny_dataset: Path, capsys) -> None:
    queries = tiny_dataset / "images" / "test" / "queries"
    assert main(["localize", "--index", str(tiny_index), str(queries), "--stream", "--smooth", "3", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    frames = [json.loads(line) for line in lines]
    assert [Path(f["source"]).name for f in frames] == sorted(p.name for p in queries.iterdir())
    assert all(f["smoothed_position"] is not None for f in frames)


def test_position_smoother_ignores_one_outlier() -> None:
    smoother = PositionSmoother(window=3)
    assert smoother.update(None) is None
    smoother.update((0.0, 0.0))
    smoother.update((10.0, 0.0))
    assert smoother.update((5000.0, 0.0)) == (10.0, 0.0)  # the median, not the mean
    assert smoother.update(None) == (10.0, 0.0)  # an unknown frame keeps the estimate


def test_model_override_must_match_the_index(tiny_index: Path, tmp_path: Path, capsys) -> None:
    from tests.deploy.helpers import save_tiny_model

    other = save_tiny_model(tmp_path, seed=5)
    code = main(["localize", "--index", str(tiny_index), "--model", str(other), str(tmp_path)])
    assert code == 1
    assert "fingerprint" in capsys.readouterr().err


@pytest.fixture()
def frames_with_a_broken_one(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The four test queries plus an unreadable JPEG that sorts third; returns the folder and the names in order."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in open_dataset(tiny_dataset, "test").query_paths:
        (folder / path.name).write_bytes(path.read_bytes())
    names = sorted(p.name for p in folder.iterdir())
    broken = names[1] + "-broken.jpg"  # sorts right after the second frame
    (folder / broken).write_bytes(b"\xff\xd8\xff\xe0 cut off by a dying card reader")
    return folder, sorted([*names, broken])


def test_localizer_reports_unreadable_images_when_asked(tiny_index: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    good = [str(p) for p in open_dataset(tiny_dataset, "test").query_paths[:2]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    localizer = Localizer.from_index_folder(tiny_index, on_unreadable="report")
    results = localizer.localize([good[0], str(broken), good[1]], topk=2)
    assert [r.source for r in results] == [good[0], str(broken), good[1]]
    assert [r.best.database_index for r in (results[0], results[2])] == COPIED_ROWS[:2]
    assert results[1].matches == [] and results[1].position is None and "broken.jpg" in results[1].error
    record = results[1].to_dict()
    assert record["error"] == results[1].error and record["matches"] == [] and record["score"] is None
    assert results[0].error is None and results[0].to_dict()["error"] is None
    with pytest.raises(ValueError, match="on_unreadable"):
        Localizer.from_index_folder(tiny_index, on_unreadable="skip")


def test_localize_cli_reports_an_unreadable_photo_and_goes_on(
    tiny_index: Path, frames_with_a_broken_one, capsys
) -> None:
    folder, names = frames_with_a_broken_one
    assert main(["localize", "--index", str(tiny_index), str(folder), "--json", "--batch-size", "16"]) == 1
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [Path(r["source"]).name for r in records] == names
    broken = records[2]
    assert "-broken.jpg" in broken["error"] and broken["matches"] == [] and broken["position"] is None
    good = [r for r in records if r["error"] is None]
    assert len(good) == 4 and all(len(r["matches"]) == 5 for r in good)
    assert "1 of 5 photos could not be read" in captured.err
    # the plain-text listing goes on too, with the reason in the broken photo's place
    assert main(["localize", "--index", str(tiny_index), str(folder)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("    ")]
    assert len(lines) == 5 and "ERROR" in lines[2] and "ERROR" not in lines[3]


def test_localize_cli_stream_goes_on_after_an_unreadable_frame(
    tiny_index: Path, frames_with_a_broken_one, capsys
) -> None:
    folder, names = frames_with_a_broken_one
    assert main(["localize", "--index", str(tiny_index), str(folder), "--stream", "--smooth", "3", "--json"]) == 1
    frames = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [Path(f["source"]).name for f in frames] == names
    assert frames[2]["error"] and frames[2]["matches"] == []
    assert frames[2]["smoothed_position"] == frames[1]["smoothed_position"]  # the bad frame leaves the estimate
    assert all(f["error"] is None and f["matches"] for f in frames[3:])


def test_answers_come_in_latitude_and_longitude_when_the_index_knows_its_zone(
    localizer: Localizer, tiny_dataset: Path
) -> None:
    import utm

    # The test images are named @east@north@17@T@...: the index records zone 17T.
    assert localizer.index.utm_zone == "17T"
    dataset = open_dataset(tiny_dataset, "test")
    (result,) = localizer.localize([str(dataset.query_paths[0])], topk=2)
    latitude, longitude = result.lat_lon
    # Back through the utm package's forward projection in the same zone: the UTM position again.
    east, north, number, _ = utm.from_latlon(latitude, longitude, force_zone_number=17)
    assert number == 17
    assert np.allclose((east, north), result.position, atol=0.01)
    record = result.to_dict()
    assert record["lat_lon"] == [latitude, longitude]
    assert [m["lat_lon"] is not None for m in record["matches"]] == [True, True]


def test_an_index_without_a_zone_answers_in_utm_only(tiny_index: Path, tmp_path: Path) -> None:
    index = MapIndex.load(tiny_index)
    index.manifest["utm_zone"] = None
    index.save(tmp_path / "no_zone")
    plain = Localizer.from_index_folder(tmp_path / "no_zone")
    assert plain.index.utm_zone is None
    (result,) = plain.localize([plain.index.paths[0]], topk=1)
    assert result.position is not None and result.lat_lon is None
    assert result.to_dict()["lat_lon"] is None

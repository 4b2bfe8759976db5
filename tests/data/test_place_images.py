"""GSV-Cities reader: a hand-written folder (names spelled out here), labels, subsets, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vprdistill.data.place_images import PlaceImages, is_place_images_root, open_place_images

HEADER = "place_id,year,month,northdeg,city_id,lat,lon,panoid"

# (csv line, image file name as GSV-Cities' get_img_name spells it). The names are written out by hand:
# place id % 10**5 on 7 digits, month on 2, northdeg on 3, lat/lon as str(float) of the csv value
# ("51.500" -> "51.5", "-0.12760" -> "-0.1276").
LONDON = [
    ("3,2019,7,45,London,51.500,-0.12760,panoA,day", "London_0000003_2019_07_045_51.5_-0.1276_panoA.jpg"),
    ("7,2018,11,300,London,51.51,-0.13,panoB,night", "London_0000007_2018_11_300_51.51_-0.13_panoB.jpg"),
    ("3,2021,1,5,London,51.5001,-0.1277,panoC,snow", "London_0000003_2021_01_005_51.5001_-0.1277_panoC.jpg"),
    ("12,2020,3,90,London,51.52,-0.14,panoD,day", "London_0000012_2020_03_090_51.52_-0.14_panoD.jpg"),
    ("7,2022,6,301,London,51.5101,-0.1301,panoE,rain", "London_0000007_2022_06_301_51.5101_-0.1301_panoE.jpg"),
    ("100012,2017,5,0,London,51.53,-0.15,panoF,day", "London_0000012_2017_05_000_51.53_-0.15_panoF.jpg"),
    ("7,2015,2,299,London,51.5102,-0.1302,panoG,fog", "London_0000007_2015_02_299_51.5102_-0.1302_panoG.jpg"),
    ("100012,2019,9,10,London,51.5301,-0.1501,panoH,dusk", "London_0000012_2019_09_010_51.5301_-0.1501_panoH.jpg"),
]
BOSTON = [
    ("3,2016,8,180,Boston,42.36,-71.06,panoI", "Boston_0000003_2016_08_180_42.36_-71.06_panoI.jpg"),
    ("3,2020,4,181,Boston,42.3601,-71.0601,panoJ", "Boston_0000003_2020_04_181_42.3601_-71.0601_panoJ.jpg"),
]


def _write_city(root: Path, city: str, rows, header: str = HEADER) -> None:
    (root / "Dataframes").mkdir(parents=True, exist_ok=True)
    (root / "Images" / city).mkdir(parents=True, exist_ok=True)
    (root / "Dataframes" / f"{city}.csv").write_text("\n".join([header] + [line for line, _ in rows]) + "\n")
    for i, (_, name) in enumerate(rows):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / "Images" / city / name, format="JPEG")


@pytest.fixture()
def gsv(tmp_path) -> Path:
    root = tmp_path / "gsv"
    _write_city(root, "London", LONDON, HEADER + ",note")
    _write_city(root, "Boston", BOSTON)
    return root


def test_hand_written_folder_is_read_with_the_right_labels_and_paths(gsv, caplog):
    with caplog.at_level(logging.INFO, logger="vprdistill"):
        data = open_place_images(gsv)
    # Cities sorted (Boston, London), then place id; London/12 has one image and is dropped.
    assert data.place_names == ["Boston/3", "London/3", "London/7", "London/100012"]
    assert "dropped 1 of 5 places" in caplog.text
    by_name = {p.name: data.place_names[label] for p, label in zip(data.paths, data.labels)}
    assert set(by_name) == {name for _, name in LONDON + BOSTON} - {"London_0000012_2020_03_090_51.52_-0.14_panoD.jpg"}
    assert by_name["London_0000003_2019_07_045_51.5_-0.1276_panoA.jpg"] == "London/3"
    assert by_name["London_0000003_2021_01_005_51.5001_-0.1277_panoC.jpg"] == "London/3"
    assert by_name["London_0000012_2017_05_000_51.53_-0.15_panoF.jpg"] == "London/100012"
    assert by_name["London_0000012_2019_09_010_51.5301_-0.1501_panoH.jpg"] == "London/100012"
    assert [by_name[n] for _, n in BOSTON] == ["Boston/3", "Boston/3"]
    assert all(p.is_file() and p.parent == gsv / "Images" / p.name.split("_")[0] for p in data.paths)
    assert data.labels.dtype == np.int64 and data.labels.shape == (9,)
    assert sorted(set(data.labels.tolist())) == list(range(4))
    assert [len(m) for m in data.members()] == [2, 2, 3, 2]
    for label, members in enumerate(data.members()):
        assert (data.labels[members] == label).all()
    # Boston has no note column, so the per-image conditions are unknown; no class maps either.
    assert data.conditions is None and data.seg_paths is None
    assert data.num_places == 4 and data.num_images == 9


def test_one_city_keeps_its_notes_and_finds_class_maps(gsv):
    (gsv / "Segmentation" / "London").mkdir(parents=True)
    for _, name in LONDON:
        Image.new("L", (8, 8), 2).save(gsv / "Segmentation" / "London" / name.replace(".jpg", ".png"))
    data = open_place_images(gsv, cities=["London"], min_views=3)
    assert data.place_names == ["London/7"]
    assert [p.name for p in data.paths] == [LONDON[i][1] for i in (1, 4, 6)]
    assert data.conditions == ["night", "rain", "fog"]
    assert data.seg_paths == [gsv / "Segmentation" / "London" / (p.stem + ".png") for p in data.paths]


def test_subset_places_relabels_densely_and_keeps_the_image_order(gsv):
    data = open_place_images(gsv)
    subset = data.subset_places([3, 1])
    assert isinstance(subset, PlaceImages)
    assert subset.place_names == ["London/3", "London/100012"]
    assert subset.labels.tolist() == [0, 0, 1, 1]  # London rows: 3, 3, 100012, 100012
    assert subset.paths == [p for p, label in zip(data.paths, data.labels) if label in (1, 3)]
    with pytest.raises(ValueError, match="labels"):
        data.subset_places([4])


def test_is_place_images_root(gsv, tmp_path):
    assert is_place_images_root(gsv)
    assert not is_place_images_root(tmp_path / "nowhere")
    (tmp_path / "half" / "Dataframes").mkdir(parents=True)
    assert not is_place_images_root(tmp_path / "half")


def test_missing_dataframes_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Dataframes"):
        open_place_images(tmp_path)


def test_missing_column_is_named_with_the_file(tmp_path):
    _write_city(
        tmp_path,
        "Rome",
        [("1,2019,7,45,Rome,41.9,12.5", "x.jpg")],
        header="place_id,year,month,northdeg,city_id,lat,lon",
    )
    with pytest.raises(ValueError, match=r"Rome\.csv: missing column\(s\) panoid"):
        open_place_images(tmp_path)


def test_bad_value_names_line_and_column(tmp_path):
    _write_city(tmp_path, "Rome", [("1,2019,July,45,Rome,41.9,12.5,p", "x.jpg")])
    with pytest.raises(ValueError, match=r"Rome\.csv: line 2, column 'month'"):
        open_place_images(tmp_path)


def test_unknown_city_lists_the_known_ones(gsv):
    with pytest.raises(ValueError, match=r"'Paris'.*Boston, London"):
        open_place_images(gsv, cities=["London", "Paris"])


def test_missing_images_are_named(gsv):
    (gsv / "Images" / "London" / LONDON[1][1]).unlink()
    (gsv / "Images" / "London" / LONDON[4][1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"2 listed image\(s\) missing.*panoB\.jpg.*panoE\.jpg"):
        open_place_images(gsv)


def test_min_views_drops_places_and_none_left_is_an_error(gsv):
    assert open_place_images(gsv, min_views=1).num_places == 5
    assert open_place_images(gsv, min_views=3).place_names == ["London/7"]
    with pytest.raises(ValueError, match="min_views=4"):
        open_place_images(gsv, min_views=4)

"""Positions files, lat/lon → UTM and UTM zones (vprdistill.data.positions)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from vprdistill.data.place_dataset import DatasetFormatError
from vprdistill.data.positions import (
    UtmZone,
    assign_positions,
    check_one_zone,
    latlon_to_utm,
    parse_zone,
    read_positions_file,
)


def kruger_utm(lat: float, lon: float, zone: int, northern: bool) -> tuple[float, float]:
    """Transverse Mercator on WGS84 by Krüger's series in the third flattening n (Karney 2011, eq. 35-36).

    An independent formula: the ``utm`` package uses Snyder's series in the
    eccentricity instead; both agree to well under a centimetre within a zone.
    """
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    n = f / (2 - f)
    big_a = a / (1 + n) * (1 + n**2 / 4 + n**4 / 64 + n**6 / 256)
    alpha = [
        n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16 + 41 * n**4 / 180 - 127 * n**5 / 288 + 7891 * n**6 / 37800,
        13 * n**2 / 48 - 3 * n**3 / 5 + 557 * n**4 / 1440 + 281 * n**5 / 630 - 1983433 * n**6 / 1935360,
        61 * n**3 / 240 - 103 * n**4 / 140 + 15061 * n**5 / 26880 + 167603 * n**6 / 181440,
        49561 * n**4 / 161280 - 179 * n**5 / 168 + 6601661 * n**6 / 7257600,
        34729 * n**5 / 80640 - 3418889 * n**6 / 1995840,
        212378941 * n**6 / 319334400,
    ]
    phi, lam = math.radians(lat), math.radians(lon - ((zone - 1) * 6 - 180 + 3))
    e = math.sqrt(f * (2 - f))
    t = math.sinh(math.atanh(math.sin(phi)) - e * math.atanh(e * math.sin(phi)))
    xi0, eta0 = math.atan2(t, math.cos(lam)), math.atanh(math.sin(lam) / math.sqrt(1 + t * t))
    xi = xi0 + sum(c * math.sin(2 * j * xi0) * math.cosh(2 * j * eta0) for j, c in enumerate(alpha, 1))
    eta = eta0 + sum(c * math.cos(2 * j * xi0) * math.sinh(2 * j * eta0) for j, c in enumerate(alpha, 1))
    return 500000.0 + k0 * big_a * eta, k0 * big_a * xi + (0.0 if northern else 10_000_000.0)


# (lat, lon, zone): Pittsburgh, Tokyo, Sydney (south), Bergen (Norway's zone 32 exception), a zone edge.
PLACES = [
    (40.4406, -79.9959, "17T"),
    (35.6812, 139.7671, "54S"),
    (-33.8688, 151.2093, "56H"),
    (60.3913, 5.3221, "32V"),
    (10.0, -78.001, "17P"),
]


def test_latlon_to_utm_agrees_with_an_independent_formula() -> None:
    lat = np.array([p[0] for p in PLACES])
    lon = np.array([p[1] for p in PLACES])
    utm_positions, zones = latlon_to_utm(lat, lon)
    assert [str(z) for z in zones] == [p[2] for p in PLACES]
    for (la, lo, _), (east, north), zone in zip(PLACES, utm_positions, zones):
        expected = kruger_utm(la, lo, zone.number, la >= 0)
        assert abs(east - expected[0]) < 0.01 and abs(north - expected[1]) < 0.01, (la, lo)


def test_latlon_to_utm_reference_points() -> None:
    # On a zone's central meridian easting is 500 000 m exactly; at the equator northing is 0 (north)
    # or 10 000 000 m (south). At 45°N the northing is k0 × the WGS84 meridian arc, 0.9996 × 4 984 944.38 m.
    utm_positions, zones = latlon_to_utm(np.array([0.0, 45.0, -45.0]), np.array([3.0, 9.0, -69.0]))
    np.testing.assert_allclose(utm_positions[0], [500000.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(utm_positions[1], [500000.0, 0.9996 * 4984944.378], atol=0.01)
    np.testing.assert_allclose(utm_positions[2], [500000.0, 10_000_000.0 - 0.9996 * 4984944.378], atol=0.01)
    assert [str(z) for z in zones] == ["31N", "32T", "19G"]


def test_forced_zone_converts_into_it() -> None:
    # Two points 1.1 km apart across the 17/18 border at 78°W: in one zone their UTM distance is the
    # distance on the ground (haversine; UTM scale 0.9996-1.0010 at 3° from the central meridian).
    lat, lon = np.array([40.0, 40.0]), np.array([-78.0065, -77.9935])
    natural, zones = latlon_to_utm(lat, lon)
    assert [z.number for z in zones] == [17, 18]
    forced, forced_zones = latlon_to_utm(lat, lon, UtmZone(17, "T"))
    assert [str(z) for z in forced_zones] == ["17T", "17T"]
    np.testing.assert_allclose(forced[0], natural[0])
    radius = 6371008.8
    ground = radius * math.radians(0.013) * math.cos(math.radians(40.0))
    assert abs(np.linalg.norm(forced[0] - forced[1]) / ground - 1) < 3e-3
    assert abs(np.linalg.norm(natural[0] - natural[1]) - ground) > 100_000  # two zones: meaningless metres


@pytest.mark.parametrize(("text", "zone"), [("17T", UtmZone(17, "T")), ("17 t", UtmZone(17, "T")),
                                            ("5", UtmZone(5, "")), (60, UtmZone(60, ""))])  # fmt: skip
def test_parse_zone(text, zone) -> None:
    assert parse_zone(text) == zone


@pytest.mark.parametrize("text", ["61T", "0", "17I", "17O", "17TT", "T17", ""])
def test_parse_zone_refuses(text) -> None:
    with pytest.raises(DatasetFormatError, match="not a UTM zone"):
        parse_zone(text, "positions.csv:3: zone")


def test_zone_bands_of_one_hemisphere_are_one_zone() -> None:
    zones = [UtmZone(17, "T"), UtmZone(17, "S"), UtmZone(17, "T"), None, UtmZone(17, "")]
    assert check_one_zone(zones, list("abcde"), "here") == UtmZone(17, "T")
    assert check_one_zone([None, None], ["a", "b"], "here") is None


def test_mixed_zones_name_files_of_each() -> None:
    zones = [UtmZone(17, "T")] * 5 + [UtmZone(18, "T")] * 2
    names = [f"img{i}.jpg" for i in range(7)]
    with pytest.raises(DatasetFormatError) as error:
        check_one_zone(zones, names, "db and q")
    message = str(error.value)
    assert "2 UTM zones" in message
    assert "zone 17T: 5 images (img0.jpg, img1.jpg, img2.jpg and 2 more)" in message
    assert "zone 18T: 2 images (img5.jpg, img6.jpg)" in message
    # The other hemisphere of one zone number is another projection (false northing).
    with pytest.raises(DatasetFormatError, match=r"zone 17M: 1 images \(b\)"):
        check_one_zone([UtmZone(17, "T"), UtmZone(17, "M")], ["a", "b"], "here")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_latlon_file_with_aliases_and_blanks(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "p.csv", "\ufeffFile , Latitude,Longitude,Condition\n"
                                         "db\\a.jpg,40.4406,-79.9959,day\n\nq/b.jpg, , ,night\n")  # fmt: skip
    table = read_positions_file(csv_file)
    assert table.kind == "latlon" and table.paths == ["db/a.jpg", "q/b.jpg"] and table.lines == [2, 4]
    assert table.notes == ["day", "night"]
    np.testing.assert_allclose(table.utm[0], kruger_utm(40.4406, -79.9959, 17, True), atol=0.01)
    assert np.isnan(table.utm[1]).all() and table.zones == [UtmZone(17, "T"), None]


def test_read_east_north_file_with_zone(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "p.csv", "path,east,north,zone\na.jpg,585156.9,4477145.4,17 T\nb.jpg,585000,4477000,\n")
    table = read_positions_file(csv_file, zone="17T")
    assert table.kind == "utm" and table.notes is None
    np.testing.assert_array_equal(table.utm, [[585156.9, 4477145.4], [585000.0, 4477000.0]])
    assert table.zones == [UtmZone(17, "T"), UtmZone(17, "T")]  # the blank zone takes the one asked for
    with pytest.raises(DatasetFormatError, match=r"p.csv:2: zone 17T differs from the zone 18T"):
        read_positions_file(csv_file, zone="18T")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,lat,lon\na.jpg,40.1,abc\n", r"p.csv:2: lon is not a number: 'abc'"),
        ("path,lat,lon\na.jpg,40.1,\n", r"p.csv:2: lat and lon must both be given"),
        ("path,lat,lon\na.jpg,85.0,10\n", r"p.csv:2: lat 85.0, lon 10.0 is outside UTM's range"),
        ("path,lat,lon\na.jpg,inf,10\n", r"p.csv:2: lat must be finite"),
        ("path,lat,lon\n,40,10\n", r"p.csv:2: the path is empty"),
        ("path,lat,lon,east,north\n", r"both lat/lon and east/north"),
        ("path,lat\n", r"lat without its pair"),
        ("image,x,y\n", r"no coordinate columns"),
        ("lat,lon\n1,2\n", r"no path column"),
        ("path,lat,lon\n", r"a header \(line 1\) but no rows"),
        ("", r"empty"),
        ("path,east,north,zone\na.jpg,1,2,99X\n", r"p.csv:2: zone: not a UTM zone: '99X'"),
    ],
)
def test_malformed_files_name_file_line_and_column(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DatasetFormatError, match=match):
        read_positions_file(write(tmp_path / "p.csv", text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="positions file .*nope.csv does not exist"):
        read_positions_file(tmp_path / "nope.csv")


def folders_of(tmp_path: Path) -> dict:
    db, q = tmp_path / "db", tmp_path / "q"
    return {
        "database": (db, [Path("0001.jpg"), Path("sub/0002.jpg")]),
        "queries": (q, [Path("0001.jpg"), Path("0003.jpg")]),
    }


def test_assign_accepts_both_path_forms(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv_file = write(
        tmp_path / "p.csv",
        "path,east,north\n"
        "db/0001.jpg,1,1\n"  # relative to the common parent
        "sub/0002.jpg,2,2\n"  # relative to its folder (the database)
        "q/0001.jpg,3,3\n"
        "0003.jpg,4,4\n"  # relative to its folder (the queries)
        f"{tmp_path / 'elsewhere.jpg'},5,5\n"
        "db/0009.jpg,6,6\n",
    )
    with caplog.at_level(logging.WARNING):
        assigned, unmatched = assign_positions(read_positions_file(csv_file), folders_of(tmp_path))
    np.testing.assert_array_equal(assigned["database"].utm, [[1, 1], [2, 2]])
    np.testing.assert_array_equal(assigned["queries"].utm, [[3, 3], [4, 4]])
    assert unmatched == [4, 5]
    assert (
        "2 of 6 rows name no image" in caplog.text
        and "p.csv:6 (" in caplog.text
        and "p.csv:7 (db/0009.jpg)" in caplog.text
    )


def test_assign_refuses_a_row_naming_two_images_and_two_rows_for_one(tmp_path: Path) -> None:
    ambiguous = write(tmp_path / "p.csv", "path,east,north\n0001.jpg,1,1\n")
    with pytest.raises(DatasetFormatError, match=r"p.csv:2 \(0001.jpg\) names several images .* e.g. db/0001.jpg"):
        assign_positions(read_positions_file(ambiguous), folders_of(tmp_path))
    twice = write(tmp_path / "p2.csv", "path,east,north\ndb/0001.jpg,1,1\nq/0003.jpg,2,2\n0003.jpg,3,3\n")
    with pytest.raises(DatasetFormatError, match=r"lines 3 and 4 both give the position of queries image 0003.jpg"):
        assign_positions(read_positions_file(twice), folders_of(tmp_path))

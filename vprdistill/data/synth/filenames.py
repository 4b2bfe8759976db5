"""The community's ``@``-separated file names (METHODS.md §2), written and read back.

``@east@north@zone_number@zone_letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.jpg``
"""

from __future__ import annotations

from pathlib import Path

FIELDS: tuple[str, ...] = (
    "east",
    "north",
    "zone_number",
    "zone_letter",
    "lat",
    "lon",
    "pano_id",
    "tile_num",
    "heading",
    "pitch",
    "roll",
    "height",
    "timestamp",
    "note",
)


def format_file_name(fields: dict[str, object], suffix: str = ".jpg") -> str:
    """Join ``fields`` (missing ones empty) into a file name; no field may contain ``@``."""
    values = []
    for name in FIELDS:
        value = "" if fields.get(name) is None else str(fields[name])
        if "@" in value or "/" in value:
            raise ValueError(f"file name field {name!r} must not contain '@' or '/': {value!r}")
        values.append(value)
    return "@" + "@".join(values) + "@" + suffix


def parse_file_name(name: str | Path) -> dict[str, str]:
    """Split a file name back into its fields (strings; empty where not set)."""
    stem = Path(name).name
    parts = stem.split("@")
    if len(parts) != len(FIELDS) + 2 or parts[0] != "":
        raise ValueError(f"{name}: not an '@'-separated VPR file name with {len(FIELDS)} fields")
    return dict(zip(FIELDS, parts[1:-1]))

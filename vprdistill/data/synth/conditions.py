"""Capture conditions: time of day, weather and season, each a named setting.

A condition is written ``<time>-<weather>-<season>`` (for example
``night-rain-winter``); that string is also the ``note`` field of the file
names, so it never contains ``@``.
"""

from __future__ import annotations

from dataclasses import dataclass

TIMES: tuple[str, ...] = ("day", "dusk", "night")
WEATHERS: tuple[str, ...] = ("clear", "overcast", "fog", "rain", "snow")
SEASONS: tuple[str, ...] = ("summer", "autumn", "winter")

DEFAULT_DATABASE_CONDITION = "day-clear-summer"

# The query mix of every preset: same-condition queries as the reference point,
# and each kind of appearance change (light, weather, season) on its own or combined.
DEFAULT_QUERY_CONDITIONS: tuple[str, ...] = (
    "day-clear-summer",
    "day-overcast-autumn",
    "dusk-clear-summer",
    "night-clear-summer",
    "day-fog-summer",
    "day-rain-autumn",
    "day-snow-winter",
    "night-rain-winter",
)


@dataclass(frozen=True)
class Condition:
    """One capture condition; ``note`` is its canonical ``time-weather-season`` name."""

    time: str = "day"
    weather: str = "clear"
    season: str = "summer"

    @property
    def note(self) -> str:
        return f"{self.time}-{self.weather}-{self.season}"

    @property
    def snowy_ground(self) -> bool:
        return self.season == "winter" or self.weather == "snow"


def valid_condition_help() -> str:
    """One line listing every valid part, for error messages and ``--help``."""
    return (
        f"time: {'|'.join(TIMES)}; weather: {'|'.join(WEATHERS)}; season: {'|'.join(SEASONS)} "
        "(write 'time-weather-season', or one or two parts, e.g. 'night', 'fog', 'night-rain')"
    )


def parse_condition(text: str, field: str = "conditions") -> Condition:
    """Parse ``'night-rain-winter'``, ``'night-rain'`` or ``'snow'``.

    Parts may come in any order; a missing part takes its default (day, clear,
    summer). An unknown or repeated part raises ``ValueError`` naming ``field``
    and listing the valid names.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{field}: empty condition; valid parts are {valid_condition_help()}")
    chosen: dict[str, str] = {}
    for part in text.strip().lower().split("-"):
        for kind, names in (("time", TIMES), ("weather", WEATHERS), ("season", SEASONS)):
            if part in names:
                if kind in chosen:
                    raise ValueError(f"{field}: condition {text!r} names two {kind}s ({chosen[kind]}, {part})")
                chosen[kind] = part
                break
        else:
            raise ValueError(
                f"{field}: unknown condition part {part!r} in {text!r}; valid parts are {valid_condition_help()}"
            )
    return Condition(**chosen)

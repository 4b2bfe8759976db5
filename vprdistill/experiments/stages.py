"""Run a sequence of named stages with an overall progress line and an estimate of time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Stage:
    key: str
    title: str
    weight: float  # expected share of the total time (relative units), for the time-left estimate


class StageProgress:
    """Prints ``[i/n] title`` as each stage starts, with elapsed time and an estimate of what is left.

    The estimate scales the elapsed time by the weights of the stages still to
    run, so it improves as stages finish (the first stage, generating data, is
    the least informative one).
    """

    def __init__(self, stages: Sequence[Stage], stream: TextIO | None = None) -> None:
        self.stages = list(stages)
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.done_weight = 0.0
        self.total_weight = sum(s.weight for s in self.stages) or 1.0
        self.timings: dict[str, float] = {}

    def _bar(self, fraction: float, width: int = 24) -> str:
        filled = int(round(fraction * width))
        return "█" * filled + "·" * (width - filled)

    def run(self, stage_key: str, work: Callable[[], object]) -> object:
        index = next(i for i, s in enumerate(self.stages) if s.key == stage_key)
        stage = self.stages[index]
        elapsed = time.perf_counter() - self.start
        fraction = self.done_weight / self.total_weight
        if fraction > 0:
            left = elapsed * (1 - fraction) / fraction
            eta = f", about {_duration(left)} left"
        else:
            eta = ""
        print(
            f"\n[{index + 1}/{len(self.stages)}] {self._bar(fraction)} {stage.title} "
            f"(elapsed {_duration(elapsed)}{eta})",
            file=self.stream,
            flush=True,
        )
        stage_start = time.perf_counter()
        result = work()
        self.timings[stage.key] = time.perf_counter() - stage_start
        self.done_weight += stage.weight
        return result

    def finish(self) -> float:
        total = time.perf_counter() - self.start
        print(f"\n[done] {self._bar(1.0)} total {_duration(total)}", file=self.stream, flush=True)
        return total


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"

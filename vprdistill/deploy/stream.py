"""Localising a sequence of frames in order, with optional temporal smoothing of the position."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from vprdistill.deploy.inputs import ImageInput
from vprdistill.deploy.localizer import Localization, Localizer


class PositionSmoother:
    """Median of the last ``window`` known positions: one wrong match along a route does not move the estimate."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"smoothing window must be at least 1 frame, got {window}")
        self.recent: deque[tuple[float, float]] = deque(maxlen=window)

    def update(self, position: tuple[float, float] | None) -> tuple[float, float] | None:
        """Feed one frame's position (``None`` when unknown); return the smoothed position so far."""
        if position is not None:
            self.recent.append(position)
        if not self.recent:
            return None
        east, north = np.median(np.asarray(self.recent), axis=0)
        return float(east), float(north)


def localize_stream(
    localizer: Localizer, frames: Iterable[ImageInput], topk: int = 5, smooth_window: int = 0
) -> Iterator[Localization]:
    """Localise ``frames`` one at a time, in order; with ``smooth_window`` > 0 each result carries
    ``smoothed_position`` (median of the last known positions) in its ``extra``."""
    smoother = PositionSmoother(smooth_window) if smooth_window > 0 else None
    for frame in frames:
        result = localizer.localize(frame, topk=topk)[0]
        if smoother is not None:
            smoothed = smoother.update(result.position)
            result.extra["smoothed_position"] = None if smoothed is None else list(smoothed)
        yield result

"""Localise photos against a map index: the Python API behind ``vprdistill localize`` and the service.

index = MapIndex.load("map_index")
localizer = Localizer(load_model(index.manifest["model_path"]), index)
result = localizer.localize("photo.jpg", topk=5)[0]
result.unknown, result.position, result.matches[0].path
localizer.localize(bgr_frame, channel_order="BGR")  # an OpenCV / cv_bridge array
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from vprdistill.data.transforms import build_transform, image_size_hw
from vprdistill.deploy.calibration import confidence_of
from vprdistill.deploy.index import MapIndex
from vprdistill.deploy.inputs import (
    ImageInput,
    ImageLoadError,
    as_image_list,
    check_channel_order,
    source_name,
    to_rgb_image,
)
from vprdistill.models.inference import batch_descriptors, inference_copy


@dataclass(frozen=True)
class Match:
    """One database image returned for a query."""

    rank: int  # 1 = best
    database_index: int
    path: str
    position: tuple[float, float]  # UTM (east, north) in metres; NaN when the index does not know it
    score: float  # inner product of L2-normalised descriptors, higher is better
    distance: float  # L2 distance between the descriptors, sqrt(2 - 2·score)
    confidence: float  # in [0, 1]; calibrated P(correct) when the index is calibrated
    lat_lon: tuple[float, float] | None = None  # WGS84 degrees, when the index knows its UTM zone


@dataclass(frozen=True)
class Localization:
    """The answer for one query photo: its top-K matches and whether it is off the map."""

    matches: list[Match]
    unknown: bool  # best score below the calibrated threshold (never set on an uncalibrated index)
    threshold: float | None  # the index's calibrated score threshold, if any
    source: str | None = None  # the query's path, when it came from a file
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the photo could not be read (then there are no matches)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def score(self) -> float:
        return self.best.score if self.best else float("-inf")

    @property
    def confidence(self) -> float:
        return self.best.confidence if self.best else 0.0

    @property
    def position(self) -> tuple[float, float] | None:
        """The best match's position, or ``None`` when unknown or without position."""
        if self.unknown or self.best is None or not all(map(math.isfinite, self.best.position)):
            return None
        return self.best.position

    @property
    def lat_lon(self) -> tuple[float, float] | None:
        """The best match's latitude and longitude (degrees), ``None`` when unknown or the index has no zone."""
        return None if self.position is None or self.best is None else self.best.lat_lon

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN positions become ``null``)."""
        matches = []
        for match in self.matches:
            record = asdict(match)
            record["position"] = list(match.position) if all(map(math.isfinite, match.position)) else None
            record["lat_lon"] = None if match.lat_lon is None else list(match.lat_lon)
            matches.append(record)
        return {
            "source": self.source,
            "unknown": self.unknown,
            "position": None if self.position is None else list(self.position),
            "lat_lon": None if self.lat_lon is None else list(self.lat_lon),
            "score": self.score if self.best else None,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "matches": matches,
            "error": self.error,
            **self.extra,
        }


UnreadablePolicy = Literal["raise", "report"]
UNREADABLE_POLICIES = get_args(UnreadablePolicy)


class Localizer:
    """Runs a place model on photos and matches its descriptors against a map index.

    ``index.check_model(model)`` runs first: an index only answers for the model
    (weights and config) it was built with. ``on_unreadable``: what a photo that
    cannot be read does to a call: ``"raise"`` its ``ImageLoadError``, or
    ``"report"`` it as a ``Localization`` with ``error`` set and no matches, in its
    place, while the other photos of the batch are localised.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        index: MapIndex,
        device: str | torch.device = "cpu",
        image_size: tuple[int, int] | int | None = None,
        on_unreadable: UnreadablePolicy = "raise",
    ) -> None:
        if on_unreadable not in UNREADABLE_POLICIES:
            raise ValueError(f"on_unreadable must be one of {UNREADABLE_POLICIES}, got {on_unreadable!r}")
        index.check_model(model)
        self.on_unreadable = on_unreadable
        self.index = index
        self.device = torch.device(device)
        # On the CPU the folded, channels-last copy (vprdistill/models/inference.py) answers several
        # times faster at large batches; the fingerprint was checked on the model as given.
        self.model = inference_copy(model, self.device) if self.device.type == "cpu" else model.to(self.device).eval()
        self.image_size = image_size_hw(image_size if image_size is not None else index.image_size)
        self.transform = build_transform(self.image_size)

    @classmethod
    def from_index_folder(
        cls,
        index_dir: str | Path,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        image_size: tuple[int, int] | int | None = None,
        on_unreadable: UnreadablePolicy = "raise",
    ) -> Localizer:
        """Load an index and its model (by default the model path recorded when the index was built)."""
        from vprdistill.models.checkpoint import load_model

        index = MapIndex.load(index_dir)
        if model_path is None:
            model_path = index.manifest.get("model_path")
            if not model_path:
                raise ValueError(f"index {index_dir} records no model path; pass --model")
        model = load_model(model_path, device=device)
        return cls(model, index, device=device, image_size=image_size, on_unreadable=on_unreadable)

    def prepare(self, image: ImageInput, channel_order: str = "RGB") -> torch.Tensor:
        """The network input `(3, H, W)` float32 of one image (decoded, resized, normalised).

        ``channel_order``: the order of an array's channels, ``"RGB"`` (the
        default) or ``"BGR"`` (OpenCV, ROS ``cv_bridge``; a 4-channel array is
        then BGRA). Paths, bytes and PIL images carry their own order and are
        not affected; any other value raises ``ValueError``.
        """
        return self.transform(to_rgb_image(image, channel_order))

    def describe_batch(self, batch: torch.Tensor) -> np.ndarray:
        """Descriptors `(B, D)` float32 of prepared inputs `(B, 3, H, W)`."""
        return batch_descriptors(self.model, batch, self.device)

    def describe(self, images: list[ImageInput], channel_order: str = "RGB") -> np.ndarray:
        """Descriptors `(B, D)` float32 of B images (paths, PIL images, arrays or encoded bytes).

        ``channel_order`` applies to the arrays among them, as in ``prepare``.
        """
        check_channel_order(channel_order)
        return self.describe_batch(torch.stack([self.prepare(item, channel_order) for item in images]))

    def localize(
        self, image_or_batch: ImageInput | list[ImageInput], topk: int = 5, channel_order: str = "RGB"
    ) -> list[Localization]:
        """Top-``topk`` matches of one image or a batch (list, or `(B, H, W, C)` array): one ``Localization`` each.

        ``channel_order``: ``"RGB"`` (the default) or ``"BGR"``, the order of the
        channels of array inputs (``(H, W, 3)``, ``(H, W, 4)`` or a ``(B, H, W, C)``
        batch): pass ``"BGR"`` for frames from OpenCV or ROS ``cv_bridge``, whose
        channels read as RGB would give other, wrong, descriptors. Paths, bytes
        and PIL images carry their own order and are not affected. Any other
        value raises ``ValueError`` before any image is read.
        """
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        check_channel_order(channel_order)
        items = as_image_list(image_or_batch)
        sources = [source_name(item) for item in items]
        inputs: list[torch.Tensor] = []
        errors: dict[int, str] = {}  # position in the batch → why that photo could not be read
        for i, item in enumerate(items):
            try:
                inputs.append(self.prepare(item, channel_order))
            except ImageLoadError as error:
                if self.on_unreadable == "raise":
                    raise
                errors[i] = str(error)
        readable_sources = [source for i, source in enumerate(sources) if i not in errors]
        answers = iter(self.match(self.describe_batch(torch.stack(inputs)), topk, readable_sources) if inputs else [])
        threshold = self._threshold()
        return [
            Localization([], False, threshold, sources[i], error=errors[i]) if i in errors else next(answers)
            for i in range(len(items))
        ]

    def _threshold(self) -> float | None:
        calibration = self.index.calibration
        return None if calibration is None else float(calibration["threshold"])

    @cached_property
    def _lat_lon(self) -> np.ndarray | None:
        """`(N, 2)` latitude and longitude of the map's images (computed on first use), ``None`` without a zone."""
        from vprdistill.data.positions import utm_to_latlon

        return None if self.index.utm_zone is None else utm_to_latlon(self.index.positions, self.index.utm_zone)

    def match(
        self, descriptors: np.ndarray, topk: int = 5, sources: list[str | None] | None = None
    ) -> list[Localization]:
        """Localisations of already computed `(B, D)` descriptors."""
        scores, indices = self.index.search(descriptors, topk)
        calibration = self.index.calibration
        threshold = self._threshold()
        sources = sources or [None] * len(descriptors)
        degrees = self._lat_lon
        results = []
        for row_scores, row_indices, source in zip(scores, indices, sources):
            keep = row_indices >= 0
            row_scores, row_indices = row_scores[keep], row_indices[keep]
            confidences = confidence_of(row_scores, calibration)
            matches = [
                Match(
                    rank=rank + 1,
                    database_index=int(i),
                    path=self.index.paths[i],
                    position=(float(self.index.positions[i, 0]), float(self.index.positions[i, 1])),
                    score=float(s),
                    distance=float(math.sqrt(max(0.0, 2.0 - 2.0 * float(s)))),
                    confidence=float(c),
                    lat_lon=None
                    if degrees is None or np.isnan(degrees[i]).any()
                    else (float(degrees[i, 0]), float(degrees[i, 1])),
                )
                for rank, (i, s, c) in enumerate(zip(row_indices, row_scores, confidences))
            ]
            unknown = threshold is not None and (not matches or matches[0].score < threshold)
            results.append(Localization(matches, unknown, threshold, source))
        return results

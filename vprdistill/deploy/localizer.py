"""Localise photos against a map index: the Python API behind ``vprdistill localize`` and the service.

    index = MapIndex.load("map_index")
    localizer = Localizer(load_model(index.manifest["model_path"]), index)
    result = localizer.localize("photo.jpg", topk=5)[0]
    result.unknown, result.position, result.matches[0].path
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprdistill.data.transforms import build_transform, image_size_hw
from vprdistill.deploy.calibration import confidence_of
from vprdistill.deploy.index import MapIndex
from vprdistill.deploy.inputs import ImageInput, as_image_list, source_name, to_rgb_image


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


@dataclass(frozen=True)
class Localization:
    """The answer for one query photo: its top-K matches and whether it is off the map."""

    matches: list[Match]
    unknown: bool  # best score below the calibrated threshold (never set on an uncalibrated index)
    threshold: float | None  # the index's calibrated score threshold, if any
    source: str | None = None  # the query's path, when it came from a file
    extra: dict[str, Any] = field(default_factory=dict)

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN positions become ``null``)."""
        matches = []
        for match in self.matches:
            record = asdict(match)
            record["position"] = list(match.position) if all(map(math.isfinite, match.position)) else None
            matches.append(record)
        return {
            "source": self.source,
            "unknown": self.unknown,
            "position": None if self.position is None else list(self.position),
            "score": self.score if self.best else None,
            "confidence": self.confidence,
            "threshold": self.threshold,
            "matches": matches,
            **self.extra,
        }


class Localizer:
    """Runs a place model on photos and matches its descriptors against a map index.

    ``index.check_model(model)`` runs first: an index only answers for the model
    (weights and config) it was built with.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        index: MapIndex,
        device: str | torch.device = "cpu",
        image_size: tuple[int, int] | int | None = None,
    ) -> None:
        index.check_model(model)
        self.index = index
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.image_size = image_size_hw(image_size if image_size is not None else index.image_size)
        self.transform = build_transform(self.image_size)

    @classmethod
    def from_index_folder(
        cls,
        index_dir: str | Path,
        model_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        image_size: tuple[int, int] | int | None = None,
    ) -> Localizer:
        """Load an index and its model (by default the model path recorded when the index was built)."""
        from vprdistill.models.checkpoint import load_model

        index = MapIndex.load(index_dir)
        if model_path is None:
            model_path = index.manifest.get("model_path")
            if not model_path:
                raise ValueError(f"index {index_dir} records no model path; pass --model")
        return cls(load_model(model_path, device=device), index, device=device, image_size=image_size)

    @torch.inference_mode()
    def describe(self, images: list[ImageInput]) -> np.ndarray:
        """Descriptors `(B, D)` float32 of B images (paths, PIL images, arrays or encoded bytes)."""
        batch = torch.stack([self.transform(to_rgb_image(item)) for item in images]).to(self.device)
        return self.model(batch).float().cpu().numpy()

    def localize(self, image_or_batch: ImageInput | list[ImageInput], topk: int = 5) -> list[Localization]:
        """Top-``topk`` matches of one image or a batch (list, or `(B, H, W, C)` array): one ``Localization`` each."""
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        items = as_image_list(image_or_batch)
        if not items:
            return []
        return self.match(self.describe(items), topk, [source_name(item) for item in items])

    def match(self, descriptors: np.ndarray, topk: int = 5, sources: list[str | None] | None = None) -> list[Localization]:
        """Localisations of already computed `(B, D)` descriptors."""
        scores, indices = self.index.search(descriptors, topk)
        calibration = self.index.calibration
        threshold = None if calibration is None else float(calibration["threshold"])
        sources = sources or [None] * len(descriptors)
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
                )
                for rank, (i, s, c) in enumerate(zip(row_indices, row_scores, confidences))
            ]
            unknown = threshold is not None and (not matches or matches[0].score < threshold)
            results.append(Localization(matches, unknown, threshold, source))
        return results

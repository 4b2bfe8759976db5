"""Re-ranking of the global search's top-K by geometric verification of local features.

A re-ranker takes one query and its top-K database candidates, in global rank
order, and returns the same candidates in a new order: by RANSAC inlier count,
ties broken by the global rank. Two kinds:

- ``patch``: the place model's own CNN feature map (``PlaceModel.local_features``),
  matched cell to cell by mutual nearest neighbours; no extra network.
- ``sift``: OpenCV SIFT keypoints with Lowe's ratio test, the classical baseline.

Like the rest of ``retrieval``, this module never runs a network: the caller
hands the patch re-ranker a ``feature_fn`` (paths -> feature maps) and the SIFT
re-ranker an ``image_loader`` (path -> image array).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vprdistill.retrieval.local_features import (
    Estimator,
    Geometry,
    feature_map_to_descriptors,
    mutual_nearest_neighbours,
    patch_inliers,
    patch_inliers_from_descriptors,
    sift_features,
    sift_inliers,
    sift_inliers_from_features,
)

__all__ = [
    "RERANK_KINDS",
    "PatchReranker",
    "RerankTiming",
    "Reranker",
    "SiftReranker",
    "build_reranker",
    "mutual_nearest_neighbours",
    "patch_inliers",
    "rerank_candidates",
    "sift_inliers",
]

RERANK_KINDS: tuple[str, ...] = ("none", "patch", "sift")

PathLike = str | Path
FeatureFn = Callable[[list[Path]], Sequence[np.ndarray]]
ImageLoader = Callable[[Path], Any]


@dataclass
class RerankTiming:
    """Time a re-ranker spent, split into computing local features and matching them."""

    queries: int = 0
    feature_seconds: float = 0.0
    match_seconds: float = 0.0

    @property
    def ms_per_query(self) -> float:
        """Added milliseconds per re-ranked query (features of uncached images + matching)."""
        return 1000.0 * (self.feature_seconds + self.match_seconds) / max(self.queries, 1)

    def as_dict(self) -> dict[str, float]:
        return {
            "queries": self.queries,
            "ms_per_query": self.ms_per_query,
            "feature_ms_per_query": 1000.0 * self.feature_seconds / max(self.queries, 1),
            "match_ms_per_query": 1000.0 * self.match_seconds / max(self.queries, 1),
        }


@runtime_checkable
class Reranker(Protocol):
    """What ``evaluate_model(..., reranker=...)`` and the localizer call."""

    kind: str
    timing: RerankTiming

    def rerank(self, query_path: PathLike, candidate_paths: Sequence[PathLike], global_order: np.ndarray) -> np.ndarray:
        """Return ``global_order (K,)`` (database indices of ``candidate_paths``) in a new order ``(K,)``."""
        ...


def rerank_candidates(scores: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Order candidates by descending score; equal scores keep their global rank.

    Args:
        scores: ``(K,)`` score of each candidate (e.g. inlier count), listed in global rank order.
        candidates: ``(K,)`` database indices in global rank order; when omitted,
            positions ``0..K-1`` are ordered instead.

    Returns:
        ``(K,)`` int64: ``candidates`` (or positions) sorted by descending score.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if candidates is None:
        return order.astype(np.int64)
    candidates = np.asarray(candidates).reshape(-1)
    if len(candidates) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
    return candidates[order].astype(np.int64)


class _CachedReranker:
    """Shared flow: fetch (or compute) each image's features, score pairs, sort."""

    kind = "base"

    cache_size: int

    def __post_init__(self) -> None:  # run by the dataclass subclasses' __init__
        # Image path -> its precomputed local features, least recently used first.
        self.cache: OrderedDict[Hashable, Any] = OrderedDict()
        self.max_cached = max(0, int(self.cache_size))
        self.timing = RerankTiming()
        self.last_scores: np.ndarray = np.zeros(0)

    def _compute(self, paths: list[Path]) -> list[Any]:
        raise NotImplementedError

    def _score(self, query_features: Any, candidate_features: Any) -> int:
        raise NotImplementedError

    def rerank(self, query_path: PathLike, candidate_paths: Sequence[PathLike], global_order: np.ndarray) -> np.ndarray:
        """Re-order ``global_order (K,)``, the database indices of ``candidate_paths``, by inlier count.

        Database features are cached per path (LRU, ``cache_size`` images);
        query features are not, since a query is seen once. The inlier count of
        each candidate, in global order, is left in ``last_scores``.
        """
        global_order = np.asarray(global_order).reshape(-1)
        if len(candidate_paths) != len(global_order):
            raise ValueError(f"{len(candidate_paths)} candidate paths for {len(global_order)} global ranks")
        start = time.perf_counter()
        query_path = Path(query_path)
        keys = [Path(p) for p in candidate_paths]
        # Look everything up before storing anything, so that a cache smaller
        # than K cannot evict a candidate between lookup and use.
        known = {p: self.cache.get(p) for p in keys}
        for path in keys:
            if path in self.cache:
                self.cache.move_to_end(path)
        missing = [p for p, features in known.items() if features is None]
        computed = self._compute([query_path, *missing])
        if len(computed) != len(missing) + 1:
            raise ValueError(f"the feature function returned {len(computed)} results for {len(missing) + 1} images")
        query_features = computed[0]
        known.update(zip(missing, computed[1:]))
        if self.max_cached:
            self.cache.update((path, known[path]) for path in missing)
            while len(self.cache) > self.max_cached:
                self.cache.popitem(last=False)
        candidate_features = [known[p] for p in keys]
        matched = time.perf_counter()
        scores = np.array([self._score(query_features, c) for c in candidate_features], dtype=np.int64)
        order = rerank_candidates(scores, global_order)
        done = time.perf_counter()
        self.timing.queries += 1
        self.timing.feature_seconds += matched - start
        self.timing.match_seconds += done - matched
        self.last_scores = scores
        return order


@dataclass(eq=False)
class PatchReranker(_CachedReranker):
    """Re-rank with the place model's own CNN feature map: mutual NN + RANSAC on grid cells.

    Args:
        feature_fn: list of image paths -> list of ``(C, h, w)`` feature maps
            (the caller runs ``model.local_features`` on its own transform).
        ransac_threshold: inlier distance in feature-map cells.
        geometry: transform fitted to the matched cell coordinates. A homography
            by default (our choice, as in Patch-NetVLAD): 4 matches suffice, which
            suits a coarse 14x14 grid, and its point-to-point error in cells is a
            meaningful threshold, whereas a fundamental matrix's point-to-line
            error accepts nearly any match at cell resolution.
        estimator: ``usac`` (OpenCV's USAC, default) or ``ransac`` (classic).
        cache_size: database images whose descriptors are kept in memory.
        cache_dtype: storage type of cached descriptors (float16 halves memory).
    """

    kind = "patch"
    feature_fn: FeatureFn
    ransac_threshold: float = 1.5
    geometry: Geometry = "homography"
    estimator: Estimator = "usac"
    cache_size: int = 2048
    cache_dtype: np.dtype | type = np.float16

    def _compute(self, paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
        maps = self.feature_fn(paths)
        described = []
        for path, feature_map in zip(paths, maps):
            feature_map = np.asarray(feature_map)
            if feature_map.ndim != 3:
                raise ValueError(f"local features of {path} must have shape (C, h, w), got {feature_map.shape}")
            descriptors, positions = feature_map_to_descriptors(feature_map)
            described.append((descriptors.astype(self.cache_dtype), positions))
        return described

    def _score(self, query_features: Any, candidate_features: Any) -> int:
        return patch_inliers_from_descriptors(
            query_features, candidate_features, self.ransac_threshold, self.geometry, self.estimator
        )


@dataclass(eq=False)
class SiftReranker(_CachedReranker):
    """Re-rank with OpenCV SIFT, Lowe's ratio test and RANSAC: the classical baseline.

    Args:
        image_loader: path -> image, ``(H, W, 3)`` RGB or ``(H, W)`` array (a PIL image works).
        ratio: Lowe's ratio test threshold.
        ransac_threshold: inlier distance in pixels of the shrunk image.
        geometry: a fundamental matrix by default (our choice): keypoints are
            located to a pixel, and street scenes are not planar, so the epipolar
            constraint keeps inliers a single homography would drop.
        estimator: ``usac`` (OpenCV's USAC, default) or ``ransac`` (classic).
        max_side: images are shrunk so their longer side is at most this many pixels.
        max_keypoints: strongest keypoints kept per image (0: all).
        cache_size: database images whose keypoints are kept in memory.
    """

    kind = "sift"
    image_loader: ImageLoader
    ratio: float = 0.75
    ransac_threshold: float = 3.0
    geometry: Geometry = "fundamental"
    estimator: Estimator = "usac"
    max_side: int | None = 640
    max_keypoints: int = 2000
    cache_size: int = 1024

    def _compute(self, paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [sift_features(np.asarray(self.image_loader(p)), self.max_side, self.max_keypoints) for p in paths]

    def _score(self, query_features: Any, candidate_features: Any) -> int:
        return sift_inliers_from_features(
            query_features, candidate_features, self.ratio, self.ransac_threshold, self.geometry, self.estimator
        )


def build_reranker(
    kind: str,
    *,
    feature_fn: FeatureFn | None = None,
    image_loader: ImageLoader | None = None,
    **options: Any,
) -> Reranker | None:
    """Build a re-ranker by name: ``none`` (returns ``None``), ``patch`` or ``sift``.

    ``patch`` needs ``feature_fn``, ``sift`` needs ``image_loader``; other keyword
    options go to the class (e.g. ``ransac_threshold``, ``geometry``, ``cache_size``).
    """
    if kind == "none":
        return None
    if kind == "patch":
        if feature_fn is None:
            raise ValueError("the patch re-ranker needs feature_fn (image paths -> (C, h, w) local feature maps)")
        return PatchReranker(feature_fn, **options)
    if kind == "sift":
        if image_loader is None:
            raise ValueError("the sift re-ranker needs image_loader (path -> image array)")
        return SiftReranker(image_loader, **options)
    raise ValueError(f"unknown re-ranker {kind!r}; choose one of {', '.join(RERANK_KINDS)}")

"""Geometric verification of local features: mutual nearest neighbours and RANSAC.

Two kinds of local features are verified here, both as plain arrays:

- *patch* features: a CNN feature map ``(C, h, w)``, one descriptor per grid
  cell, positioned at its cell's ``(x, y)`` grid coordinates;
- *SIFT* keypoints of a grayscale image, positioned in pixels.

The score of an image pair is the number of matches consistent with one
geometric transform, found by OpenCV's RANSAC.
"""

from __future__ import annotations

from typing import Literal

import cv2
import faiss
import numpy as np

from vprdistill.retrieval.approximate import l2_normalise

Geometry = Literal["homography", "affine", "fundamental"]
GEOMETRIES: tuple[str, ...] = ("homography", "affine", "fundamental")
Estimator = Literal["usac", "ransac"]
ESTIMATORS: tuple[str, ...] = ("usac", "ransac")

# The fewest correspondences each OpenCV estimator accepts with RANSAC.
_MIN_MATCHES = {"homography": 4, "affine": 3, "fundamental": 8}


def feature_map_to_descriptors(feature_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a feature map ``(C, h, w)`` into descriptors and their grid positions.

    Returns ``descriptors (h*w, C)`` float32, L2-normalised per cell, and
    ``positions (h*w, 2)`` float32 holding ``(x, y)`` = (column, row) of each
    cell, in row-major order.
    """
    feature_map = np.asarray(feature_map)
    if feature_map.ndim != 3:
        raise ValueError(f"a local feature map must have shape (C, h, w), got {feature_map.shape}")
    channels, height, width = feature_map.shape
    descriptors = l2_normalise(feature_map.reshape(channels, height * width).T)
    rows, cols = np.divmod(np.arange(height * width), width)
    positions = np.stack([cols, rows], axis=1).astype(np.float32)
    return descriptors, positions


def mutual_nearest_neighbours(desc_a: np.ndarray, desc_b: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)`` where ``desc_b[j]`` is the nearest neighbour of ``desc_a[i]`` and vice versa.

    Args:
        desc_a: ``(Na, C)`` descriptors, L2-normalised (similarity = inner product).
        desc_b: ``(Nb, C)`` descriptors, L2-normalised.

    Returns:
        ``(M, 2)`` int64 array of index pairs, sorted by ``i``; ``M <= min(Na, Nb)``.
    """
    desc_a = np.asarray(desc_a, dtype=np.float32)
    desc_b = np.asarray(desc_b, dtype=np.float32)
    if desc_a.ndim != 2 or desc_b.ndim != 2 or desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(f"descriptor sets must be (Na, C) and (Nb, C), got {desc_a.shape} and {desc_b.shape}")
    if len(desc_a) == 0 or len(desc_b) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    similarity = desc_a @ desc_b.T
    nearest_in_b = similarity.argmax(axis=1)
    nearest_in_a = similarity.argmax(axis=0)
    index_a = np.arange(len(desc_a))
    mutual = nearest_in_a[nearest_in_b] == index_a
    return np.stack([index_a[mutual], nearest_in_b[mutual]], axis=1).astype(np.int64)


def ransac_inliers(
    points_a: np.ndarray,
    points_b: np.ndarray,
    geometry: Geometry = "homography",
    threshold: float = 1.5,
    estimator: Estimator = "usac",
    confidence: float = 0.999,
    max_iterations: int = 2000,
) -> int:
    """Count the correspondences ``points_a[i] <-> points_b[i]`` that fit one transform.

    Args:
        points_a: ``(M, 2)`` ``(x, y)`` positions in the first image.
        points_b: ``(M, 2)`` positions of the matched features in the second image.
        geometry: ``homography`` (cv2.findHomography), ``affine``
            (cv2.estimateAffine2D) or ``fundamental`` (cv2.findFundamentalMat).
        threshold: RANSAC inlier distance, in the units of the positions
            (grid cells for feature maps, pixels for keypoints).
        estimator: ``usac`` (``cv2.USAC_DEFAULT``: RANSAC with early rejection of
            bad hypotheses and local optimisation) or ``ransac`` (classic
            ``cv2.RANSAC`` / ``cv2.FM_RANSAC``). USAC is the default because an
            unrelated pair, the common case in a top-K, makes classic RANSAC run
            all ``max_iterations`` (tens of ms per pair), while USAC stops early.

    Returns:
        The RANSAC inlier count; 0 when there are too few matches to fit the model.
    """
    if geometry not in _MIN_MATCHES:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of {', '.join(GEOMETRIES)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown RANSAC estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    points_a = np.ascontiguousarray(points_a, dtype=np.float32).reshape(-1, 2)
    points_b = np.ascontiguousarray(points_b, dtype=np.float32).reshape(-1, 2)
    if len(points_a) != len(points_b):
        raise ValueError(f"point sets differ in length: {len(points_a)} vs {len(points_b)}")
    if len(points_a) < _MIN_MATCHES[geometry]:
        return 0
    # USAC (early rejection, local optimisation) or each estimator's classic RANSAC flag.
    method = cv2.USAC_DEFAULT if estimator == "usac" else (cv2.FM_RANSAC if geometry == "fundamental" else cv2.RANSAC)
    if geometry == "homography":
        _, mask = cv2.findHomography(
            points_a, points_b, method, threshold, maxIters=max_iterations, confidence=confidence
        )
    elif geometry == "affine":
        _, mask = cv2.estimateAffine2D(
            points_a,
            points_b,
            method=method,
            ransacReprojThreshold=threshold,
            maxIters=max_iterations,
            confidence=confidence,
        )
    else:
        _, mask = cv2.findFundamentalMat(points_a, points_b, method, threshold, confidence, max_iterations)
    # OpenCV returns no mask when the sample is degenerate (e.g. all points collinear).
    return 0 if mask is None else int(np.count_nonzero(mask))


def patch_inliers(
    feat_a: np.ndarray,
    feat_b: np.ndarray,
    ransac_threshold: float = 1.5,
    geometry: Geometry = "homography",
    estimator: Estimator = "usac",
) -> int:
    """Inlier count between two CNN feature maps: mutual nearest neighbours, then RANSAC.

    Args:
        feat_a: ``(C, ha, wa)`` local feature map of the first image.
        feat_b: ``(C, hb, wb)`` local feature map of the second image.
        ransac_threshold: inlier distance in feature-map grid cells.
        geometry: transform fitted by RANSAC on the matched grid coordinates.
        estimator: ``usac`` or ``ransac``, see ``ransac_inliers``.

    Returns:
        The number of mutual matches consistent with one transform.
    """
    return patch_inliers_from_descriptors(
        feature_map_to_descriptors(feat_a), feature_map_to_descriptors(feat_b), ransac_threshold, geometry, estimator
    )


def patch_inliers_from_descriptors(
    features_a: tuple[np.ndarray, np.ndarray],
    features_b: tuple[np.ndarray, np.ndarray],
    ransac_threshold: float = 1.5,
    geometry: Geometry = "homography",
    estimator: Estimator = "usac",
) -> int:
    """``patch_inliers`` on two precomputed ``feature_map_to_descriptors`` results."""
    (desc_a, pos_a), (desc_b, pos_b) = features_a, features_b
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(f"feature maps differ in channels: {desc_a.shape[1]} vs {desc_b.shape[1]}")
    matches = mutual_nearest_neighbours(desc_a, desc_b)
    return ransac_inliers(pos_a[matches[:, 0]], pos_b[matches[:, 1]], geometry, ransac_threshold, estimator)


def to_grayscale_uint8(image: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, 3)`` RGB image as ``(H, W)`` uint8 for SIFT."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim != 2:
        raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        # Float images in [0, 1] are common; anything else is clipped to the byte range.
        scale = 255.0 if image.dtype.kind == "f" and image.max(initial=0) <= 1.0 else 1.0
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def resize_longest_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink ``image (H, W[, 3])`` so its longer side is at most ``max_side`` (never enlarges)."""
    if not max_side:
        return image
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sift_features(
    image: np.ndarray, max_side: int | None = None, max_keypoints: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV SIFT on a grayscale version of ``image``.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` RGB image.
        max_side: when set, the image is first shrunk so its longer side is at most this.
        max_keypoints: keep at most this many strongest keypoints (0: all).

    Returns:
        ``positions (N, 2)`` float32 ``(x, y)`` in pixels of the (resized) image and
        ``descriptors (N, 128)`` float32.
    """
    gray = resize_longest_side(to_grayscale_uint8(image), max_side)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=max_keypoints).detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    positions = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    return positions, descriptors.astype(np.float32)


def ratio_test_matches(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.75) -> np.ndarray:
    """Lowe's ratio test: pairs ``(i, j)`` whose nearest neighbour is closer than ``ratio`` x the second nearest.

    Args:
        desc_a: ``(Na, D)`` descriptors; desc_b: ``(Nb, D)``.

    Returns:
        ``(M, 2)`` int64 index pairs. The two nearest neighbours come from
        faiss's exact L2 search, a few times faster than OpenCV's brute-force matcher.
    """
    if len(desc_a) == 0 or len(desc_b) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    squared, nearest = faiss.knn(np.ascontiguousarray(desc_a, np.float32), np.ascontiguousarray(desc_b, np.float32), 2)
    # faiss returns squared distances, so the ratio is squared too.
    keep = squared[:, 0] < (ratio**2) * squared[:, 1]
    return np.stack([np.flatnonzero(keep), nearest[keep, 0]], axis=1).astype(np.int64)


def sift_inliers_from_features(
    features_a: tuple[np.ndarray, np.ndarray],
    features_b: tuple[np.ndarray, np.ndarray],
    ratio: float = 0.75,
    ransac_threshold: float = 3.0,
    geometry: Geometry = "fundamental",
    estimator: Estimator = "usac",
) -> int:
    """RANSAC inlier count between two precomputed ``sift_features`` results."""
    (pos_a, desc_a), (pos_b, desc_b) = features_a, features_b
    matches = ratio_test_matches(desc_a, desc_b, ratio)
    return ransac_inliers(pos_a[matches[:, 0]], pos_b[matches[:, 1]], geometry, ransac_threshold, estimator)


def sift_inliers(
    image_a: np.ndarray,
    image_b: np.ndarray,
    ratio: float = 0.75,
    ransac_threshold: float = 3.0,
    geometry: Geometry = "fundamental",
    max_side: int | None = None,
    estimator: Estimator = "usac",
) -> int:
    """SIFT + ratio test + RANSAC inlier count between two images ``(H, W[, 3])``.

    ``ransac_threshold`` is in pixels of the images after the optional
    ``max_side`` shrink.
    """
    return sift_inliers_from_features(
        sift_features(image_a, max_side), sift_features(image_b, max_side), ratio, ransac_threshold, geometry, estimator
    )

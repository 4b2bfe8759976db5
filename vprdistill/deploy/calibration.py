"""Out-of-map rejection: a threshold on the match score, calibrated on a validation split.

Protocol (our choice; see docs/DEPLOYMENT.md):

1. Compute descriptors of the validation split's database and queries with the
   index's model, and keep them as the index keeps its own (same PCA, dtype,
   type), so scores are on the index's scale.
2. Hold out a spatial half of the validation database: positions are projected
   on their principal axis and the database images beyond the median form the
   held-out part. The rest is the *map*.
3. A query is *in-map* when a map image lies within ``threshold_m`` of it, and
   *out-of-map* otherwise (held-out area, or no positive at all).
4. Each query is matched against the map; its answer is *correct* when it is
   in-map and its best match lies within ``threshold_m``.
5. Thresholds are swept over the best scores: a query is accepted when its
   best score is at least the threshold. Precision = correct accepted /
   accepted; recall = correct accepted / in-map queries; false-accept rate =
   accepted out-of-map / out-of-map queries. The chosen operating point is
   the lowest score whose precision reaches the target (the highest recall
   at that precision); the stored threshold lies halfway between it and the
   next lower score, which keeps every decision on the calibration set and
   leaves a margin for new queries.
6. Confidence: an isotonic regression of "correct" on the best score (the
   probability that an answer with this score is right), stored as its
   breakpoints so it is applied with ``np.interp``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from sklearn.isotonic import IsotonicRegression

from vprdistill.deploy.index import MapIndex

DEFAULT_TARGET_PRECISION = 0.95
TABLE_ROWS = 21


def spatial_holdout(positions: np.ndarray) -> np.ndarray:
    """Boolean mask `(N,)` of the map part: positions `(N, 2)` on the near side of the median along their principal axis."""
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) < 4 or not np.isfinite(positions).all():
        raise ValueError(f"calibration needs at least 4 database images with known positions, got {len(positions)}")
    centred = positions - positions.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    along = centred @ axes[0]
    return along <= np.median(along)


def sweep_thresholds(best_scores: np.ndarray, correct: np.ndarray, in_map: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall and false-accept rate at every distinct best score `(Q,)` used as threshold, ascending."""
    best_scores = np.asarray(best_scores, dtype=np.float64)
    correct, in_map = np.asarray(correct, bool), np.asarray(in_map, bool)
    num_in, num_out = int(in_map.sum()), int((~in_map).sum())
    rows = []
    for threshold in np.unique(best_scores):
        accepted = best_scores >= threshold
        num_accepted = int(accepted.sum())
        rows.append(
            {
                "threshold": float(threshold),
                "precision": float((accepted & correct).sum() / num_accepted) if num_accepted else 1.0,
                "recall": float((accepted & correct).sum() / num_in) if num_in else 0.0,
                "false_accept_rate": float((accepted & ~in_map).sum() / num_out) if num_out else 0.0,
                "accepted": num_accepted,
            }
        )
    return rows


def confidence_of(scores: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Confidence in [0, 1] of match scores: calibrated P(correct) when the index is calibrated,
    else the cosine similarity mapped to [0, 1] (``(s + 1) / 2``, uncalibrated)."""
    scores = np.asarray(scores, dtype=np.float64)
    curve = (calibration or {}).get("confidence")
    if not curve:
        return np.clip((scores + 1.0) / 2.0, 0.0, 1.0)
    return np.clip(np.interp(scores, curve["scores"], curve["probabilities"]), 0.0, 1.0)


def calibrate_from_scores(
    best_scores: np.ndarray, correct: np.ndarray, in_map: np.ndarray, target_precision: float = DEFAULT_TARGET_PRECISION
) -> dict[str, Any]:
    """Threshold, trade-off table and confidence curve from per-query `(Q,)` best scores and labels."""
    in_map = np.asarray(in_map, bool)
    if in_map.sum() < 2 or (~in_map).sum() < 2:
        raise ValueError(
            f"calibration needs at least 2 in-map and 2 out-of-map queries, got {int(in_map.sum())} and "
            f"{int((~in_map).sum())}: use a larger validation split"
        )
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must lie in (0, 1], got {target_precision}")
    rows = sweep_thresholds(best_scores, correct, in_map)
    # The lowest threshold whose precision reaches the target; when none does, the most precise one.
    chosen = next((row for row in rows if row["precision"] >= target_precision), None)
    reached = chosen is not None
    chosen = chosen or max(rows, key=lambda row: (row["precision"], -row["threshold"]))
    position = rows.index(chosen)
    # The table: about TABLE_ROWS rows of the sweep, evenly spread over its thresholds, plus the chosen one.
    picks = {int(round(i)) for i in np.linspace(0, len(rows) - 1, min(TABLE_ROWS, len(rows)))}
    # Halfway to the next lower score: the same decisions on the calibration set,
    # with a margin on both sides for new queries.
    threshold = chosen["threshold"] if position == 0 else 0.5 * (rows[position - 1]["threshold"] + chosen["threshold"])
    # Confidence: isotonic map score → P(answer correct), stored as breakpoints for ``np.interp``.
    curve = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    curve.fit(np.asarray(best_scores, np.float64), np.asarray(correct, np.float64))
    return {
        "threshold": float(threshold),
        "operating_score": chosen["threshold"],
        "target_precision": target_precision,
        "target_reached": reached,
        "precision": chosen["precision"],
        "recall": chosen["recall"],
        "false_accept_rate": chosen["false_accept_rate"],
        "num_in_map": int(in_map.sum()),
        "num_out_of_map": int((~in_map).sum()),
        "table": [rows[i] for i in sorted(picks | {position})],
        "confidence": {"scores": curve.X_thresholds_.tolist(), "probabilities": curve.y_thresholds_.tolist()},
    }


def calibrate_index(
    index: MapIndex,
    database_descriptors: np.ndarray,
    database_positions: np.ndarray,
    query_descriptors: np.ndarray,
    query_positions: np.ndarray,
    threshold_m: float = 25.0,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> dict[str, Any]:
    """Calibrate ``index``'s rejection threshold on a validation split (the protocol of this module).

    Args:
        index: the index to calibrate (its PCA, dtype and type are reused; its entries are not).
        database_descriptors, database_positions: `(N, D)` and `(N, 2)` of the validation database.
        query_descriptors, query_positions: `(M, D)` and `(M, 2)` of the validation queries.

    Returns:
        The calibration record (threshold, table, confidence curve, counts) stored in ``index.json``.
    """
    in_map_part = spatial_holdout(database_positions)
    map_index = index.empty_like()
    map_positions = np.asarray(database_positions, np.float64)[in_map_part]
    map_index.add(np.asarray(database_descriptors)[in_map_part], map_positions, [""] * int(in_map_part.sum()))
    query_positions = np.asarray(query_positions, np.float64)
    if not np.isfinite(query_positions).all():
        raise ValueError("calibration needs the position of every validation query")
    nearest_map_m, _ = cKDTree(map_positions).query(query_positions)
    in_map = nearest_map_m <= threshold_m
    scores, indices = map_index.search(query_descriptors, 1)
    found = indices[:, 0] >= 0
    best_scores = np.where(found, scores[:, 0], -1.0)
    match_error_m = np.linalg.norm(map_positions[np.maximum(indices[:, 0], 0)] - query_positions, axis=1)
    correct = in_map & found & (match_error_m <= threshold_m)
    record = calibrate_from_scores(best_scores, correct, in_map, target_precision)
    record.update({"threshold_m": float(threshold_m), "map_size": int(in_map_part.sum())})
    return record


def format_table(record: dict[str, Any]) -> str:
    """The precision/recall trade-off of a calibration record as aligned text."""
    lines = [f"{'threshold':>10} {'precision':>10} {'recall':>8} {'false-accept':>13} {'accepted':>9}"]
    for row in record["table"]:
        mark = "  <- chosen" if row["threshold"] == record["operating_score"] else ""
        lines.append(
            f"{row['threshold']:>10.4f} {row['precision']:>10.3f} {row['recall']:>8.3f} "
            f"{row['false_accept_rate']:>13.3f} {row['accepted']:>9d}{mark}"
        )
    return "\n".join(lines)

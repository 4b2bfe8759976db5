"""Figures of a results table, drawn with matplotlib (Agg) into PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

from vprdistill.utils.extras import require

matplotlib = require("matplotlib", "report", "drawing the report's figures")
matplotlib.use("Agg")  # PNG bytes, no display: chosen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from vprdistill.experiments.rows import ResultRow  # noqa: E402


def _png(figure, plot, title: str, ylabel: str, legend: bool = True, **grid) -> bytes:
    """Title, y label, grid (``grid``: options of ``Axes.grid``) and legend of the axes ``plot``;
    then ``figure`` as PNG bytes (and closed)."""
    plot.set_ylabel(ylabel)
    plot.grid(True, alpha=0.3, **grid)
    if legend:
        plot.legend(fontsize=7)
    plot.set_title(title)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def recall_curves(rows: Sequence[ResultRow]) -> bytes:
    """Recall@N against N, one line per model."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        ns = sorted(int(n) for n in row.recall)
        axis.plot(ns, [row.recall[str(n)] for n in ns], marker="o", label=row.name)
    axis.set_xlabel("N (number of retrieved database images)")
    axis.set_xscale("log")
    axis.set_ylim(0, 100)
    return _png(figure, axis, "Recall@N on the test split", "Recall@N (%)")


def recall_per_condition(rows: Sequence[ResultRow], n: str = "1") -> bytes:
    """Grouped bars: R@n per query condition, one bar per model."""
    conditions = sorted({c for row in rows for c in row.recall_per_condition})
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(conditions) + 2), 4))
    width = 0.8 / max(len(rows), 1)
    for position, row in enumerate(rows):
        values = [row.recall_per_condition.get(c, {}).get(n, 0.0) for c in conditions]
        axis.bar([i + position * width for i in range(len(conditions))], values, width=width, label=row.name)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(conditions))])
    axis.set_xticklabels(conditions, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 100)
    return _png(figure, axis, f"R@{n} per query condition", f"R@{n} (%)", axis="y")


def recall_against_speed(rows: Sequence[ResultRow]) -> bytes:
    """R@1 against milliseconds per image: the accuracy/cost trade-off."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        axis.scatter([row.ms_per_image], [row.recall.get("1", 0.0)], s=40)
        axis.annotate(
            row.name,
            (row.ms_per_image, row.recall.get("1", 0.0)),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.set_xlabel("ms per image (descriptor)")
    return _png(figure, axis, "R@1 against descriptor time", "R@1 (%)", legend=False)

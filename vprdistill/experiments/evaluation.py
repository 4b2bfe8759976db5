"""The machine a report was made on, and a grid of sample retrievals of a run folder."""

from __future__ import annotations

import io
import os
import platform
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.eval.evaluate import evaluate_model
from vprdistill.eval.pictures import render_prediction
from vprdistill.models.checkpoint import load_model


def machine_line() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def retrieval_grid(
    run_dir: Path,
    test_set: PlaceDataset,
    condition: str,
    image_size: tuple[int, int],
    device: torch.device,
    num_queries: int = 4,
    topk: int = 5,
) -> bytes | None:
    """PNG of ``num_queries`` queries whose condition starts with ``condition``, each with its top-k."""
    conditions = test_set.query_conditions()
    chosen = [i for i, c in enumerate(conditions) if c.split("-")[0] == condition]
    if not chosen:
        return None
    chosen = [chosen[int(i)] for i in np.linspace(0, len(chosen) - 1, num=min(num_queries, len(chosen)))]
    subset = test_set.subset(query_indices=chosen)
    model = load_model(run_dir, device=device)
    result = evaluate_model(model, subset, image_size=image_size, device=device, progress=False)
    positives = subset.positives(25.0)
    rows = [render_prediction(subset, q, result.predictions[q][:topk], positives[q]) for q in range(subset.num_queries)]
    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

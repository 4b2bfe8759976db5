"""Result rows with per-query hits and intervals, the baseline and comparison tables, untrained networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.eval.evaluate import evaluate_descriptors
from vprdistill.experiments.baselines import untrained_model
from vprdistill.experiments.report import comparison_table, detectable_note, summary_table, write_report
from vprdistill.experiments.rows import ResultRow, row_from_result
from vprdistill.models import model_fingerprint
from vprdistill.train.config import load_config

Z95 = 1.959963984540054


def _dataset(num: int) -> PlaceDataset:
    """``num`` database images 100 m apart and one query 3 m from each (no files: descriptors are given)."""
    east = 500000.0 + 100.0 * np.arange(num)
    database = np.stack([east, np.full(num, 4e6)], axis=1)
    notes = ["day" if i % 2 == 0 else "night" for i in range(num)]
    return PlaceDataset(
        name="grid",
        root="/nowhere",
        split="test",
        database_paths=[f"db{i}.jpg" for i in range(num)],
        query_paths=[f"q{i}.jpg" for i in range(num)],
        database_utm=database,
        query_utm=database + [3.0, 0.0],
        query_notes=notes,
    )


def _result(found: np.ndarray, dataset: PlaceDataset):
    """An evaluation in which query i ranks its own place first exactly where ``found[i]``."""
    num = dataset.num_database
    database = np.eye(num, dtype=np.float32)
    queries = np.zeros((num, num), dtype=np.float32)
    for i in range(num):
        # Found: its own place; missed: the next place (100 m away), with its own place second.
        queries[i, i if found[i] else (i + 1) % num] = 1.0
        queries[i, (i + 1) % num if found[i] else i] = 0.5
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return evaluate_descriptors(database, queries, dataset, recall_ns=(1, 5))


def _row(found: np.ndarray, dataset: PlaceDataset, name: str, **options) -> ResultRow:
    return row_from_result(_result(found, dataset), name, f"{name} model", parameters=1000, **options)


def test_row_holds_per_query_hits_and_bootstrap_intervals() -> None:
    dataset = _dataset(200)
    found = np.random.default_rng(0).random(200) < 0.3
    row = _row(found, dataset, "A")
    assert row.hits["1"] == [int(f) for f in found]
    assert row.hits["5"] == [1] * 200  # the own place is at most second
    assert row.recall["1"] == pytest.approx(100 * found.mean())
    low, high = row.recall_ci["1"]
    p = found.mean()
    half = 100 * Z95 * math.sqrt(p * (1 - p) / 200)
    assert low == pytest.approx(row.recall["1"] - half, abs=1.0)
    assert high == pytest.approx(row.recall["1"] + half, abs=1.0)
    assert row.recall_ci["5"] == [100.0, 100.0]
    assert set(row.recall_per_condition) == {"day", "night"}
    # Queries alternate day / night: each condition's Recall@1 is the mean of its own half of the hits.
    assert row.condition_recall("day") == pytest.approx(100 * found[0::2].mean())
    assert row.condition_recall("night", n="1") == pytest.approx(100 * found[1::2].mean())
    with pytest.raises(ValueError, match="no Recall@1 under condition 'dusk'"):
        row.condition_recall("dusk")
    with pytest.raises(ValueError, match="kind must be one of"):
        ResultRow("x", "", 0, {}, kind="finetuned")


def test_tables_show_intervals_baselines_and_paired_differences(tmp_path) -> None:
    dataset = _dataset(120)
    rng = np.random.default_rng(1)
    thumb = rng.random(120) < 0.2
    untrained = rng.random(120) < 0.05
    trained = thumb | (rng.random(120) < 0.3)  # finds what the thumbnail finds and more
    rows = [_row(trained, dataset, "Trained")]
    baselines = [
        _row(thumb, dataset, "thumbnail-16", kind="baseline"),
        _row(untrained, dataset, "Trained, untrained", kind="untrained", baseline_for="Trained"),
    ]

    header, line = summary_table(rows)
    assert header[2:6] == ["R@1", "R@5", "R@10", "R@1 95 % CI"]
    low, high = rows[0].recall_ci["1"]
    assert line[5] == f"[{low:.1f}, {high:.1f}]" and line[4] == "–"  # no R@10 evaluated

    table = comparison_table(rows, baselines)
    assert table[0] == ["Model", "R@1", "− untrained (R@1 points)", "p", "− thumbnail-16", "p"]
    cells = table[1]
    gain_untrained = 100 * (trained.astype(int) - untrained.astype(int)).mean()
    gain_thumb = 100 * (trained.astype(int) - thumb.astype(int)).mean()
    assert cells[2].startswith(f"{gain_untrained:+.1f} [")
    assert cells[4].startswith(f"{gain_thumb:+.1f} [")
    # The trained model never misses what the thumbnail finds: McNemar's p is 2 · 0.5^k, k = its extra finds.
    extra = int((trained & ~thumb).sum())
    assert float(cells[5]) == pytest.approx(2 * 0.5**extra, rel=0.05)

    note = detectable_note([*rows, *baselines])
    assert "120 queries" in note
    mean_recall = np.mean([r.recall["1"] for r in [*rows, *baselines]]) / 100
    assert f"{100 * Z95 * math.sqrt(2 * mean_recall * (1 - mean_recall) / 120):.1f} points" in note

    md_path, html_path = write_report(tmp_path, "t", "intro", rows, {}, {}, "meta", baselines=baselines)
    markdown = md_path.read_text()
    assert "## Baselines" in markdown and "## Trained against baselines" in markdown
    assert "| thumbnail-16 |" in markdown and "| Trained, untrained |" in markdown
    assert "<h2>Baselines</h2>" in html_path.read_text()


def test_rows_without_hits_show_dashes() -> None:
    plain = ResultRow("old", "", 10, {"1": 12.0, "5": 30.0, "10": 40.0})
    assert summary_table([plain])[1][5] == "–"
    assert comparison_table([plain], [])[1] == ["old", "12.0", "–", "–"]
    assert detectable_note([plain]) == ""


def test_untrained_model_is_seeded_like_training() -> None:
    config = load_config("tscm/synth-student-tiny-nokd", ["data.dataset=/data/x", "data.image_size=[32, 32]"])
    first, again = untrained_model(config), untrained_model(config)
    assert model_fingerprint(first) == model_fingerprint(again)
    other = untrained_model(load_config("tscm/synth-student-tiny-nokd", ["data.dataset=/data/x", "seed=1"]))
    assert not torch.equal(next(first.parameters()), next(other.parameters()))
    assert first.config["image_size"] == [32, 32] and not first.training
    seg = untrained_model(load_config("structvpr/synth-seg-tiny", ["data.dataset=/data/x"]))
    assert seg.input_channels == 10 and seg.structural_class_map is not None


def test_mean_and_spread_over_seeds() -> None:
    from benchmarks._experiments_helpers import mean_and_spread

    assert mean_and_spread([10.0, 12.0, 14.0]) == "12.0 ± 1.6"  # population std, unchanged

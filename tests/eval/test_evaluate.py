"""evaluate_descriptors / evaluate_model on the tiny near-copy dataset, with and without a re-ranker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.readers import open_dataset
from vprdistill.eval.evaluate import evaluate_descriptors, evaluate_model, recall_by_condition
from vprdistill.models.checkpoint import model_fingerprint
from vprdistill.models.registry import build_model

REQUIRED_KEYS = {
    "recall", "num_queries", "num_queries_without_positive", "num_database", "threshold_m",
    "descriptor_dim", "ms_per_image", "ms_per_query", "model", "dataset", "split", "queries_without_positive",
}  # fmt: skip
# 5 of the 6 queries have a positive: counted as a miss, the sixth caps recall at 5/6.
ALL_RIGHT = 500.0 / 6


def place_descriptors(dataset, shift: int = 0, dim: int = 16, seed: int = 0):
    """Random unit database descriptors; each query gets the descriptor of the database image
    nearest to it on the map, moved ``shift`` places along the database (0: the right one)."""
    rng = np.random.default_rng(seed)
    database = rng.standard_normal((dataset.num_database, dim)).astype(np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    nearest = np.array([np.argmin(dataset.distances_to_database(q)) for q in range(dataset.num_queries)])
    return database, database[(nearest + shift) % dataset.num_database].copy()


@pytest.fixture(scope="module")
def dataset(tiny_places):
    return open_dataset(tiny_places, split="test")


def test_perfect_descriptors_give_full_recall_and_wrong_ones_none(dataset):
    database, queries = place_descriptors(dataset)
    result = evaluate_descriptors(
        database, queries, dataset, threshold_m=25.0, recall_ns=(1, 5, 10, 20), queries_without_positive="exclude"
    )
    assert result.recall == {"1": 100.0, "5": 100.0, "10": 100.0, "20": 100.0}
    assert result.num_queries == 6 and result.num_queries_without_positive == 1 and result.num_database == 8
    assert result.to_json()["queries_without_positive"] == {"convention": "exclude", "count": 1}
    counted = evaluate_descriptors(database, queries, dataset, threshold_m=25.0, recall_ns=(1, 5, 10, 20))
    assert counted.recall == {n: pytest.approx(ALL_RIGHT) for n in ("1", "5", "10", "20")}
    assert counted.to_json()["queries_without_positive"] == {"convention": "count-as-miss", "count": 1}
    with pytest.raises(ValueError, match="queries_without_positive must be one of count-as-miss, exclude"):
        evaluate_descriptors(database, queries, dataset, queries_without_positive="ignore")
    assert result.descriptor_dim == 16 and result.ms_per_query > 0
    # Each query's first prediction is the database image 4 m away.
    for query in range(dataset.num_queries):
        if len(result.positives[query]):
            assert dataset.distances_to_database(query)[result.predictions[query, 0]] < 5.0

    database, queries = place_descriptors(dataset, shift=1)
    wrong = evaluate_descriptors(database, queries, dataset, recall_ns=(1, 5))
    assert wrong.recall["1"] == 0.0
    assert 0.0 <= wrong.recall["5"] <= 100.0


def test_recall_per_condition_and_recall_beyond_database_size(dataset):
    database, queries = place_descriptors(dataset, shift=1)
    # Make the night queries right and every other query wrong.
    right_database, right_queries = place_descriptors(dataset)
    night = np.array([c == "night" for c in dataset.query_conditions()])
    queries[night] = right_queries[night]
    result = evaluate_descriptors(right_database, queries, dataset, recall_ns=(1, 20))
    table = result.recall_per_condition
    assert set(table) == {"day", "night", "unknown"}
    assert table["night"]["recall"]["1"] == 100.0 and table["night"]["num_queries"] == 2
    assert table["day"]["recall"]["1"] == 0.0
    assert table["day"]["num_queries"] == 3 and table["day"]["num_queries_without_positive"] == 1
    assert sum(row["num_queries"] for row in table.values()) == result.num_queries
    # 8 database images: the top 20 is the whole database, which holds every positive.
    assert result.predictions.shape == (6, 8)
    assert result.recall["20"] == pytest.approx(ALL_RIGHT)
    assert result.recall["1"] == pytest.approx(100.0 * 2 / 6)  # the two night queries

    # Left out instead, the day query without a positive no longer weighs: 0 of 2 and 2 of 5.
    excluded = evaluate_descriptors(
        right_database, queries, dataset, recall_ns=(1, 20), queries_without_positive="exclude"
    )
    assert excluded.recall == {"1": pytest.approx(40.0), "20": 100.0}
    assert excluded.recall_per_condition["day"]["recall"]["1"] == 0.0
    assert excluded.recall_per_condition["night"]["recall"]["1"] == 100.0


def test_a_condition_without_any_positive(dataset):
    """Counted as misses such a condition has recall 0; left out, it has none."""
    database, queries = place_descriptors(dataset)
    positives = dataset.positives(25.0)
    # The one query without a positive gets a condition of its own.
    conditions = ["far" if len(p) == 0 else c for p, c in zip(positives, dataset.query_conditions())]
    assert conditions.count("far") == 1 and conditions.count("night") == 2
    predictions = evaluate_descriptors(database, queries, dataset, recall_ns=(1,)).predictions
    counted = recall_by_condition(predictions, positives, conditions, (1,), dataset.num_database)
    assert counted["far"] == {"recall": {"1": 0.0}, "num_queries": 1, "num_queries_without_positive": 1}
    assert counted["night"]["recall"] == {"1": 100.0}
    excluded = recall_by_condition(predictions, positives, conditions, (1,), dataset.num_database, "exclude")
    assert excluded["far"]["recall"] is None and excluded["night"]["recall"] == {"1": 100.0}


def test_reranker_function_and_object_are_applied_after_the_global_search(dataset):
    database, queries = place_descriptors(dataset)

    def reverse(query_index, candidates):
        return candidates[::-1]

    result = evaluate_descriptors(
        database, queries, dataset, recall_ns=(1, 5, 8), reranker=reverse, rerank_topk=8,
        queries_without_positive="exclude",
    )  # fmt: skip
    assert result.recall_before_rerank == {"1": 100.0, "5": 100.0, "8": 100.0}
    # Reversed, the right image comes last of the 8.
    assert result.recall == {"1": 0.0, "5": 0.0, "8": 100.0}
    # Both before and after re-ranking follow the convention.
    counted = evaluate_descriptors(database, queries, dataset, recall_ns=(1, 8), reranker=reverse, rerank_topk=8)
    assert counted.recall_before_rerank == {"1": pytest.approx(ALL_RIGHT), "8": pytest.approx(ALL_RIGHT)}
    assert counted.recall == {"1": 0.0, "8": pytest.approx(ALL_RIGHT)}
    report = result.to_json()
    assert report["rerank"]["topk"] == 8 and "recall_before_rerank" in report

    class PathReranker:
        """Puts first the candidate whose file name is nearest in position to the query's (from the path only)."""

        kind = "by-name"
        timing = None

        def rerank(self, query_path, candidate_paths, global_order):
            east = float(query_path.name.split("@")[1])
            gaps = [abs(float(p.name.split("@")[1]) - east) for p in candidate_paths]
            return np.asarray(global_order)[np.argsort(gaps, kind="stable")]

    database, queries = place_descriptors(dataset, shift=3)
    result = evaluate_descriptors(database, queries, dataset, recall_ns=(1,), reranker=PathReranker(), rerank_topk=8)
    assert result.recall_before_rerank == {"1": 0.0}
    assert result.recall == {"1": pytest.approx(ALL_RIGHT)}
    assert result.to_json()["rerank"]["kind"] == "by-name"

    with pytest.raises(ValueError, match="not distinct candidates"):
        evaluate_descriptors(database, queries, dataset, reranker=lambda q, c: np.array([99]), rerank_topk=3)


def test_reranking_reorders_only_the_top_k_and_keeps_the_rest_and_the_padding():
    """Only each query's first ``rerank_topk`` valid candidates reach the re-ranker; the rest keep
    their global order, and the -1 padding of a group smaller than the list stays in place."""
    database = [Path(f"db{i}.jpg") for i in range(6)]
    dataset = PlaceDataset(
        name="grouped", root=Path("."), split="test", database_paths=database,
        query_paths=[Path("q0.jpg"), Path("q1.jpg")],
        database_utm=np.array([[100.0 * i, 0.0] for i in range(6)]), query_utm=np.array([[0.0, 0.0], [400.0, 0.0]]),
        database_groups=["a", "a", "a", "a", "b", "b"], query_groups=["a", "b"],
    )  # fmt: skip
    database_descriptors = np.eye(6, dtype=np.float32)
    # Global order: query 0 ranks 0, 1, 2, 3 (its group); query 1 ranks 4, 5 (a group of two).
    query_descriptors = np.array([[4, 3, 2, 1, 0, 0], [0, 0, 0, 0, 2, 1]], dtype=np.float32)
    query_descriptors /= np.linalg.norm(query_descriptors, axis=1, keepdims=True)
    seen = {}

    def reverse(query_index, candidates):
        seen[query_index] = candidates.tolist()
        return candidates[::-1]

    result = evaluate_descriptors(
        database_descriptors, query_descriptors, dataset, recall_ns=(1, 5), reranker=reverse, rerank_topk=3
    )
    assert seen == {0: [0, 1, 2], 1: [4, 5]}
    np.testing.assert_array_equal(result.predictions, [[2, 1, 0, 3, -1], [5, 4, -1, -1, -1]])
    assert result.rerank["topk"] == 3


def test_evaluate_model_returns_the_report_fields(dataset):
    model = build_model("resnet18-gem")
    model.train()
    result = evaluate_model(model, dataset, image_size=48, batch_size=4, progress=False)
    assert model.training, "evaluation must restore the model's training flag"
    report = json.loads(json.dumps(result.to_json()))
    assert REQUIRED_KEYS <= set(report)
    assert set(report["recall"]) == {"1", "5", "10", "20"}
    recalls = [report["recall"][n] for n in ("1", "5", "10", "20")]
    assert recalls == sorted(recalls), "recall@N cannot fall as N grows"
    # With 8 database images, recall@10 and @20 count every query that has a positive: 5 of 6.
    assert report["recall"]["10"] == report["recall"]["20"] == pytest.approx(100 * 5 / 6)
    assert report["descriptor_dim"] == model.descriptor_dim == 512
    assert report["num_queries"] == 6 and report["num_queries_without_positive"] == 1
    assert report["queries_without_positive"] == {"convention": "count-as-miss", "count": 1}
    assert report["ms_per_image"] > 0 and report["ms_per_query"] > 0
    assert report["model"]["fingerprint"] == model_fingerprint(model)
    assert report["extraction"]["database"]["image_size"] == [48, 48]
    assert set(report["recall_per_condition"]) == {"day", "night", "unknown"}
    assert "predictions" not in report
    # The same numbers come out of the descriptors it returns.
    again = evaluate_descriptors(result.database_descriptors, result.query_descriptors, dataset)
    assert again.recall == result.recall
    np.testing.assert_array_equal(again.predictions, result.predictions)


def test_descriptor_rows_do_not_match_the_dataset(dataset):
    database, queries = place_descriptors(dataset)
    with pytest.raises(ValueError, match="do not match"):
        evaluate_descriptors(database[:-1], queries, dataset)

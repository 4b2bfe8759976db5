"""Evaluate a place model on a dataset split: descriptors, exact search, Recall@N (METHODS.md §1).

The search may be followed by a re-ranking step applied to each query's
``rerank_topk`` best global matches: either a function
``(query_index, candidates (K,)) -> candidates re-ordered`` or an object with
``rerank(query_path, candidate_paths, global_order)`` (``retrieval.rerank``).
Recall is then reported both before and after it.

Queries without a positive count as misses unless ``queries_without_positive``
is ``exclude`` (``eval.recall``); the report records the convention and count.

A dataset with groups (``database_groups`` / ``query_groups``, e.g. the cities of
MSLS) is searched group by group: a query ranks only its own group's database
images. A dataset with explicit positives (``query_positives``) is scored on
them and ``threshold_m`` is not used; the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from tqdm import tqdm

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.eval.extract import extract_descriptors
from vprdistill.eval.recall import (
    DEFAULT_QUERIES_WITHOUT_POSITIVE,
    DEFAULT_RECALL_NS,
    QueriesWithoutPositive,
    check_convention,
    check_recall_ns,
    recall_at_n,
)
from vprdistill.models.checkpoint import model_fingerprint
from vprdistill.retrieval.search import exact_search
from vprdistill.utils.logging import get_logger

if TYPE_CHECKING:
    from vprdistill.retrieval.rerank import Reranker as RerankerObject

log = get_logger("eval.evaluate")

DEFAULT_IMAGE_SIZE = 224
DEFAULT_RERANK_TOPK = 100

#: ``(query_index, candidates)``: database indices (K,) best first → the same indices re-ordered.
RerankFunction = Callable[[int, np.ndarray], np.ndarray]
Reranker = Union[RerankFunction, "RerankerObject"]


@dataclass
class EvaluationResult:
    """What ``vprdistill eval`` reports. ``to_json()`` gives the JSON; arrays stay in memory only
    (``predictions`` (M, K), per-query ``positives``, the (N, D) and (M, D) descriptors).

    ``recall`` maps N (as a string, as in the JSON) to a percentage over all
    queries (``queries_without_positive="count-as-miss"``) or over those that
    have a positive within ``threshold_m`` (``"exclude"``).

    ``ground_truth`` is set (``"explicit positives; threshold_m not used"``) when
    the dataset gives its positives as lists; ``search_groups`` maps each group
    of a grouped search to its ``num_database`` and ``num_queries``. In a grouped
    search a row of ``predictions`` is padded with -1 where the query's group has
    fewer than K database images.
    """

    recall: dict[str, float]
    num_queries: int
    num_queries_without_positive: int
    num_database: int
    threshold_m: float
    descriptor_dim: int
    ms_per_query: float
    dataset: str
    split: str
    search_backend: str = "matmul"
    queries_without_positive: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE
    ms_per_image: float | None = None
    recall_per_condition: dict[str, dict[str, Any]] | None = None
    model: dict[str, Any] | None = None
    extraction: dict[str, Any] | None = None
    recall_before_rerank: dict[str, float] | None = None
    rerank: dict[str, Any] | None = None
    ground_truth: str | None = None
    search_groups: dict[str, dict[str, int]] | None = None
    predictions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)
    positives: list[np.ndarray] = field(default_factory=list, repr=False)
    database_descriptors: np.ndarray | None = field(default=None, repr=False)
    query_descriptors: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON-able report (no arrays); optional parts only when present."""
        record: dict[str, Any] = {
            "recall": dict(self.recall),
            "num_queries": self.num_queries,
            "num_queries_without_positive": self.num_queries_without_positive,
            "queries_without_positive": {
                "convention": self.queries_without_positive,
                "count": self.num_queries_without_positive,
            },
            "num_database": self.num_database,
            "threshold_m": self.threshold_m,
            "descriptor_dim": self.descriptor_dim,
            "ms_per_image": self.ms_per_image,
            "ms_per_query": self.ms_per_query,
            "search_backend": self.search_backend,
            "dataset": self.dataset,
            "split": self.split,
            "model": self.model,
        }
        optional = {
            "recall_per_condition": self.recall_per_condition,
            "extraction": self.extraction,
            "recall_before_rerank": self.recall_before_rerank,
            "rerank": self.rerank,
            "ground_truth": self.ground_truth,
            "search_groups": self.search_groups,
        }
        record.update({key: value for key, value in optional.items() if value is not None})
        return record


def recall_table(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int],
    num_database: int,
    convention: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> tuple[dict[str, float], int]:
    """Recall@N keyed by ``str(N)``; an N beyond a small database is recall over the whole database.

    ``predictions`` (M, K), ``positives`` per query; ``convention`` as in
    :func:`~vprdistill.eval.recall.recall_at_n`. Returns the table and the
    number of queries without a positive.
    """
    ns = check_recall_ns(ns)
    clipped = {n: min(n, num_database) for n in ns}
    values, without = recall_at_n(predictions, positives, sorted(set(clipped.values())), convention)
    return {str(n): values[clipped[n]] for n in ns}, without


def recall_by_condition(
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    conditions: Sequence[str],
    ns: Sequence[int],
    num_database: int,
    convention: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> dict[str, dict[str, Any]]:
    """Recall@N of the queries of each condition (e.g. ``night``), with their counts.

    Under ``exclude`` a condition none of whose queries has a positive has
    ``recall`` None; under ``count-as-miss`` its recall is 0.
    """
    conditions_array = np.asarray(conditions, dtype=object)
    table: dict[str, dict[str, Any]] = {}
    for condition in sorted(set(conditions)):
        members = np.flatnonzero(conditions_array == condition)
        subset = [positives[i] for i in members]
        with_positive = sum(len(p) > 0 for p in subset)
        countable = with_positive or convention == "count-as-miss"
        recall = recall_table(predictions[members], subset, ns, num_database, convention)[0] if countable else None
        table[condition] = {
            "recall": recall,
            "num_queries": len(members),
            "num_queries_without_positive": int(len(members) - with_positive),
        }
    return table


def _rerank_function(reranker: Reranker, dataset: PlaceDataset) -> RerankFunction:
    """A re-ranker object (``rerank(query_path, candidate_paths, global_order)``) as a function of indices."""
    method = getattr(reranker, "rerank", None)
    if method is not None:
        return lambda query, candidates: method(
            dataset.query_paths[query], [dataset.database_paths[i] for i in candidates], candidates
        )
    if callable(reranker):
        return reranker
    raise TypeError(f"reranker must be a function or have a rerank() method, got {type(reranker).__name__}")


def _rerank(
    predictions: np.ndarray, reranker: RerankFunction, topk: int, keep: int, progress: bool = False
) -> np.ndarray:
    """Apply ``reranker`` to each query's first ``topk`` predictions; the rest keep their global order."""
    reranked = np.empty((len(predictions), keep), dtype=np.int64)
    rows = tqdm(predictions, desc="re-ranking", unit="query", disable=not progress)
    for query_index, row in enumerate(rows):
        candidates = row[:topk]
        candidates = candidates[candidates >= 0]  # -1 pads a grouped search: no image to re-rank
        if not len(candidates):
            reranked[query_index] = row[:keep]
            continue
        order = np.asarray(reranker(query_index, candidates.copy()), dtype=np.int64).ravel()
        if not np.isin(order, candidates).all() or len(np.unique(order)) != len(order):
            raise ValueError(
                f"reranker returned for query {query_index} indices that are not distinct candidates of that query"
            )
        # A reranker may drop candidates it cannot score; they follow in their global order.
        rest = row[~np.isin(row, order)]
        reranked[query_index] = np.concatenate([order, rest])[:keep]
    return reranked


def grouped_search(
    database_descriptors: np.ndarray,
    query_descriptors: np.ndarray,
    database_groups: Sequence[str],
    query_groups: Sequence[str],
    k: int,
    backend: str = "matmul",
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Exact search of each query among the database images of its own group only.

    Args:
        database_descriptors: (N, D); ``database_groups`` their N group labels.
        query_descriptors: (M, D); ``query_groups`` their M group labels.
        k: predictions per query.
        backend: as in :func:`~vprdistill.retrieval.search.exact_search`.

    Returns:
        predictions (M, k) int64 indices into the whole database, best first, -1
        where the group has fewer than k images; and per group its
        ``num_database`` and ``num_queries``.
    """
    database_labels = np.asarray(database_groups, dtype=object)
    query_labels = np.asarray(query_groups, dtype=object)
    predictions = np.full((len(query_labels), k), -1, dtype=np.int64)
    sizes: dict[str, dict[str, int]] = {}
    for group in sorted(set(query_labels.tolist())):
        members = np.flatnonzero(query_labels == group)
        database = np.flatnonzero(database_labels == group)
        sizes[str(group)] = {"num_database": len(database), "num_queries": len(members)}
        if not len(database):
            log.warning("group %r: %d queries but no database image; they count as misses", group, len(members))
            continue
        group_k = min(k, len(database))
        _, local = exact_search(database_descriptors[database], query_descriptors[members], group_k, backend=backend)
        # Indices into the group's slice of the database back to indices into the whole database.
        predictions[members, :group_k] = database[local]
    return predictions, sizes


def evaluate_descriptors(
    database_descriptors: np.ndarray,
    query_descriptors: np.ndarray,
    dataset: PlaceDataset,
    threshold_m: float = 25.0,
    recall_ns: Sequence[int] = DEFAULT_RECALL_NS,
    reranker: Reranker | None = None,
    rerank_topk: int = DEFAULT_RERANK_TOPK,
    search_backend: str = "matmul",
    progress: bool = False,
    queries_without_positive: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> EvaluationResult:
    """Recall@N of precomputed descriptors on ``dataset``.

    Args:
        database_descriptors: (N, D) L2-normalised, row i for ``dataset.database_paths[i]``.
        query_descriptors: (M, D), row j for ``dataset.query_paths[j]``.
        dataset: gives the UTM ground truth and the query conditions.
        threshold_m: a database image within this distance of a query is a positive.
        recall_ns: the N of Recall@N.
        reranker: optional re-ranking of the ``rerank_topk`` best global matches of
            each query: ``(query_index, candidates (K,)) -> re-ordered candidates``, or
            an object with ``rerank(query_path, candidate_paths, global_order)``.
        search_backend: ``matmul`` or ``faiss`` (same results).
        progress: show a progress bar while re-ranking.
        queries_without_positive: ``count-as-miss`` (divide by all queries) or
            ``exclude`` (divide by the queries with a positive).

    Returns:
        An :class:`EvaluationResult` (``ms_per_image`` and ``model`` unset) whose
        ``predictions`` (M, K) hold the final ranking, K = min(max N, N database).
    """
    ns = check_recall_ns(recall_ns)
    convention = check_convention(queries_without_positive)
    if len(database_descriptors) != dataset.num_database or len(query_descriptors) != dataset.num_queries:
        raise ValueError(
            f"descriptors ({len(database_descriptors)} database, {len(query_descriptors)} queries) do not match "
            f"{dataset!r}"
        )
    if reranker is not None and rerank_topk < 1:
        raise ValueError(f"rerank_topk must be at least 1, got {rerank_topk}")
    num_database = dataset.num_database
    keep = min(ns[-1], num_database)
    search_k = max(keep, min(rerank_topk, num_database)) if reranker is not None else keep
    positives = dataset.positives(threshold_m)
    ground_truth = None
    if dataset.query_positives is not None:
        ground_truth = "explicit positives; threshold_m not used"
        log.info("%s: ground truth from the dataset's lists of positives; threshold_m (%g m) is not used",
                 dataset.name, threshold_m)  # fmt: skip

    start = time.perf_counter()
    search_groups = None
    if dataset.query_groups is not None:
        predictions, search_groups = grouped_search(
            database_descriptors, query_descriptors, dataset.database_groups, dataset.query_groups, search_k,
            search_backend,
        )  # fmt: skip
    else:
        _, predictions = exact_search(database_descriptors, query_descriptors, search_k, backend=search_backend)
    ms_per_query = 1e3 * (time.perf_counter() - start) / dataset.num_queries

    recall_before_rerank, rerank_info = None, None
    if reranker is not None:
        recall_before_rerank = recall_table(predictions[:, :keep], positives, ns, num_database, convention)[0]
        start = time.perf_counter()
        topk = min(rerank_topk, num_database)
        predictions = _rerank(predictions, _rerank_function(reranker, dataset), topk, keep, progress)
        rerank_info = {
            "kind": str(getattr(reranker, "kind", getattr(reranker, "__name__", type(reranker).__name__))),
            "topk": int(topk),
            "ms_per_query": 1e3 * (time.perf_counter() - start) / dataset.num_queries,
        }
        timing = getattr(reranker, "timing", None)
        if timing is not None and hasattr(timing, "as_dict"):
            rerank_info["timing"] = timing.as_dict()
    predictions = np.ascontiguousarray(predictions[:, :keep])
    recall, num_without = recall_table(predictions, positives, ns, num_database, convention)

    per_condition = None
    if dataset.query_notes is not None and any(dataset.query_notes):
        per_condition = recall_by_condition(
            predictions, positives, dataset.query_conditions(), ns, num_database, convention
        )

    return EvaluationResult(
        recall=recall, num_queries=dataset.num_queries, num_queries_without_positive=num_without,
        num_database=num_database, threshold_m=float(threshold_m), ms_per_query=ms_per_query,
        descriptor_dim=int(np.shape(database_descriptors)[1]), search_backend=search_backend,
        queries_without_positive=convention, dataset=dataset.name, split=dataset.split,
        recall_per_condition=per_condition, recall_before_rerank=recall_before_rerank, rerank=rerank_info,
        ground_truth=ground_truth, search_groups=search_groups, predictions=predictions, positives=positives,
        database_descriptors=database_descriptors, query_descriptors=query_descriptors,
    )  # fmt: skip


def default_image_size(model: torch.nn.Module) -> tuple[int, int]:
    """The input size a model's config records (``image_size``: side or ``[H, W]``), else 224 × 224."""
    size = (getattr(model, "config", None) or {}).get("image_size", DEFAULT_IMAGE_SIZE)
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    """Name, fingerprint and size of a model, for reports."""
    return {
        "name": str(getattr(model, "name", type(model).__name__)),
        "fingerprint": model_fingerprint(model),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "input_channels": int(getattr(model, "input_channels", 3)),
    }


def evaluate_model(
    model: torch.nn.Module,
    dataset: PlaceDataset,
    threshold_m: float = 25.0,
    recall_ns: Sequence[int] = DEFAULT_RECALL_NS,
    image_size: tuple[int, int] | int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    reranker: Reranker | None = None,
    rerank_topk: int = DEFAULT_RERANK_TOPK,
    progress: bool = True,
    input_kind: str | None = None,
    structural_source: str = "cityscapes",
    search_backend: str = "matmul",
    queries_without_positive: QueriesWithoutPositive = DEFAULT_QUERIES_WITHOUT_POSITIVE,
) -> EvaluationResult:
    """Compute descriptors of ``dataset`` with ``model`` and report Recall@N.

    Args:
        model: a ``PlaceModel`` (``(B, C, H, W) -> (B, D)``).
        dataset: the split to evaluate.
        image_size: ``(H, W)`` or a side; default :func:`default_image_size`.
        input_kind: ``rgb`` or ``seg``; default ``seg`` for a model with other than
            3 input channels (StructVPR seg-branch), which then reads the
            dataset's segmentation maps.
        others: see :func:`evaluate_descriptors` and :func:`~vprdistill.eval.extract.compute_descriptors`.

    Returns:
        The :class:`EvaluationResult`, with ``ms_per_image`` (network time, first
        batch excluded) and the model's name and fingerprint.
    """
    if input_kind is None:
        input_kind = "rgb" if getattr(model, "input_channels", 3) == 3 else "seg"
    if input_kind == "seg":
        if not dataset.has_segmentation:
            raise ValueError(f"model takes segmentation maps but {dataset!r} has none")
        database_paths, query_paths = dataset.database_seg_paths, dataset.query_seg_paths
    else:
        database_paths, query_paths = dataset.database_paths, dataset.query_paths
    size = default_image_size(model) if image_size is None else image_size
    options = {"image_size": size, "batch_size": batch_size, "device": device, "num_workers": num_workers,
               "input_kind": input_kind, "structural_source": structural_source, "progress": progress}  # fmt: skip
    database, database_timing = extract_descriptors(model, database_paths, desc="database", **options)
    queries, query_timing = extract_descriptors(model, query_paths, desc="queries", **options)
    result = evaluate_descriptors(
        database, queries, dataset, threshold_m, recall_ns, reranker=reranker, rerank_topk=rerank_topk,
        search_backend=search_backend, progress=progress, queries_without_positive=queries_without_positive,
    )  # fmt: skip
    timed_images = database_timing.timed_images + query_timing.timed_images
    seconds = database_timing.model_seconds + query_timing.model_seconds
    result.ms_per_image = 1e3 * seconds / timed_images if timed_images else float("nan")
    result.extraction = {
        "database": database_timing.to_json(),
        "queries": query_timing.to_json(),
        "input_kind": input_kind,
    }
    result.model = model_summary(model)
    return result

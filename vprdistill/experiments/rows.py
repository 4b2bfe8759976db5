"""One evaluated model as a row of a results table, with its per-query outcomes and intervals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from vprdistill.eval.statistics import DEFAULT_LEVEL, DEFAULT_RESAMPLES, per_query_hits, recall_intervals

if TYPE_CHECKING:
    from vprdistill.eval.evaluate import EvaluationResult

#: What a row is: a trained model, the same network at its initialisation, or a model without training.
ROW_KINDS = ("trained", "untrained", "baseline")


@dataclass
class ResultRow:
    """Figures of one model on one test split.

    ``hits`` holds, per N, one 0/1 per query (in the split's query order): what
    the bootstrap intervals and the paired comparisons of a report are computed
    from. ``recall_ci`` maps N to the ``[low, high]`` bootstrap interval of Recall@N.
    """

    name: str  # short label, e.g. "TSCM student (cross-metric KD)"
    description: str  # one sentence on what the model is
    parameters: int
    recall: dict[str, float]  # N (as a string) -> percentage
    recall_per_condition: dict[str, dict[str, float]] = field(default_factory=dict)  # condition -> N -> %
    queries_per_condition: dict[str, int] = field(default_factory=dict)
    ms_per_image: float = float("nan")
    ms_per_query: float = float("nan")
    run_dir: str = ""
    command: str = ""  # the exact command that reproduces the row
    extra: dict = field(default_factory=dict)
    kind: str = "trained"  # one of ROW_KINDS
    baseline_for: str = ""  # for an untrained row: the name of the trained row it is the starting point of
    hits: dict[str, list[int]] = field(default_factory=dict)  # N -> per-query 0/1
    recall_ci: dict[str, list[float]] = field(default_factory=dict)  # N -> [low, high], percent
    ci_level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.kind not in ROW_KINDS:
            raise ValueError(f"ResultRow {self.name!r}: kind must be one of {', '.join(ROW_KINDS)}, got {self.kind!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def condition_recall(self, condition: str, n: int | str = 1) -> float:
        """Recall@``n`` (percent) of the queries under ``condition`` (e.g. ``night``), as evaluation computed it.

        Raises:
            ValueError: the row has no figure for that condition and N (its split has no condition notes,
                or under ``exclude`` none of the condition's queries has a positive).
        """
        recall = self.recall_per_condition.get(condition, {}).get(str(n))
        if recall is None:
            raise ValueError(
                f"row {self.name!r} has no Recall@{n} under condition {condition!r} "
                f"(conditions: {', '.join(sorted(self.recall_per_condition)) or 'none'})"
            )
        return float(recall)


def row_from_result(
    result: EvaluationResult,
    name: str,
    description: str,
    parameters: int,
    run_dir: str = "",
    command: str = "",
    kind: str = "trained",
    baseline_for: str = "",
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ResultRow:
    """A :class:`ResultRow` of an evaluation, with per-query hits and bootstrap intervals of every Recall@N.

    Args:
        result: from :func:`~vprdistill.eval.evaluate.evaluate_model`: its ``predictions`` (M, K)
            and ``positives`` give the per-query outcomes under its own convention for queries
            without a positive.
        level, resamples, seed: of the bootstrap over queries (:func:`~vprdistill.eval.statistics.recall_intervals`).
    """
    # As in recall_table: an N beyond a small database means the whole database.
    keep = result.predictions.shape[1]
    clipped = {n: min(int(n), keep) for n in result.recall}
    hits = per_query_hits(
        result.predictions, result.positives, sorted(set(clipped.values())), result.queries_without_positive
    )
    per_n = {n: hits[clipped[n]] for n in result.recall}
    intervals = recall_intervals(per_n, level=level, resamples=resamples, seed=seed)
    per_condition = {c: dict(v["recall"] or {}) for c, v in (result.recall_per_condition or {}).items()}
    counts = {c: int(v["num_queries"]) for c, v in (result.recall_per_condition or {}).items()}
    return ResultRow(
        name=name,
        description=description,
        parameters=int(parameters),
        recall=dict(result.recall),
        recall_per_condition=per_condition,
        queries_per_condition=counts,
        ms_per_image=float(result.ms_per_image) if result.ms_per_image is not None else float("nan"),
        ms_per_query=float(result.ms_per_query),
        run_dir=run_dir,
        command=command,
        kind=kind,
        baseline_for=baseline_for,
        hits={n: [int(h) for h in per_n[n]] for n in per_n},
        recall_ci={n: [interval.low, interval.high] for n, interval in intervals.items()},
        ci_level=float(level),
    )

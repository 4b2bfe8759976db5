"""NetVLAD-style hard-negative mining on cached descriptors (METHODS.md §3).

For each training query: the positive used is the database image within
``positive_radius_m`` (10 m) that lies nearest to the query in descriptor
space; ``negative_samples`` (1,000) database images farther than
``negative_radius_m`` (25 m) are sampled, and the ``num_negatives`` (10)
hardest of those that violate the mining margin are kept. A query with no
violating negative teaches nothing this round and is skipped, as in NetVLAD.

The mining margin is its own setting, not the loss's. Two violation rules:

- ``margin``: a negative violates when ``d_neg < d_pos + margin``;
- ``sqrt_margin``: when ``d_neg < d_pos + sqrt(margin)``, the test of the
  pytorch-NetVlad code that the official TSCM code inherits (0.316 for a
  margin of 0.1, so more negatives are kept and fewer queries skipped).

With ``carry_negatives`` the negatives a query kept in its last mining round
join the candidates sampled for it in the next round, so a hard negative once
found is not lost to sampling (the "negative cache" of pytorch-NetVlad). A
skipped query keeps its earlier negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.train.config import VIOLATION_RULES, MiningConfig
from vprdistill.utils.logging import get_logger

logger = get_logger("mining")


@dataclass(frozen=True)
class MinedTuple:
    query: int  # index into the split's queries
    positive: int  # index into the split's database
    negatives: np.ndarray  # (k,) database indices, hardest first, 1 <= k <= num_negatives


@dataclass
class MiningStats:
    """What one mining round did."""

    queries: int = 0  # queries mined this round
    skipped_no_violation: int = 0  # of those, queries with no violating negative (no tuple)
    mean_negatives: float = 0.0  # negatives per tuple formed
    carried_negatives: int = 0  # kept negatives that came from the previous round's (carry_negatives)

    @property
    def skipped_share(self) -> float:
        """Share of the round's queries that were skipped, 0..1 (0 for an empty round)."""
        return self.skipped_no_violation / self.queries if self.queries else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "skipped": self.skipped_no_violation,
            "skipped_share": self.skipped_share,
            "mean_negatives": self.mean_negatives,
            "carried_negatives": self.carried_negatives,
        }


def violation_threshold(margin: float, rule: str) -> float:
    """What is added to ``d_pos`` in the violation test ``d_neg < d_pos + threshold``."""
    if rule == "margin":
        return float(margin)
    if rule == "sqrt_margin":
        return math.sqrt(margin)
    raise ValueError(f"mining: violation_rule must be one of {', '.join(VIOLATION_RULES)}, got {rule!r}")


class TripletMiner:
    """Mines (query, positive, hard negatives) tuples of one training split.

    Args:
        dataset: the training split.
        margin: the mining margin (stated by the caller; it is not the loss's margin).
        violation_rule: ``margin`` or ``sqrt_margin`` (see the module docstring).
        carry_negatives: add each query's last kept negatives to its next round's candidates.
    """

    def __init__(
        self,
        dataset: PlaceDataset,
        *,
        margin: float,
        positive_radius_m: float = 10.0,
        negative_radius_m: float = 25.0,
        num_negatives: int = 10,
        negative_samples: int = 1000,
        violation_rule: str = "margin",
        carry_negatives: bool = False,
    ) -> None:
        if num_negatives < 1 or negative_samples < num_negatives:
            raise ValueError(
                f"mining: need 1 <= num_negatives <= negative_samples, got {num_negatives} and {negative_samples}"
            )
        if margin < 0:
            raise ValueError(f"mining: margin must be >= 0, got {margin}")
        self.dataset = dataset
        self.num_negatives = num_negatives
        self.negative_samples = negative_samples
        self.margin = margin
        self.violation_rule = violation_rule
        self.threshold = violation_threshold(margin, violation_rule)
        self.carry_negatives = carry_negatives
        # query index -> database indices it kept in its last round (only with carry_negatives)
        self.carried: dict[int, np.ndarray] = {}
        if dataset.query_positives is not None or not dataset.has_positions:
            raise DatasetFormatError(
                f"mining: {dataset.name} ({dataset.split}) gives its ground truth as lists of positives; mining needs "
                f"UTM positions (positives within {positive_radius_m} m, negatives beyond {negative_radius_m} m)"
            )
        self.positives = dataset.positives(positive_radius_m)
        self.non_negatives = dataset.positives(negative_radius_m)
        # Only queries with at least one positive can form a tuple; the others are
        # counted so a user sees how much of the split is usable.
        self.trainable_queries = np.array([q for q, p in enumerate(self.positives) if len(p) > 0], dtype=np.int64)
        if len(self.trainable_queries) == 0:
            raise ValueError(
                f"dataset {dataset.root} split '{dataset.split}': no query has a database image within "
                f"{positive_radius_m} m, so no training tuple can be formed"
            )
        excluded = dataset.num_queries - len(self.trainable_queries)
        if excluded:
            logger.info(
                "mining: %d of %d training queries have no positive within %.1f m and are not used",
                excluded,
                dataset.num_queries,
                positive_radius_m,
            )

    def describe(self) -> str:
        """One line for the log: the violation test and whether negatives are carried."""
        rule = "d_neg < d_pos + margin" if self.violation_rule == "margin" else "d_neg < d_pos + sqrt(margin)"
        return (
            f"mining: margin {self.margin:g}, rule {self.violation_rule} ({rule}, threshold {self.threshold:.4g}), "
            f"negatives {'carried to' if self.carry_negatives else 'not carried to'} the next round"
        )

    def negative_pool(self, query: int) -> np.ndarray:
        """Database indices farther than the negative radius from ``query``: (P,)."""
        return np.setdiff1d(np.arange(self.dataset.num_database), self.non_negatives[query])  # sorted

    def mine(
        self,
        query_indices: np.ndarray,
        query_descriptors: np.ndarray,
        database_descriptors: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[list[MinedTuple], MiningStats]:
        """Mine tuples for ``query_indices``.

        Args:
            query_indices: (Q,) indices into the split's queries.
            query_descriptors: (M, D) descriptors of all the split's queries (rows of
                queries not in ``query_indices`` are not read).
            database_descriptors: (N, D) descriptors of the split's database.
            rng: the source of the negative sampling, seeded by the caller. The draws
                do not depend on ``carry_negatives``, so runs with and without it
                sample the same candidates.
        """
        tuples: list[MinedTuple] = []
        skipped = 0
        carried_used = 0
        for query in query_indices:
            query = int(query)
            positives = self.positives[query]
            if len(positives) == 0:
                continue
            anchor = query_descriptors[query]
            positive_distances = np.linalg.norm(database_descriptors[positives] - anchor, axis=1)
            best = int(np.argmin(positive_distances))
            positive_distance = positive_distances[best]

            pool = self.negative_pool(query)
            if len(pool) == 0:
                skipped += 1
                continue
            sampled = rng.choice(pool, size=min(self.negative_samples, len(pool)), replace=False)
            previous = self.carried.get(query) if self.carry_negatives else None
            if previous is not None:
                sampled = np.union1d(sampled, previous)  # sorted and without repeats
            negative_distances = np.linalg.norm(database_descriptors[sampled] - anchor, axis=1)
            violating = negative_distances < positive_distance + self.threshold
            if not violating.any():
                skipped += 1  # a skipped query keeps the negatives it carried
                continue
            candidates = sampled[violating]
            order = np.argsort(negative_distances[violating], kind="stable")[: self.num_negatives]
            negatives = candidates[order].astype(np.int64)
            if self.carry_negatives:
                if previous is not None:
                    carried_used += int(np.isin(negatives, previous).sum())
                self.carried[query] = negatives
            tuples.append(MinedTuple(query, int(positives[best]), negatives))
        mean_negatives = float(np.mean([len(t.negatives) for t in tuples])) if tuples else 0.0
        return tuples, MiningStats(len(query_indices), skipped, mean_negatives, carried_used)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The carried negatives as a ``(M, num_negatives)`` int64 tensor, -1 where empty (for resuming)."""
        table = torch.full((self.dataset.num_queries, self.num_negatives), -1, dtype=torch.int64)
        for query, negatives in self.carried.items():
            table[query, : len(negatives)] = torch.from_numpy(negatives)
        return {"carried_negatives": table}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the carried negatives saved by :meth:`state_dict`."""
        table = state["carried_negatives"]
        expected = (self.dataset.num_queries, self.num_negatives)
        if tuple(table.shape) != expected:
            raise ValueError(
                f"mining state: carried negatives of shape {tuple(table.shape)} do not fit this split and "
                f"num_negatives {expected}"
            )
        rows = enumerate(table.numpy())
        self.carried = {query: row[row >= 0].astype(np.int64) for query, row in rows if (row >= 0).any()}


def miner_from_config(mining: MiningConfig, dataset: PlaceDataset) -> TripletMiner:
    """The miner a training config asks for (``negative_samples`` capped at the database size)."""
    if mining.margin is None:
        raise ValueError("mining.margin is not set; state the mining margin (it is not taken from the loss)")
    options = ("positive_radius_m", "negative_radius_m", "num_negatives", "violation_rule", "carry_negatives")
    return TripletMiner(
        dataset,
        margin=mining.margin,
        negative_samples=min(mining.negative_samples, dataset.num_database),
        **{key: getattr(mining, key) for key in options},
    )


def log_mining_round(epoch: int, round_index: int, stats: MiningStats) -> None:
    """Log a round's skipped share: a share near 1 means the margin is met and little is learnt."""
    logger.info(
        "epoch %d, mining round %d: %d of %d queries skipped (%.1f%%, no violating negative), "
        "%.1f negatives per tuple%s",
        epoch,
        round_index,
        stats.skipped_no_violation,
        stats.queries,
        100 * stats.skipped_share,
        stats.mean_negatives,
        f", {stats.carried_negatives} carried negatives kept" if stats.carried_negatives else "",
    )

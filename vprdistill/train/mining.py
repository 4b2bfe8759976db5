"""NetVLAD-style hard-negative mining on cached descriptors (METHODS.md §3).

For each training query: the positive used is the database image within
``positive_radius_m`` (10 m) that lies nearest to the query in descriptor
space; ``negative_samples`` (1,000) database images farther than
``negative_radius_m`` (25 m) are sampled, and the ``num_negatives`` (10)
hardest of those that violate the margin (d_neg < d_pos + margin) are kept.
A query with no violating negative teaches nothing this round and is skipped,
as in NetVLAD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.utils.logging import get_logger

logger = get_logger("mining")


@dataclass(frozen=True)
class MinedTuple:
    query: int  # index into the split's queries
    positive: int  # index into the split's database
    negatives: np.ndarray  # (k,) database indices, hardest first, 1 <= k <= num_negatives


@dataclass
class MiningStats:
    queries: int = 0
    skipped_no_violation: int = 0
    mean_negatives: float = 0.0


class TripletMiner:
    """Mines (query, positive, hard negatives) tuples of one training split."""

    def __init__(
        self,
        dataset: PlaceDataset,
        positive_radius_m: float = 10.0,
        negative_radius_m: float = 25.0,
        num_negatives: int = 10,
        negative_samples: int = 1000,
        margin: float = 0.1,
    ) -> None:
        if num_negatives < 1 or negative_samples < num_negatives:
            raise ValueError(
                f"mining: need 1 <= num_negatives <= negative_samples, got {num_negatives} and {negative_samples}"
            )
        self.dataset = dataset
        self.num_negatives = num_negatives
        self.negative_samples = negative_samples
        self.margin = margin
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
            logger.info("mining: %d of %d training queries have no positive within %.1f m and are not used",
                        excluded, dataset.num_queries, positive_radius_m)

    def negative_pool(self, query: int) -> np.ndarray:
        """Database indices farther than the negative radius from ``query``: (P,)."""
        mask = np.ones(self.dataset.num_database, dtype=bool)
        mask[self.non_negatives[query]] = False
        return np.flatnonzero(mask)

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
            rng: the source of the negative sampling, seeded by the caller.
        """
        tuples: list[MinedTuple] = []
        skipped = 0
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
            negative_distances = np.linalg.norm(database_descriptors[sampled] - anchor, axis=1)
            violating = negative_distances < positive_distance + self.margin
            if not violating.any():
                skipped += 1
                continue
            candidates = sampled[violating]
            order = np.argsort(negative_distances[violating], kind="stable")[: self.num_negatives]
            tuples.append(MinedTuple(query, int(positives[best]), candidates[order].astype(np.int64)))
        mean_negatives = float(np.mean([len(t.negatives) for t in tuples])) if tuples else 0.0
        return tuples, MiningStats(len(query_indices), skipped, mean_negatives)

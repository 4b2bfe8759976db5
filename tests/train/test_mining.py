import numpy as np
import pytest

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.train.mining import TripletMiner


def _random_dataset(rng: np.random.Generator, num_database: int = 400, num_queries: int = 60) -> PlaceDataset:
    database_utm = rng.uniform(0, 400, size=(num_database, 2))
    # Queries near random database images, plus a few far outside the map.
    anchors = rng.integers(0, num_database, size=num_queries - 5)
    query_utm = np.concatenate([database_utm[anchors] + rng.normal(0, 3, size=(num_queries - 5, 2)),
                                rng.uniform(5000, 6000, size=(5, 2))])
    return PlaceDataset(
        name="random", root="/nonexistent", split="train",
        database_paths=[f"db{i}.jpg" for i in range(num_database)],
        query_paths=[f"q{i}.jpg" for i in range(num_queries)],
        database_utm=database_utm, query_utm=query_utm,
    )


def _normalised(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mined_positives_within_10m_negatives_beyond_25m_and_violating():
    rng = np.random.default_rng(0)
    dataset = _random_dataset(rng)
    miner = TripletMiner(dataset, positive_radius_m=10, negative_radius_m=25, num_negatives=10,
                         negative_samples=200, margin=0.1)
    query_desc = _normalised(rng, (dataset.num_queries, 16))
    database_desc = _normalised(rng, (dataset.num_database, 16))
    tuples, stats = miner.mine(miner.trainable_queries, query_desc, database_desc, np.random.default_rng(1))
    assert tuples, "random descriptors always leave some margin violations"
    assert stats.queries == len(miner.trainable_queries)
    # The five queries far outside the map have no positive and are never trained on.
    assert set(range(dataset.num_queries - 5, dataset.num_queries)).isdisjoint(miner.trainable_queries.tolist())
    for item in tuples:
        query_pos = dataset.query_utm[item.query]
        assert np.linalg.norm(dataset.database_utm[item.positive] - query_pos) <= 10
        negative_metres = np.linalg.norm(dataset.database_utm[item.negatives] - query_pos, axis=1)
        assert (negative_metres > 25).all()
        assert 1 <= len(item.negatives) <= 10
        anchor = query_desc[item.query]
        # The positive is the geographic positive nearest in descriptor space.
        positives = dataset.positives(10)[item.query]
        d_positives = np.linalg.norm(database_desc[positives] - anchor, axis=1)
        d_pos = np.linalg.norm(database_desc[item.positive] - anchor)
        assert d_pos == pytest.approx(d_positives.min())
        d_neg = np.linalg.norm(database_desc[item.negatives] - anchor, axis=1)
        assert (d_neg < d_pos + 0.1).all(), "every kept negative violates the margin"
        assert (np.diff(d_neg) >= 0).all(), "hardest negatives first"


def test_query_without_violation_is_skipped():
    rng = np.random.default_rng(2)
    dataset = _random_dataset(rng, num_database=100, num_queries=20)
    miner = TripletMiner(dataset, negative_samples=50, num_negatives=5, margin=0.1)
    database_desc = _normalised(rng, (dataset.num_database, 8))
    # Each query descriptor equals its positive's: d_pos = 0; negatives are far unless identical.
    query_desc = np.zeros((dataset.num_queries, 8), dtype=np.float32)
    for q, positives in enumerate(dataset.positives(10)):
        if len(positives):
            query_desc[q] = database_desc[positives[0]]
    database_desc_far = database_desc.copy()
    tuples, stats = miner.mine(miner.trainable_queries, query_desc, database_desc_far, np.random.default_rng(0))
    for item in tuples:
        d_neg = np.linalg.norm(database_desc[item.negatives] - query_desc[item.query], axis=1)
        assert (d_neg < 0.1).all()
    assert stats.skipped_no_violation + len(tuples) == len(miner.trainable_queries)
    assert stats.skipped_no_violation > 0


def test_mining_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    dataset = _random_dataset(rng)
    miner = TripletMiner(dataset, negative_samples=100)
    q = _normalised(rng, (dataset.num_queries, 8))
    d = _normalised(rng, (dataset.num_database, 8))
    first, _ = miner.mine(miner.trainable_queries, q, d, np.random.default_rng(7))
    second, _ = miner.mine(miner.trainable_queries, q, d, np.random.default_rng(7))
    assert [(t.query, t.positive, t.negatives.tolist()) for t in first] == \
           [(t.query, t.positive, t.negatives.tolist()) for t in second]


def test_split_without_positives_is_a_clear_error():
    dataset = PlaceDataset(name="far", root="/x", split="train", database_paths=["a.jpg"], query_paths=["b.jpg"],
                           database_utm=np.zeros((1, 2)), query_utm=np.full((1, 2), 1000.0))
    with pytest.raises(ValueError, match="no query has a database image within"):
        TripletMiner(dataset, negative_samples=1, num_negatives=1)

import math

import numpy as np
import pytest
import torch

from vprdistill.data.place_dataset import DatasetFormatError, PlaceDataset
from vprdistill.train.config import load_config
from vprdistill.train.methods import TrainingMethod
from vprdistill.train.mining import MiningStats, TripletMiner


def _random_dataset(rng: np.random.Generator, num_database: int = 400, num_queries: int = 60) -> PlaceDataset:
    database_utm = rng.uniform(0, 400, size=(num_database, 2))
    # Queries near random database images, plus a few far outside the map.
    anchors = rng.integers(0, num_database, size=num_queries - 5)
    query_utm = np.concatenate(
        [database_utm[anchors] + rng.normal(0, 3, size=(num_queries - 5, 2)), rng.uniform(5000, 6000, size=(5, 2))]
    )
    return PlaceDataset(
        name="random",
        root="/nonexistent",
        split="train",
        database_paths=[f"db{i}.jpg" for i in range(num_database)],
        query_paths=[f"q{i}.jpg" for i in range(num_queries)],
        database_utm=database_utm,
        query_utm=query_utm,
    )


def _normalised(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mined_positives_within_10m_negatives_beyond_25m_and_violating():
    rng = np.random.default_rng(0)
    dataset = _random_dataset(rng)
    miner = TripletMiner(
        dataset, positive_radius_m=10, negative_radius_m=25, num_negatives=10, negative_samples=200, margin=0.1
    )
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
    miner = TripletMiner(dataset, negative_samples=100, num_negatives=5, margin=0.1)
    database_desc = _normalised(rng, (dataset.num_database, 8))
    trainable = [int(q) for q in miner.trainable_queries]
    assert len(trainable) >= 4
    positives = dataset.positives(10)
    # Half of the queries sit on their positive (d_pos = 0, nothing violates the margin); the
    # other half sit on a database image more than 25 m away (a negative at distance 0).
    query_desc = np.zeros((dataset.num_queries, 8), dtype=np.float32)
    satisfied, violated = set(trainable[::2]), set(trainable[1::2])
    for q in trainable:
        if q in satisfied:
            query_desc[q] = database_desc[positives[q][0]]
        else:
            metres = np.linalg.norm(dataset.database_utm - dataset.query_utm[q], axis=1)
            query_desc[q] = database_desc[int(np.argmax(metres))]
    tuples, stats = miner.mine(miner.trainable_queries, query_desc, database_desc, np.random.default_rng(0))
    assert {item.query for item in tuples} == violated
    assert stats.skipped_no_violation == len(satisfied)
    for item in tuples:
        d_neg = np.linalg.norm(database_desc[item.negatives] - query_desc[item.query], axis=1)
        d_pos = np.linalg.norm(database_desc[item.positive] - query_desc[item.query])
        assert (d_neg < d_pos + 0.1).all()


def test_mining_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    dataset = _random_dataset(rng)
    miner = TripletMiner(dataset, negative_samples=100, margin=0.1)
    q = _normalised(rng, (dataset.num_queries, 8))
    d = _normalised(rng, (dataset.num_database, 8))
    first, _ = miner.mine(miner.trainable_queries, q, d, np.random.default_rng(7))
    second, _ = miner.mine(miner.trainable_queries, q, d, np.random.default_rng(7))
    assert [(t.query, t.positive, t.negatives.tolist()) for t in first] == [
        (t.query, t.positive, t.negatives.tolist()) for t in second
    ]


def test_split_without_positives_is_a_clear_error():
    dataset = PlaceDataset(
        name="far",
        root="/x",
        split="train",
        database_paths=["a.jpg"],
        query_paths=["b.jpg"],
        database_utm=np.zeros((1, 2)),
        query_utm=np.full((1, 2), 1000.0),
    )
    with pytest.raises(ValueError, match="no query has a database image within"):
        TripletMiner(dataset, negative_samples=1, num_negatives=1, margin=0.1)


def _line_dataset(database_east: list[float]) -> PlaceDataset:
    """One query at east 0 and database images along a line (metres east)."""
    database_utm = np.array([[e, 0.0] for e in database_east])
    return PlaceDataset(
        name="line",
        root="/nonexistent",
        split="train",
        database_paths=[f"db{i}.jpg" for i in range(len(database_east))],
        query_paths=["q0.jpg"],
        database_utm=database_utm,
        query_utm=np.zeros((1, 2)),
    )


def test_sqrt_margin_rule_keeps_a_negative_that_the_margin_rule_drops():
    # Database: one positive 5 m away, three negatives 100+ m away. Descriptor distances
    # to the query: positive 0.5, negatives 0.55, 0.7 and 0.9.
    dataset = _line_dataset([5.0, 100.0, 200.0, 300.0])
    query = np.zeros((1, 2), dtype=np.float32)
    database = np.array([[0.5, 0.0], [0.55, 0.0], [0.0, 0.7], [0.9, 0.0]], dtype=np.float32)
    # Hand-computed thresholds: d_pos + 0.1 = 0.6 and d_pos + sqrt(0.1) = 0.5 + 0.31623 = 0.81623.
    assert 0.5 + 0.1 < 0.7 < 0.5 + math.sqrt(0.1) < 0.9
    kept = {}
    for rule in ("margin", "sqrt_margin"):
        miner = TripletMiner(dataset, margin=0.1, violation_rule=rule, negative_samples=3, num_negatives=3)
        assert miner.threshold == pytest.approx({"margin": 0.1, "sqrt_margin": 0.316227766}[rule])
        tuples, stats = miner.mine(np.array([0]), query, database, np.random.default_rng(0))
        assert len(tuples) == 1 and tuples[0].positive == 0 and stats.skipped_no_violation == 0
        kept[rule] = tuples[0].negatives.tolist()
    assert kept == {"margin": [1], "sqrt_margin": [1, 2]}


def test_sqrt_margin_rule_skips_fewer_queries():
    # The negative at distance 0.7 violates only under the sqrt rule: with it alone, the
    # margin rule skips the query and the sqrt rule does not.
    dataset = _line_dataset([5.0, 100.0])
    query = np.zeros((1, 2), dtype=np.float32)
    database = np.array([[0.5, 0.0], [0.7, 0.0]], dtype=np.float32)
    margin_miner = TripletMiner(dataset, margin=0.1, violation_rule="margin", negative_samples=1, num_negatives=1)
    sqrt_miner = TripletMiner(dataset, margin=0.1, violation_rule="sqrt_margin", negative_samples=1, num_negatives=1)
    _, margin_stats = margin_miner.mine(np.array([0]), query, database, np.random.default_rng(0))
    _, sqrt_stats = sqrt_miner.mine(np.array([0]), query, database, np.random.default_rng(0))
    assert (margin_stats.skipped_no_violation, margin_stats.skipped_share) == (1, 1.0)
    assert (sqrt_stats.skipped_no_violation, sqrt_stats.skipped_share) == (0, 0.0)


def test_unknown_violation_rule_is_refused():
    with pytest.raises(ValueError, match="violation_rule"):
        TripletMiner(
            _line_dataset([5.0, 100.0]), margin=0.1, violation_rule="cube_root", negative_samples=1, num_negatives=1
        )


def _carry_setup():
    # One query, its positive at 5 m, 60 negatives beyond 25 m at descriptor distances 1.00, 1.01, ...
    # (all violate: d_pos = 1.0, margin 1.0). Only 5 of them are sampled per round.
    dataset = _line_dataset([5.0] + [100.0 + 10 * i for i in range(60)])
    query = np.zeros((1, 1), dtype=np.float32)
    distances = np.concatenate([[1.0], 1.0 + 0.01 * np.random.default_rng(5).permutation(60)])
    return dataset, query, distances.astype(np.float32)[:, None]


def _expected_negatives(sampled: np.ndarray, database: np.ndarray, k: int) -> list[int]:
    """Independent re-computation: the k nearest (float64) of the candidates."""
    distances = np.abs(database[sampled, 0].astype(np.float64))
    return sampled[np.argsort(distances, kind="stable")[:k]].tolist()


def test_carried_negatives_join_the_next_rounds_candidates():
    dataset, query, database = _carry_setup()
    pool = np.arange(1, 61)
    carry = TripletMiner(dataset, margin=1.0, negative_samples=5, num_negatives=3, carry_negatives=True)
    plain = TripletMiner(dataset, margin=1.0, negative_samples=5, num_negatives=3, carry_negatives=False)
    first, first_stats = carry.mine(np.array([0]), query, database, np.random.default_rng(11))
    sampled_1 = np.random.default_rng(11).choice(pool, size=5, replace=False)
    assert first[0].negatives.tolist() == _expected_negatives(sampled_1, database, 3)
    assert first_stats.carried_negatives == 0

    second, second_stats = carry.mine(np.array([0]), query, database, np.random.default_rng(12))
    without, _ = plain.mine(np.array([0]), query, database, np.random.default_rng(12))
    sampled_2 = np.random.default_rng(12).choice(pool, size=5, replace=False)
    candidates = np.union1d(sampled_2, first[0].negatives)
    assert second[0].negatives.tolist() == _expected_negatives(candidates, database, 3)
    assert without[0].negatives.tolist() == _expected_negatives(sampled_2, database, 3)
    assert second[0].negatives.tolist() != without[0].negatives.tolist(), "the carry must change this round"
    carried = set(second[0].negatives.tolist()) & set(first[0].negatives.tolist())
    assert carried and second_stats.carried_negatives == len(carried)


def test_a_skipped_query_keeps_its_carried_negatives_and_the_carry_survives_a_state_round_trip():
    dataset, query, database = _carry_setup()
    miner = TripletMiner(dataset, margin=1.0, negative_samples=5, num_negatives=3, carry_negatives=True)
    first, _ = miner.mine(np.array([0]), query, database, np.random.default_rng(1))
    far = database.copy()
    far[1:] = 50.0  # no negative violates now
    skipped, stats = miner.mine(np.array([0]), query, far, np.random.default_rng(2))
    assert skipped == [] and stats.skipped_share == 1.0
    assert miner.carried[0].tolist() == first[0].negatives.tolist()

    state = miner.state_dict()
    assert state["carried_negatives"].shape == (1, 3) and state["carried_negatives"].dtype == torch.int64
    restored = TripletMiner(dataset, margin=1.0, negative_samples=5, num_negatives=3, carry_negatives=True)
    restored.load_state_dict(state)
    a, _ = miner.mine(np.array([0]), query, database, np.random.default_rng(3))
    b, _ = restored.mine(np.array([0]), query, database, np.random.default_rng(3))
    assert a[0].negatives.tolist() == b[0].negatives.tolist()
    with pytest.raises(ValueError, match="do not fit"):
        TripletMiner(dataset, margin=1.0, negative_samples=5, num_negatives=2).load_state_dict(state)


def test_skipped_share_is_skipped_over_mined_queries():
    assert MiningStats(queries=8, skipped_no_violation=2).skipped_share == 0.25
    assert MiningStats().skipped_share == 0.0
    assert MiningStats(queries=4, skipped_no_violation=1).as_dict()["skipped_share"] == 0.25


def test_mining_margin_must_be_stated_and_is_not_the_loss_margin(tmp_path):
    (tmp_path / "no-margin.yaml").write_text("name: x\ndata: {dataset: somewhere}\n")
    with pytest.raises(ValueError, match="mining.margin is not set"):
        load_config(tmp_path / "no-margin.yaml")
    with pytest.raises(ValueError, match="mining.violation_rule"):
        load_config("baseline/synth-resnet18-gem", ["mining.violation_rule=cubic"])
    with pytest.raises(ValueError, match="mining.carry_negatives"):
        load_config("baseline/synth-resnet18-gem", ["mining.carry_negatives=often"])
    # The loss keeps its own margin whatever mining.margin says, unless its spec states one.
    config = load_config("baseline/synth-resnet18-gem", ["mining.margin=0.3"])
    assert config.mining.margin == 0.3
    assert TrainingMethod(config, torch.device("cpu")).student_loss.margin == 0.1
    config = load_config(
        "baseline/synth-resnet18-gem",
        ["mining.margin=0.3", "method={name: triplet, loss: {name: triplet, margin: 0.2}}"],
    )
    assert TrainingMethod(config, torch.device("cpu")).student_loss.margin == 0.2


def test_mining_refuses_a_dataset_whose_positives_are_lists():
    """Lists of positives (VPR-Bench, gsv-cities .npy) carry no radii: mining at 10 m and 25 m would be the same lists."""
    listed = PlaceDataset(
        name="listed",
        root="/nonexistent",
        split="train",
        database_paths=[f"db{i}.jpg" for i in range(4)],
        query_paths=["q0.jpg", "q1.jpg"],
        database_utm=np.zeros((4, 2)),
        query_utm=np.zeros((2, 2)),
        query_positives=[np.array([0]), np.array([2, 3])],
        has_positions=False,
    )
    with pytest.raises(DatasetFormatError, match="lists of positives"):
        TripletMiner(listed, margin=0.1, negative_samples=2, num_negatives=1)

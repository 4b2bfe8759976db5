"""Place batches: P distinct places × K views, every place once per pass, seeded."""

import numpy as np
import pytest

from vprdistill.train.place_batches import place_batches


def _members(views: list[int]) -> list[np.ndarray]:
    start = np.cumsum([0, *views])
    return [np.arange(start[i], start[i + 1]) for i in range(len(views))]


def test_batches_hold_distinct_places_with_k_distinct_views_each():
    members = _members([5, 4, 6, 4, 5, 4, 7, 4])
    label_of = {int(i): place for place, m in enumerate(members) for i in m}
    batches = place_batches(members, places_per_batch=4, views_per_place=3, steps=2, rng=np.random.default_rng(0))
    seen = []
    for batch in batches:
        assert batch.shape == (12,)
        places = [label_of[int(i)] for i in batch]
        blocks = [places[k : k + 3] for k in range(0, 12, 3)]
        assert all(len(set(b)) == 1 for b in blocks)  # views of one place adjacent
        assert len({b[0] for b in blocks}) == 4  # four different places
        assert all(len(set(batch[k : k + 3].tolist())) == 3 for k in range(0, 12, 3))  # distinct views
        seen += [b[0] for b in blocks]
    assert sorted(seen) == list(range(8))  # two batches of 4 cover the 8 places once


def test_a_place_with_fewer_views_than_k_repeats_views_and_the_epoch_wraps():
    members = _members([2, 2, 2])
    batches = place_batches(members, places_per_batch=2, views_per_place=3, steps=3, rng=np.random.default_rng(1))
    assert len(batches) == 3
    assert all(len(set(b[:3].tolist())) <= 2 for b in batches)


def test_same_generator_seed_gives_the_same_batches():
    members = _members([4] * 10)
    first = place_batches(members, 3, 2, 5, np.random.default_rng([7, 1]))
    again = place_batches(members, 3, 2, 5, np.random.default_rng([7, 1]))
    other = place_batches(members, 3, 2, 5, np.random.default_rng([7, 2]))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_more_places_per_batch_than_places_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="places_per_batch"):
        place_batches(_members([3, 3]), places_per_batch=3, views_per_place=2, steps=1, rng=np.random.default_rng(0))

import numpy as np
import torch

from vprdistill.train.mining import MinedTuple
from vprdistill.train.tuples import collate_tuples, gather_cached_descriptors, split_tuple_descriptors


def test_flat_batch_splits_back_into_padded_tuples():
    # Each "image" is a 1x1x1 tensor holding a unique id, so the split can be checked exactly.
    tuples = [MinedTuple(0, 5, np.array([7, 8, 9])), MinedTuple(1, 6, np.array([3]))]
    samples = []

    def image(value: float) -> torch.Tensor:
        return torch.full((1, 1, 1), float(value))

    for item in tuples:
        samples.append(
            (item, image(100 + item.query), image(200 + item.positive), [image(300 + n) for n in item.negatives])
        )
    batch = collate_tuples(samples)
    assert batch.images.shape[0] == 2 + 2 + 4
    descriptors = batch.images.flatten(1)  # (T, 1): the identity "model"
    split = split_tuple_descriptors(descriptors, batch)
    assert split.anchor.flatten().tolist() == [100, 101]
    assert split.positive.flatten().tolist() == [205, 206]
    assert split.negatives[0].flatten().tolist() == [307, 308, 309]
    assert split.negatives[1, 0].item() == 303
    assert batch.negative_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.negative_index.tolist() == [[7, 8, 9], [3, -1, -1]]

    # Cached lookups give the same layout from (M, D) and (N, D) tables.
    queries = torch.arange(2, dtype=torch.float32).unsqueeze(1) + 100
    database = torch.arange(10, dtype=torch.float32).unsqueeze(1) + 300
    cached = gather_cached_descriptors(queries, database, batch)
    assert cached.anchor.flatten().tolist() == [100, 101]
    assert cached.positive.flatten().tolist() == [305, 306]
    assert cached.negatives[0].flatten().tolist() == [307, 308, 309]
    assert cached.negatives[1].flatten().tolist() == [303, 0, 0]

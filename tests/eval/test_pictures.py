"""Prediction pictures: one PNG per chosen query, green frames for right predictions and red for wrong."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vprdistill.data.readers import open_dataset
from vprdistill.eval.pictures import FRAME, GAP, RIGHT_COLOUR, WRONG_COLOUR, pick_queries, save_prediction_pictures


def test_queries_are_picked_evenly_and_deterministically():
    np.testing.assert_array_equal(pick_queries(10, 3), [0, 4, 9])
    picked = pick_queries(100, 5)
    assert picked.tolist() == pick_queries(100, 5).tolist()
    assert picked[0] == 0 and picked[-1] == 99 and len(picked) == 5
    assert pick_queries(3, 10).tolist() == [0, 1, 2]
    assert pick_queries(5, 0).size == 0


def test_frames_show_right_and_wrong(tiny_places, tmp_path):
    dataset = open_dataset(tiny_places, split="test")
    positives = dataset.positives(25.0)
    # Predictions by true distance: rank 1 is the nearest place, ranks 2-3 are 100 m or more away.
    predictions = []
    for query in range(dataset.num_queries):
        order = np.argsort(dataset.distances_to_database(query))
        predictions.append(order[:3])
    predictions = np.array(predictions)
    thumb = 40
    written = save_prediction_pictures(
        dataset, predictions, positives, tmp_path / "pictures", 2, topk=3, thumb_size=thumb
    )
    assert len(written) == 2 and all(p.suffix == ".png" and p.is_file() for p in written)
    tile = thumb + 2 * FRAME
    checked = set()
    for path in written:
        query = int(path.stem.split("_")[1])
        picture = np.asarray(Image.open(path).convert("RGB"))
        assert picture.shape[1] == GAP + 4 * (tile + GAP)

        def frame_colour(position: int, picture: np.ndarray = picture) -> tuple[int, ...]:
            left = GAP + position * (tile + GAP)
            return tuple(int(v) for v in picture[GAP + 1, left + 1])

        # The nearest place is right when the query has a positive; the others are 100 m off, so wrong.
        expected_first = RIGHT_COLOUR if len(positives[query]) else WRONG_COLOUR
        assert frame_colour(1) == expected_first
        assert frame_colour(2) == WRONG_COLOUR and frame_colour(3) == WRONG_COLOUR
        checked.add(expected_first)
    assert checked == {RIGHT_COLOUR, WRONG_COLOUR}, "the two pictures should show a right and a wrong first match"

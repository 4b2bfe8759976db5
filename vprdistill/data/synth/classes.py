"""Semantic classes of SynthCity maps, numbered as Cityscapes trainIds.

The same numbering as a Cityscapes-trained segmenter means a rendered map and a
map predicted on a real photo can be fed to the same structural model.
"""

from __future__ import annotations

import numpy as np

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 3, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = 8, 9, 10, 11, 12, 13, 14, 15
TRAIN, MOTORCYCLE, BICYCLE = 16, 17, 18
VOID = 255

# (trainId, name, Cityscapes colour)
CITYSCAPES_CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (ROAD, "road", (128, 64, 128)),
    (SIDEWALK, "sidewalk", (244, 35, 232)),
    (BUILDING, "building", (70, 70, 70)),
    (WALL, "wall", (102, 102, 156)),
    (FENCE, "fence", (190, 153, 153)),
    (POLE, "pole", (153, 153, 153)),
    (TRAFFIC_LIGHT, "traffic light", (250, 170, 30)),
    (TRAFFIC_SIGN, "traffic sign", (220, 220, 0)),
    (VEGETATION, "vegetation", (107, 142, 35)),
    (TERRAIN, "terrain", (152, 251, 152)),
    (SKY, "sky", (70, 130, 180)),
    (PERSON, "person", (220, 20, 60)),
    (RIDER, "rider", (255, 0, 0)),
    (CAR, "car", (0, 0, 142)),
    (TRUCK, "truck", (0, 0, 70)),
    (BUS, "bus", (0, 60, 100)),
    (TRAIN, "train", (0, 80, 100)),
    (MOTORCYCLE, "motorcycle", (0, 0, 230)),
    (BICYCLE, "bicycle", (119, 11, 32)),
    (VOID, "void", (0, 0, 0)),
)

# The subset the renderer draws (no riders, trains or two-wheelers); every id in a SynthCity map is one of these.
RENDERED_CLASS_IDS: tuple[int, ...] = tuple(
    cid for cid, _, _ in CITYSCAPES_CLASSES if cid not in (RIDER, TRAIN, MOTORCYCLE, BICYCLE, VOID)
)


def class_list() -> list[dict]:
    """The class table written to ``dataset.json``: ``[{id, name, color}, ...]``."""
    return [{"id": cid, "name": name, "color": list(color)} for cid, name, color in CITYSCAPES_CLASSES]


def palette() -> np.ndarray:
    """Colour of every possible id: ``(256, 3) uint8`` (unknown ids are black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for cid, _, color in CITYSCAPES_CLASSES:
        table[cid] = color
    return table


def colorize(segmentation: np.ndarray) -> np.ndarray:
    """Class map ``(H, W) uint8`` → Cityscapes colours ``(H, W, 3) uint8``."""
    return palette()[segmentation]

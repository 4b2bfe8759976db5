"""Class names of segmentation models, mapped to Cityscapes trainIds.

The dataset segmenter writes its maps in Cityscapes trainIds (0 road ... 18
bicycle, 255 void), the label set SynthCity writes too. A model trained on
another label set (ADE20K, Mapillary Vistas, ...) is mapped through its class
*names*; the synonym table below is our choice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from vprdistill.utils.logging import get_logger

# The segmenter `vprdistill segment` runs when none is named (read by the CLI's help, so kept here, away from torch).
DEFAULT_SEGMENTATION_MODEL = "nvidia/segformer-b0-finetuned-cityscapes-1024-1024"

log = get_logger("data.segmentation_labels")

VOID_ID = 255
LABEL_SPACE = "cityscapes_train_id"

# Cityscapes trainIds 0..18, in id order.
CITYSCAPES_TRAIN_ID_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Our choice: label names of other label sets (ADE20K, Mapillary Vistas, the
# full Cityscapes labelIds) that mean a Cityscapes trainId class.
_NAME_SYNONYMS: dict[str, tuple[str, ...]] = {
    "road": ("street", "route", "highway", "bike lane", "service lane", "crosswalk plain", "crosswalk zebra",
             "lane marking", "lane marking general", "lane marking crosswalk", "manhole", "pothole", "catch basin"),
    "sidewalk": ("pavement", "pedestrian area", "curb", "curb cut", "footpath"),
    "building": ("edifice", "house", "skyscraper"),
    "wall": (),
    "fence": ("fencing", "guard rail", "railing", "rail"),
    "pole": ("utility pole", "streetlight", "street light", "street lamp", "lamppost"),
    "traffic light": ("traffic signal", "stoplight"),
    "traffic sign": ("signboard", "sign", "traffic sign front", "traffic sign back"),
    "vegetation": ("tree", "plant", "flora", "plant life", "palm", "palm tree", "bush", "hedge"),
    "terrain": ("grass", "earth", "ground", "soil", "sand", "field", "dirt track"),
    "sky": (),
    "person": ("pedestrian", "individual", "people"),
    "rider": ("bicyclist", "motorcyclist", "other rider"),
    "car": ("auto", "automobile", "motorcar", "van", "taxi"),
    "truck": ("motortruck", "lorry"),
    "bus": ("autobus", "coach"),
    "train": ("tram", "on rails", "railway car"),
    "motorcycle": ("motorbike", "minibike"),
    "bicycle": ("bike", "cycle"),
}  # fmt: skip

_NAME_TO_TRAIN_ID: dict[str, int] = {}
for _train_id, _name in enumerate(CITYSCAPES_TRAIN_ID_NAMES):
    for _alias in (_name, *_NAME_SYNONYMS[_name]):
        _NAME_TO_TRAIN_ID[_alias] = _train_id


def _normalise(name: str) -> str:
    return " ".join(re.sub(r"[_\-()]", " ", name.lower()).split())


def label_to_cityscapes_train_id(label: str) -> int:
    """The Cityscapes trainId (0..18) a class name means, or 255 when none.

    Names are compared in lower case with ``_ - ( )`` read as spaces; a name
    listing alternatives (``"car, auto, automobile"``) matches if one does, and
    a hierarchical Mapillary name (``"object--vehicle--car"``) if one of its
    levels does, the most specific first.
    """
    levels = [level for level in str(label).split("--") if level.strip()]
    candidates = [str(label), *reversed(levels)]
    for candidate in candidates:
        for alias in [candidate, *re.split(r"[;,]", candidate)]:
            train_id = _NAME_TO_TRAIN_ID.get(_normalise(alias))
            if train_id is not None:
                return train_id
    return VOID_ID


def label_mapping(id2label: Mapping[int | str, str]) -> np.ndarray:
    """A lookup table ``(num_labels,)`` uint8: model class id -> Cityscapes trainId (255 when unknown).

    Raises ``ValueError`` when no class name maps at all (e.g. a
    config with generic ``LABEL_0`` names), since every map would be void.
    """
    if not id2label:
        raise ValueError("the segmentation model has no id2label: its class names are needed")
    labels = {int(i): name for i, name in id2label.items()}
    ids = sorted(labels)
    table = np.full(ids[-1] + 1, VOID_ID, dtype=np.uint8)
    for model_id, label in labels.items():
        table[model_id] = label_to_cityscapes_train_id(label)
    if (table == VOID_ID).all():
        examples = ", ".join(str(labels[i]) for i in ids[:5])
        raise ValueError(
            f"none of the segmentation model's {len(ids)} class names ({examples}, ...) is a Cityscapes class; "
            "use a model whose config names its classes"
        )
    unknown = [labels[i] for i in ids if table[i] == VOID_ID]
    if unknown:
        log.info("model classes with no Cityscapes counterpart are written as %d: %s", VOID_ID, ", ".join(unknown))
    return table

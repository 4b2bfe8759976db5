"""The structural class map a seg-branch was trained with, stored with its weights.

A seg-branch reads one-hot maps of structural classes; which source id becomes
which channel is part of what it learned. The map is therefore written into
the checkpoint's JSON (field ``structural_classes``) and used again wherever
the model is loaded (evaluation, a frozen StructVPR teacher, indexing), so a
later edit of ``configs/structural_classes.yaml`` cannot silently feed a
trained model permuted channels.

In memory, a model carries its map as the attribute ``structural_class_map``.
"""

from __future__ import annotations

from typing import Any

from vprdistill.data.structural import IGNORE_ID, StructuralClassMap

MODEL_ATTRIBUTE = "structural_class_map"
CHECKPOINT_FIELD = "structural_classes"


def class_map_to_dict(class_map: StructuralClassMap) -> dict[str, Any]:
    """A JSON-able form: the source label set, the class names in channel order, and ``ids``
    (source id → class name) for every id that is not ignored."""
    ids = {
        str(source_id): class_map.names[int(index)]
        for source_id, index in enumerate(class_map.lookup)
        if int(index) != IGNORE_ID
    }
    return {"source": class_map.source, "names": list(class_map.names), "ids": ids}


def class_map_from_dict(data: Any, where: str) -> StructuralClassMap:
    """Rebuild a map written by :func:`class_map_to_dict`; errors name ``where`` and the bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be an object with 'source', 'names' and 'ids', got {type(data).__name__}")  # noqa: TRY004
    if not isinstance(data.get("source"), str):
        raise ValueError(f"{where}.source: must be the name of the source label set")
    return StructuralClassMap.from_ids(
        data.get("names"), data.get("ids"), data["source"], f"{where}.names:", f"{where}.ids"
    )


def class_map_for_model(model: Any, structural_source: str = "cityscapes") -> StructuralClassMap:
    """The class map a seg model's inputs are made with.

    A model that carries its training map (loaded from a checkpoint that stores
    one, or being trained) uses it when ``structural_source`` is the map's own
    source. Another source must map ids to the same classes in the same channel
    order (a seg-branch reads channels, not names), else ``ValueError``. A
    model without a stored map uses the package's mapping for ``structural_source``.
    """
    stored = getattr(model, MODEL_ATTRIBUTE, None)
    if stored is None:
        return StructuralClassMap.from_yaml(source=structural_source)
    if stored.source == structural_source:
        return stored
    requested = StructuralClassMap.from_yaml(source=structural_source)
    if requested.names != stored.names:
        raise ValueError(
            f"model {getattr(model, 'name', '')!r} was trained on structural classes {', '.join(stored.names)} "
            f"(source {stored.source!r}); source {structural_source!r} gives {', '.join(requested.names)}"
        )
    return requested

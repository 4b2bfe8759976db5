"""Structural classes: merging scene classes into the StructVPR seg-branch input.

Our specification (METHODS.md §5): segmentation class ids are mapped to C
merged structural classes (default 10: road, sidewalk, building, wall/fence,
pole/sign, vegetation, terrain, sky, vehicle, person) and fed as a one-hot map.
The classes and mappings live in ``vprdistill/configs/structural_classes.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:
    import torch

DEFAULT_STRUCTURAL_CLASSES = Path(__file__).resolve().parent.parent / "configs" / "structural_classes.yaml"
IGNORE_ID = 255


@dataclass(frozen=True, eq=False)
class StructuralClassMap:
    """A mapping from a source label set's class ids (0..255) to structural classes.

    ``lookup`` is a read-only ``(256,)`` uint8 table: ``lookup[source_id]`` is the
    structural class index, or 255 for ignored ids.
    """

    names: tuple[str, ...]
    lookup: np.ndarray
    source: str

    def __post_init__(self) -> None:
        lookup = np.asarray(self.lookup)
        if lookup.shape != (256,) or lookup.dtype != np.uint8:
            raise ValueError(f"lookup must be a (256,) uint8 table, got {lookup.dtype} of shape {lookup.shape}")
        bad = (lookup >= len(self.names)) & (lookup != IGNORE_ID)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"lookup maps id {first} to class index {lookup[first]}, beyond {len(self.names) - 1}")
        lookup = lookup.copy()
        lookup.flags.writeable = False
        object.__setattr__(self, "lookup", lookup)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, source: str = "cityscapes") -> StructuralClassMap:
        """The class-id mapping ``sources.<source>`` of the YAML file (default: the package's)."""
        path, config = _read_config(path)
        sources = config.get("sources") or {}
        if source not in sources:
            raise ValueError(f"{path}: no mapping for source {source!r} (sources: {', '.join(sources) or 'none'})")
        return cls.from_ids(
            config.get("classes"), sources[source] or {}, source, f"{path}: 'classes'", f"{path}: sources.{source}"
        )

    @classmethod
    def from_ids(cls, names: Any, ids: Any, source: str, names_where: str, ids_where: str) -> StructuralClassMap:
        """The map ``ids`` (source class id → class name) onto ``names``; errors name ``names_where``/``ids_where``."""
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{names_where} must be a non-empty list of class names")
        if len(set(names)) != len(names) or len(names) >= IGNORE_ID:
            raise ValueError(f"{names_where} must be distinct and fewer than {IGNORE_ID}")
        if not isinstance(ids, dict):
            raise ValueError(f"{ids_where}: must map source class ids to class names")  # noqa: TRY004
        lookup = np.full(256, IGNORE_ID, dtype=np.uint8)
        for key, class_name in ids.items():
            try:
                source_id = int(key)
            except (TypeError, ValueError):
                source_id = -1
            if not 0 <= source_id < IGNORE_ID:
                raise ValueError(f"{ids_where}.{key}: class ids must be integers in 0..{IGNORE_ID - 1}")
            if class_name not in names:
                raise ValueError(
                    f"{ids_where}.{key}: unknown structural class {class_name!r} (classes: {', '.join(names)})"
                )
            lookup[source_id] = names.index(class_name)
        return cls(tuple(names), lookup, source)

    @classmethod
    def identity(cls, num_classes: int) -> StructuralClassMap:
        """For maps that already hold structural indices 0..C-1 (anything else is ignored)."""
        if not 0 < num_classes < IGNORE_ID:
            raise ValueError(f"num_classes must be in 1..{IGNORE_ID - 1}, got {num_classes}")
        lookup = np.full(256, IGNORE_ID, dtype=np.uint8)
        lookup[:num_classes] = np.arange(num_classes, dtype=np.uint8)
        return cls(tuple(f"class_{i}" for i in range(num_classes)), lookup, "identity")

    def map_ids(self, ids: np.ndarray) -> np.ndarray:
        """Source class ids (any shape, values 0..255) → structural class indices, 255 where ignored (uint8)."""
        return self.lookup[as_class_ids(ids)]

    def one_hot(self, ids: np.ndarray) -> torch.Tensor:
        """Source class-id map ``(H, W)`` → one-hot ``(C, H, W)`` float32; ignored pixels are all zeros."""
        import torch

        classes = self.lookup[as_class_ids(ids, map_2d=True)]
        one_hot = classes[None, :, :] == np.arange(self.num_classes, dtype=np.uint8)[:, None, None]
        return torch.from_numpy(one_hot.astype(np.float32))


def as_class_ids(ids: Any, map_2d: bool = False) -> np.ndarray:
    """Class ids (any shape, or a map ``(H, W)`` with ``map_2d``) as uint8; ``ValueError`` outside 0..255."""
    ids = np.asarray(ids)
    if map_2d and ids.ndim != 2:
        raise ValueError(f"expected a class-id map of shape (H, W), got shape {ids.shape}")
    if ids.dtype != np.uint8:
        if ids.dtype.kind not in "iu":
            raise ValueError(f"class ids must be integers in 0..255, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"class ids must lie in 0..255, got {ids.min()}..{ids.max()}")
        ids = ids.astype(np.uint8)
    return ids


def _read_config(path: str | Path | None) -> tuple[Path, dict[str, Any]]:
    path = DEFAULT_STRUCTURAL_CLASSES if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structural class file {path} does not exist")
    with path.open(encoding="utf-8") as file:
        config = yaml.safe_load(file)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with 'classes' and 'sources'")
    return path, config

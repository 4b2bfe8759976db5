"""What the trained model reads from disk: RGB images, or one-hot structural maps (StructVPR seg-branch)."""

from __future__ import annotations

from pathlib import Path

import torch

from vprdistill.data.images import load_image, load_segmentation
from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.structural import StructuralClassMap
from vprdistill.data.transforms import build_segmentation_transform, build_transform
from vprdistill.train.config import DataConfig


def input_paths(
    dataset: PlaceDataset, input_kind: str, needed_by: str = "data.input 'seg'"
) -> tuple[list[Path], list[Path]]:
    """(query paths, database paths) of the files a model of ``input_kind`` reads.

    ``needed_by`` names who asks for segmentation maps, for the error when the split has none.
    """
    if input_kind == "rgb":
        return list(dataset.query_paths), list(dataset.database_paths)
    if not dataset.has_segmentation:
        raise ValueError(
            f"{needed_by} needs segmentation maps, but dataset {dataset.root} split '{dataset.split}' has none "
            "(generate them with `vprdistill segment`)"
        )
    return list(dataset.query_seg_paths), list(dataset.database_seg_paths)


class InputLoader:
    """Path → input tensor (C, H, W) for training tuples, augmented when configured and ``train``.

    A class rather than a closure so data-loader workers can pickle it.
    """

    def __init__(self, data: DataConfig, train: bool) -> None:
        image_size = tuple(data.image_size)
        if data.input == "rgb":
            self.load, self.transform = (
                load_image,
                build_transform(image_size, augment=data.augment and train, augment_ops=data.augment_ops),
            )
        else:
            class_map = StructuralClassMap.from_yaml(source=data.structural_source)
            self.load, self.transform = load_segmentation, build_segmentation_transform(image_size, class_map=class_map)

    def __call__(self, path: Path) -> torch.Tensor:
        return self.transform(self.load(path))

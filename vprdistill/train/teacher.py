"""A frozen teacher for distillation, with a descriptor cache keyed to its weights and the image set.

When the student sees no augmentation, the teacher's descriptor of every
training image never changes, so it is computed once and read back for each
step instead of re-running a network that can be ten times the student's
size. The cache file's name is a hash of the teacher's fingerprint (config and
weights), the input kind, the image size and the ordered list of image files
with their sizes and modification times: change any of them and the cache is
rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.checkpoint import load_model, model_fingerprint
from vprdistill.train.inputs import input_paths
from vprdistill.utils.atomic import atomic_path
from vprdistill.utils.logging import get_logger

logger = get_logger("teacher")


def default_cache_dir() -> Path:
    """``$VPRDISTILL_CACHE`` or ``~/.cache/vprdistill``: teacher caches are shared between student runs."""
    return Path(os.environ.get("VPRDISTILL_CACHE", Path.home() / ".cache" / "vprdistill"))


def image_set_key(paths: Sequence[Path]) -> str:
    """A hash of the ordered image files, their sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class FrozenTeacher:
    """A trained model loaded from a run folder or checkpoint, frozen and kept in eval mode.

    Args:
        source: run folder or checkpoint of the teacher.
        input_kind: ``rgb`` (appearance teacher, TSCM) or ``seg`` (structural seg-branch, StructVPR).
        image_size: (H, W) the teacher sees.
    """

    def __init__(
        self,
        source: str | Path,
        input_kind: str,
        image_size: Sequence[int],
        device: torch.device,
        batch_size: int = 32,
        num_workers: int = 0,
        structural_source: str = "cityscapes",
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if input_kind not in ("rgb", "seg"):
            raise ValueError(f"teacher {source}: input must be rgb or seg, got {input_kind!r}")
        self.source = Path(source)
        self.model = load_model(self.source, device=device)
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.input_kind = input_kind
        self.image_size = tuple(int(s) for s in image_size)
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.structural_source = structural_source
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.progress = progress
        self.fingerprint = model_fingerprint(self.model)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """A frozen teacher ignores requests to leave eval mode (no dropout, no BatchNorm updates)."""
        self.model.eval()
        return self

    def _paths(self, dataset: PlaceDataset) -> tuple[list[Path], list[Path]]:
        return input_paths(dataset, self.input_kind, needed_by=f"teacher {self.source} (input: seg)")

    def cached_descriptors(self, dataset: PlaceDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher descriptors of the split's queries (M, D) and database (N, D), from cache when valid."""
        query_paths, database_paths = self._paths(dataset)
        tensors = self.cached_path_descriptors({"queries": query_paths, "database": database_paths})
        return tensors["queries"], tensors["database"]

    def cached_place_descriptors(self, paths: Sequence[Path], seg_paths: Sequence[Path] | None) -> torch.Tensor:
        """Teacher descriptors (N, D) of a place set's images (or their maps, for a seg teacher), from cache when valid."""
        if self.input_kind == "seg":
            if seg_paths is None:
                raise ValueError(
                    f"teacher {self.source} (input: seg) needs segmentation maps of the place images, but the "
                    "place set has none (Segmentation/<city>/<image stem>.png)"
                )
            paths = seg_paths
        return self.cached_path_descriptors({"places": list(paths)})["places"]

    def cached_path_descriptors(self, groups: dict[str, Sequence[Path]]) -> dict[str, torch.Tensor]:
        """Teacher descriptors of each named list of files, ``name -> (N_name, D)``, from cache when valid."""
        key_source = json.dumps(
            {
                "teacher": self.fingerprint,
                "input": self.input_kind,
                "image_size": self.image_size,
                "structural_source": self.structural_source if self.input_kind == "seg" else None,
                **{name: image_set_key(paths) for name, paths in groups.items()},
            },
            sort_keys=True,
        )
        key = hashlib.sha256(key_source.encode()).hexdigest()[:32]
        cache_file = self.cache_dir / "teacher_descriptors" / f"{key}.safetensors"
        if cache_file.is_file():
            try:
                tensors = load_file(str(cache_file))
                # A cache whose rows do not match the image lists would silently pair
                # descriptors with the wrong images; it is rebuilt like a damaged one.
                for name, paths in groups.items():
                    rows = tensors[name]
                    if rows.dim() != 2 or rows.shape[0] != len(paths):
                        raise ValueError(f"{name} are {tuple(rows.shape)} for {len(paths)} images")
                logger.info("teacher %s: descriptors read from cache %s", self.source, cache_file)
                return {name: tensors[name] for name in groups}
            except (SafetensorError, OSError, KeyError, ValueError) as error:  # a damaged cache is rebuilt
                logger.warning("teacher cache %s is unreadable (%s); recomputing", cache_file, error)
        tensors = {name: self.describe_paths(paths, f"teacher: {name}") for name, paths in groups.items()}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp:
            save_file(tensors, str(tmp), metadata={"key": key_source})
        return tensors

    def describe_paths(self, paths: Sequence[Path], desc: str = "teacher") -> torch.Tensor:
        """Descriptors (N, D) of image (or segmentation-map) files."""
        array = compute_descriptors(
            self.model,
            paths,
            image_size=self.image_size,
            batch_size=self.batch_size,
            device=self.device,
            num_workers=self.num_workers,
            input_kind=self.input_kind,
            structural_source=self.structural_source,
            progress=self.progress,
            desc=desc,
        )
        return torch.from_numpy(array).float()

    @torch.no_grad()
    def describe(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors (B, D) of a batch of already-transformed inputs (B, C, H, W)."""
        return self.model(images.to(self.device))

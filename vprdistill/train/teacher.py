"""A frozen teacher for distillation, with a descriptor cache keyed to its weights and the image set.

When the student sees no augmentation, the teacher's descriptor of every
training image never changes, so it is computed once and read back for each
step instead of re-running a network that can be ten times the student's
size. The cache file's name is a hash of the teacher's fingerprint (config and
weights), the input kind, the image size and the ordered list of image files
with their sizes and modification times: change any of them and the cache is
rebuilt.

A teacher from outside the package (``torch_hub``, ``hf_hub`` or ``onnx``,
:mod:`vprdistill.models.external`) reads images prepared its own way: the data
pipeline yields ImageNet-normalised tensors at the teacher's ``image_size``,
and :class:`ExternalTeacherInput` turns them into the teacher's own
normalisation (``x·std_in/std + (mean_in − mean)/std``, the same as
normalising the raw ``[0, 1]`` pixels with the teacher's mean and std) before
the network sees them. Its mean and std are part of the cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.checkpoint import load_model, model_fingerprint
from vprdistill.models.external import ExternalModel, load_external_model
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


def normalization(values: Sequence[float] | None, default: Sequence[float], name: str) -> tuple[float, float, float]:
    """Three per-channel numbers (R, G, B) from a spec, ``default`` when None; std must be positive."""
    if values is None:
        values = default
    try:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
            raise TypeError("not three values")
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"teacher {name}: expected three numbers (R, G, B), got {values!r}") from error
    if name == "std" and min(numbers) <= 0:
        raise ValueError(f"teacher std: every value must be > 0, got {list(numbers)}")
    return numbers  # type: ignore[return-value]


class _Frozen:
    """Holds a network outside the module tree of :class:`ExternalTeacherInput` (a plain object, not a child).

    Descriptor extraction on the CPU rearranges a model's weights for its own
    architectures (channels-last for the call, ``models/inference.py``); an external
    network is run exactly as published, so the rearrangement never reaches it. A copy
    of the wrapper shares the frozen network instead of duplicating a multi-gigabyte teacher.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __deepcopy__(self, memo: dict) -> _Frozen:
        return self  # frozen: sharing it is what an inference copy of a frozen model means


class ExternalTeacherInput(nn.Module):
    """ImageNet-normalised images → the external teacher's own normalisation → its descriptors.

    ``forward``: ``(B, 3, H, W)`` float, normalised with ``IMAGENET_MEAN``/``IMAGENET_STD``
    (what the data pipeline yields) → ``(B, D)`` L2-normalised descriptors on the input's device.
    """

    def __init__(self, model: ExternalModel, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        super().__init__()
        self._model = _Frozen(model)
        self.mean, self.std = tuple(mean), tuple(std)
        self.descriptor_dim = model.descriptor_dim
        self.fingerprint = model.fingerprint
        self.device = device
        source_mean, source_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        target_mean, target_std = torch.tensor(self.mean), torch.tensor(self.std)
        # raw = x·σ_in + μ_in and y = (raw − μ)/σ, folded into one affine map per channel.
        self.register_buffer("scale", (source_std / target_std).view(1, 3, 1, 1))
        self.register_buffer("shift", ((source_mean - target_mean) / target_std).view(1, 3, 1, 1))

    @property
    def external(self) -> ExternalModel:
        return self._model.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"teacher {self.external.description}: expected RGB images (B, 3, H, W), got {tuple(images.shape)}"
            )
        prepared = images.float() * self.scale.to(images.device) + self.shift.to(images.device)
        return self.external(prepared.to(self.device)).to(images.device)


class FrozenTeacher:
    """A frozen teacher kept in eval mode: a run folder or checkpoint, or an external model.

    Args:
        source: run folder or checkpoint of the teacher (a label only when ``external`` is given).
        input_kind: ``rgb`` (appearance teacher, TSCM) or ``seg`` (structural seg-branch, StructVPR).
        image_size: (H, W) the teacher sees.
        external: an external model (:func:`vprdistill.models.external.load_external_model`),
            used instead of loading ``source``; RGB only.
        mean, std: the external model's input normalisation (default ImageNet's).
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
        *,
        external: ExternalModel | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if input_kind not in ("rgb", "seg"):
            raise ValueError(f"teacher {source}: input must be rgb or seg, got {input_kind!r}")
        self.image_size = tuple(int(s) for s in image_size)
        self.preprocessing: dict[str, Any] | None = None
        if external is None:
            if mean is not None or std is not None:
                raise ValueError(
                    f"teacher {source}: mean and std apply to external teachers; a run-folder teacher reads "
                    "the ImageNet-normalised images it was trained on"
                )
            self.source = Path(source)
            self.model = load_model(self.source, device=device)
            self.fingerprint = model_fingerprint(self.model)
            self.descriptor_dim = int(getattr(self.model, "descriptor_dim", 0)) or None
        else:
            if input_kind != "rgb":
                raise ValueError(f"teacher {external.description}: an external teacher reads RGB images (input: rgb)")
            self.source = external.description
            mean = normalization(mean, IMAGENET_MEAN, "mean")
            std = normalization(std, IMAGENET_STD, "std")
            if external.descriptor_dim is None:
                external.probe(self.image_size, device)
            self.model = ExternalTeacherInput(external, mean, std, device)
            self.fingerprint = external.fingerprint
            self.descriptor_dim = external.descriptor_dim
            # The same weights fed differently give other descriptors: the normalisation keys the cache.
            self.preprocessing = {"mean": list(mean), "std": list(std)}
        self.model.eval().requires_grad_(False)
        self.input_kind = input_kind
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.structural_source = structural_source
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.progress = progress

    @classmethod
    def from_external(
        cls,
        kind: str,
        location: str | Path,
        image_size: Sequence[int],
        device: torch.device,
        *,
        kwargs: dict[str, Any] | None = None,
        output: int | str | None = None,
        **options: Any,
    ) -> FrozenTeacher:
        """An external teacher (``torch_hub``, ``hf_hub`` or ``onnx``) at ``image_size`` with its mean and std.

        ``options`` are :class:`FrozenTeacher`'s (``mean``, ``std``, ``batch_size``, ``num_workers``, ``cache_dir``,
        ``progress``). The model is run once on two images of ``image_size`` to check its output and learn its D.
        """
        model = load_external_model(kind, location, kwargs=kwargs, output=output, device=device)
        return cls(model.description, "rgb", image_size, device, external=model, **options)

    def cached_descriptors(self, dataset: PlaceDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher descriptors of the split's queries (M, D) and database (N, D), from cache when valid."""
        query_paths, database_paths = input_paths(dataset, self.input_kind, f"teacher {self.source} (input: seg)")
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
                # Absent for run-folder teachers, so their existing caches stay valid.
                **({"preprocessing": self.preprocessing} if self.preprocessing is not None else {}),
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

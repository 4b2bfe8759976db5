"""Frozen descriptor models from outside the package: torch.hub entries, timm models, ONNX files.

A distillation teacher is usually a run folder of this package. Public place
models (MegaLoc, SALAD, BoQ, DINOv2) are published instead as a ``torch.hub``
entry, a timm model on a model hub, or can be exported to ONNX; this module
loads each as an :class:`ExternalModel`: a frozen, eval-mode callable
``(B, 3, H, W) -> (B, D)`` whose input is already normalised with *that*
model's mean and std, whose output is L2-normalised, and which carries a
fingerprint that changes whenever the weights (or the way they were loaded) do.

Three kinds (``kind`` of :func:`load_external_model`):

- ``torch_hub``: ``"owner/repo:entry"`` (a GitHub repository, optionally
  ``owner/repo:ref:entry``) or ``"DIR:entry"`` where DIR is a folder holding a
  ``hubconf.py`` (loaded with ``source="local"``). ``kwargs`` go to the entry.
  Naming a repository runs its ``hubconf.py``: only name code you trust.
- ``hf_hub``: a timm model, ``timm.create_model("hf-hub:<repo_id>", pretrained=True, **kwargs)``,
  or a local folder with timm's ``config.json`` (``"architecture"``, ``"num_classes"``,
  ``"pretrained_cfg"``, optional ``"model_args"``) and ``model.safetensors``.
- ``onnx``: an ONNX file run with ONNX Runtime (CUDA provider when the device is
  CUDA and the provider is installed, else CPU), input ``(B, 3, H, W)`` float32.

A model that returns a tuple or list (BoQ returns ``(descriptor, attentions)``)
gives its first element unless ``output`` names another index (or key, for a dict).

Only weights are read from files this module opens (safetensors, or ONNX graphs);
nothing is unpickled here. What a hub entry loads is up to its own code.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vprdistill.models.checkpoint import weights_digest
from vprdistill.utils.extras import require
from vprdistill.utils.hashing import file_sha256

EXTERNAL_KINDS = ("torch_hub", "hf_hub", "onnx")


class ExternalModel(nn.Module):
    """A frozen external network: ``(B, 3, H, W)`` teacher-normalised images → L2-normalised ``(B, D)``.

    Attributes:
        kind: ``torch_hub``, ``hf_hub`` or ``onnx``.
        location: what the spec named (repo and entry, repo id or folder, file).
        fingerprint: a short hex hash that changes with the weights, the loading
            arguments and the output selection.
        descriptor_dim: D, known once :meth:`probe` has run (None before).
        output: which element of a tuple/list/dict output is the descriptor (None: the first).
    """

    def __init__(
        self, net: nn.Module, kind: str, location: str, fingerprint: str, output: int | str | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.kind = kind
        self.location = location
        self.fingerprint = fingerprint
        self.output = output
        self.descriptor_dim: int | None = None
        self.net.eval()
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)

    @property
    def description(self) -> str:
        return f"{self.kind} {self.location}"

    def train(self, mode: bool = True) -> ExternalModel:
        """A frozen teacher stays in eval mode (no dropout, no BatchNorm updates) whatever it is asked."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(B, D)`` float32, unit L2 norm, of ``images`` ``(B, 3, H, W)`` float32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher {self.description}: expected images (B, 3, H, W), got {tuple(images.shape)}")
        raw = self.net(images)
        descriptors = self._select(raw)
        if (
            not isinstance(descriptors, torch.Tensor)
            or descriptors.dim() != 2
            or descriptors.shape[0] != images.shape[0]
        ):
            shape = tuple(descriptors.shape) if isinstance(descriptors, torch.Tensor) else type(descriptors).__name__
            raise ValueError(
                f"teacher {self.description}: returned {shape} for a batch of {tuple(images.shape)}; expected "
                f"descriptors ({images.shape[0]}, D) (choose another element of its output with 'output')"
            )
        # Normalised here whether or not the model does it: every loss and search assumes unit vectors.
        return F.normalize(descriptors.float(), p=2, dim=1)

    def _select(self, raw: Any) -> Any:
        if isinstance(raw, torch.Tensor):
            if self.output not in (None, 0):
                raise ValueError(f"teacher {self.description}: output {self.output!r} given, but it returns one tensor")
            return raw
        key = 0 if self.output is None else self.output
        try:
            if isinstance(raw, Mapping):
                return raw[key] if self.output is not None else next(iter(raw.values()))
            if isinstance(raw, (tuple, list)):
                return raw[int(key)]
        except (KeyError, IndexError, ValueError, TypeError, StopIteration) as error:
            raise ValueError(
                f"teacher {self.description}: cannot take output {key!r} of its {type(raw).__name__} output ({error})"
            ) from error
        raise ValueError(f"teacher {self.description}: returned a {type(raw).__name__}, expected a tensor (B, D)")

    @torch.no_grad()
    def probe(self, image_size: Sequence[int], device: torch.device | str = "cpu") -> int:
        """Run two random images of ``image_size`` (H, W) once; check the output and set ``descriptor_dim``.

        Raises:
            ValueError: the model fails on that size or does not return ``(2, D)`` descriptors.
        """
        height, width = (int(s) for s in image_size)
        generator = torch.Generator().manual_seed(0)
        images = torch.randn((2, 3, height, width), generator=generator).to(device)
        try:
            descriptors = self(images)
        except Exception as error:  # any failure of foreign code at the configured size is a config error here
            own = isinstance(error, ValueError)
            if own and str(error).startswith(("teacher ", "onnx teacher ")):  # already says what is wrong
                raise
            raise ValueError(
                f"teacher {self.description}: failed on a batch of 2 images of {height}x{width} "
                f"(check image_size): {'' if own else type(error).__name__ + ': '}{error}"
            ) from error
        self.descriptor_dim = int(descriptors.shape[1])
        return self.descriptor_dim


def load_external_model(
    kind: str,
    location: str | Path,
    *,
    kwargs: Mapping[str, Any] | None = None,
    output: int | str | None = None,
    device: torch.device | str = "cpu",
) -> ExternalModel:
    """Load a frozen external descriptor model (see the module docstring for the kinds).

    Args:
        kind: ``torch_hub``, ``hf_hub`` or ``onnx``.
        location: ``"owner/repo:entry"`` / ``"DIR:entry"``; a timm repo id or folder; an ONNX file.
        kwargs: keyword arguments of the hub entry or of ``timm.create_model`` (not for ``onnx``).
        output: which element of a tuple/list/dict output is the descriptor (None: the first).
        device: where the network runs.

    Raises:
        FileNotFoundError: a named folder or file that does not exist, or a folder without
            ``hubconf.py`` / ``config.json`` / ``model.safetensors``.
        ValueError: an unknown kind, a malformed location, a hub entry that does not exist,
            or an ONNX graph that does not take one ``(B, 3, H, W)`` float input.
    """
    if kind not in EXTERNAL_KINDS:
        raise ValueError(f"external teacher: kind must be one of {', '.join(EXTERNAL_KINDS)}, got {kind!r}")
    kwargs = dict(kwargs or {})
    device = torch.device(device)
    if kind == "torch_hub":
        return _load_torch_hub(str(location), kwargs, output, device)
    if kind == "hf_hub":
        return _load_hf_hub(str(location), kwargs, output, device)
    if kwargs:
        raise ValueError(f"onnx teacher {location}: 'kwargs' apply to torch_hub and hf_hub teachers only")
    return _load_onnx(Path(location), output, device)


def _fingerprint(identity: Mapping[str, Any], weights: str) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    digest.update(weights.encode())
    return digest.hexdigest()[:16]


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or "\\" in text


def _load_torch_hub(
    location: str, kwargs: dict[str, Any], output: int | str | None, device: torch.device
) -> ExternalModel:
    repo, separator, entry = location.rpartition(":")
    if not separator or not repo or not entry:
        raise ValueError(f"torch_hub teacher {location!r}: expected 'owner/repo:entry' or 'DIR:entry'")
    folder = Path(repo).expanduser()
    if folder.is_dir():
        source, repo = "local", str(folder.resolve())
        hubconf = folder / "hubconf.py"
        if not hubconf.is_file():
            raise FileNotFoundError(f"torch_hub teacher {location!r}: {folder} holds no hubconf.py")
        # The folder's own code defines the function; its path does not (a moved folder keeps its cache).
        identity_repo = {"hubconf_sha256": file_sha256(hubconf)}
    elif _looks_like_path(repo):
        raise FileNotFoundError(f"torch_hub teacher {location!r}: no such directory {folder}")
    else:
        source, identity_repo = "github", {"repo": repo}
    try:
        net = torch.hub.load(repo, entry, source=source, trust_repo=True, verbose=False, **kwargs)
    except RuntimeError as error:
        if f"Cannot find callable {entry} in hubconf" not in str(error):
            raise
        if source == "local":  # the public functions of hubconf.py, read from its syntax tree (nothing is executed)
            tree = ast.parse((Path(repo) / "hubconf.py").read_text())
            offered = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
        else:
            offered = torch.hub.list(repo, trust_repo=True, verbose=False)
        raise ValueError(
            f"torch_hub teacher {location!r}: no entry {entry!r}; the repository offers {', '.join(sorted(offered)) or 'none'}"
        ) from error
    if not isinstance(net, nn.Module):
        # A config error (the spec names the wrong entry), reported like the others.
        raise ValueError(  # noqa: TRY004
            f"torch_hub teacher {location!r}: the entry returned a {type(net).__name__}, expected a torch.nn.Module"
        )
    identity = {"kind": "torch_hub", **identity_repo, "entry": entry, "kwargs": kwargs, "output": output}
    return _frozen(net.to(device), "torch_hub", location, identity, output)


def _frozen(
    net: nn.Module, kind: str, location: str, identity: dict[str, Any], output: int | str | None
) -> ExternalModel:
    """The :class:`ExternalModel` of a loaded network, fingerprinted by ``identity`` and its weights."""
    return ExternalModel(net, kind, location, _fingerprint(identity, weights_digest(net.state_dict())), output)


def _load_hf_hub(
    location: str, kwargs: dict[str, Any], output: int | str | None, device: torch.device
) -> ExternalModel:
    import timm

    folder = Path(location).expanduser()
    if folder.is_dir():
        config_file, weights_file = folder / "config.json", folder / "model.safetensors"
        if not config_file.is_file():
            raise FileNotFoundError(f"hf_hub teacher {location!r}: {folder} holds no config.json")
        if not weights_file.is_file():
            # timm would fall back to .bin/.pth files, which are pickles: only safetensors are read.
            raise FileNotFoundError(f"hf_hub teacher {location!r}: {folder} holds no model.safetensors")
        try:
            architecture = json.loads(config_file.read_text()).get("architecture")
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(f"hf_hub teacher {location!r}: {config_file} is not a JSON object ({error})") from error
        if not architecture:
            raise ValueError(
                f"hf_hub teacher {location!r}: {config_file} has no 'architecture' (timm's config format); "
                "a transformers model can be exported to ONNX and given as 'onnx'"
            )
        name = f"local-dir:{folder.resolve()}"
        identity: dict[str, Any] = {"config_sha256": file_sha256(config_file)}
    elif _looks_like_path(location):
        raise FileNotFoundError(f"hf_hub teacher {location!r}: no such directory {folder}")
    else:
        name, identity = f"hf-hub:{location}", {"repo": location}
    try:
        net = timm.create_model(name, pretrained=True, **kwargs)
    except (RuntimeError, ValueError, TypeError, OSError) as error:
        raise ValueError(
            f"hf_hub teacher {location!r}: timm could not build it ({type(error).__name__}: {error})"
        ) from error
    identity.update(kind="hf_hub", kwargs=kwargs, output=output)
    return _frozen(net.to(device), "hf_hub", location, identity, output)


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session as a module: ``(B, 3, H, W)`` float tensor → its outputs as tensors.

    A graph with a fixed batch size is run in chunks of that size (the last one padded);
    the result comes back on the input's device.
    """

    def __init__(self, path: Path, device: torch.device) -> None:
        super().__init__()
        ort = require("onnxruntime", "export", "an ONNX teacher")

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        # Respect the run's thread budget (config.threads) instead of ONNX Runtime's all-cores default.
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(
                f"onnx teacher {path}: not a loadable ONNX model ({type(error).__name__}: {error})"
            ) from error
        self.path = path
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"onnx teacher {path}: expected one input (B, 3, H, W), the graph has {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(float)":
            raise ValueError(
                f"onnx teacher {path}: input {self.input_name!r} is {inputs[0].type}, expected tensor(float)"
            )
        channels = self.input_shape[1] if len(self.input_shape) == 4 else None
        if len(self.input_shape) != 4 or (isinstance(channels, int) and channels != 3):
            raise ValueError(
                f"onnx teacher {path}: input {self.input_name!r} has shape {self.input_shape}, expected (B, 3, H, W)"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __deepcopy__(self, memo: dict) -> OnnxNetwork:
        # A session cannot be copied; it holds no state that inference changes, so it is shared.
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        batch, _, height, width = array.shape
        for axis, size in ((2, height), (3, width)):
            fixed = self.input_shape[axis]
            if isinstance(fixed, int) and fixed != size:
                raise ValueError(
                    f"onnx teacher {self.path}: the graph takes {self.input_shape[2]}x{self.input_shape[3]} "
                    f"images, got {height}x{width}; set the teacher's image_size to "
                    f"[{self.input_shape[2]}, {self.input_shape[3]}]"
                )
        fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        if fixed_batch is None:
            results = self.session.run(None, {self.input_name: array})
        else:
            chunks = []
            for start in range(0, batch, fixed_batch):
                chunk = array[start : start + fixed_batch]
                padded = np.concatenate([chunk, np.zeros((fixed_batch - len(chunk), *chunk.shape[1:]), np.float32)])
                chunks.append([out[: len(chunk)] for out in self.session.run(None, {self.input_name: padded})])
            results = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.output_names))]
        tensors = tuple(torch.from_numpy(np.asarray(r)).to(images.device) for r in results)
        return tensors[0] if len(tensors) == 1 else tensors


def _load_onnx(path: Path, output: int | str | None, device: torch.device) -> ExternalModel:
    path = path.expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"onnx teacher {path}: no such file")
    net = OnnxNetwork(path, device)
    if isinstance(output, str):
        if output not in net.output_names:
            raise ValueError(f"onnx teacher {path}: no output {output!r}; the graph has {', '.join(net.output_names)}")
        output = net.output_names.index(output)
    identity = {"kind": "onnx", "output": output}
    return ExternalModel(net, "onnx", str(path), _fingerprint(identity, file_sha256(path)), output)

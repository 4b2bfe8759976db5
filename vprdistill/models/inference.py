"""A copy of a place model arranged for fast inference: BatchNorm folded into convolutions, channels-last.

Why: on the CPU, oneDNN convolutions run on NHWC ("channels-last") activations;
a model kept in PyTorch's default NCHW layout has every convolution reorder its
input and output. The reorders are memory-bound, so once a batch's activations
outgrow the caches (about batch 16 at 224 px for a ResNet-50) they dominate and
a larger batch becomes *slower* per image. Channels-last removes them; folding
each eval-mode BatchNorm into the convolution before it removes a further
memory-bound pass per layer (BENCHMARKS.md ``cpu-batch-latency`` measures both).

The copy is for inference only (the localizer, ``bench``): the folded
convolutions no longer have BatchNorm statistics to update, so it is never
trained or saved; the original model is left untouched. Descriptor extraction,
which also runs during training and on teachers whose hooks a caller may rely
on, switches the model's own layout for the duration instead
(:func:`channels_last_during`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` into it, in place.

    "Directly follows" is read off the module tree, the way torchvision and timm
    ResNets are built: a ``Conv2d`` child ``convN`` and a BatchNorm child ``bnN``
    of the same parent, or consecutive ``Conv2d``, ``BatchNorm2d`` entries of an
    ``nn.Sequential`` (the downsampling shortcut). The BatchNorm is replaced by
    ``nn.Identity``. Returns the number folded.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model: training BatchNorm uses batch statistics")
    folded = 0
    for parent in list(model.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            pairs = list(pairwise(children))
        else:
            pairs = [
                (name, "bn" + name[4:]) for name in children if name.startswith("conv") and "bn" + name[4:] in children
            ]
        for conv_name, bn_name in pairs:
            conv, bn = children[conv_name], children[bn_name]
            # Exact types only: subclasses (timm's BatchNormAct2d) carry an activation a fold would drop.
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
                children[bn_name] = nn.Identity()
                folded += 1
    return folded


def uses_channels_last(model: nn.Module) -> bool:
    """Whether the first 4-D weight of ``model`` is stored channels-last."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            return parameter.is_contiguous(memory_format=torch.channels_last)
    return False


def inference_copy(
    model: nn.Module, device: torch.device | str = "cpu", channels_last: bool = True, fold: bool = True
) -> nn.Module:
    """An eval-mode copy of ``model`` on ``device``, BatchNorm folded and weights channels-last.

    The copy's outputs equal the original's up to float rounding (tests check
    within 1e-4 on L2-normalised descriptors). Attributes the package reads off
    a place model (``config``, ``descriptor_dim``, ``input_channels``) are
    kept, since ``copy.deepcopy`` copies them.
    """
    fast = copy.deepcopy(model).to(device).eval()
    if fold:
        fold_batchnorm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


@contextmanager
def channels_last_during(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` itself, its weights channels-last inside the block and back in the default layout after.

    For callers that must run the caller's own model (its hooks fire, nothing is
    copied), such as descriptor extraction during training; the layout is put
    back because a checkpoint (safetensors) stores contiguous tensors only.
    """
    was_channels_last = uses_channels_last(model)
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if not was_channels_last:
            model.to(memory_format=torch.contiguous_format)


# Images per forward pass on the CPU. At 224 px a ResNet-50's first-stage activations take
# about 3 MB an image: 8 images stay within this class of machine's 32 MB L3 cache, 32 do not,
# and a batch of 32 run at once was 17 % slower per image than 8 (BENCHMARKS.md, cpu-batch-latency).
CPU_CHUNK = 8


def run_in_chunks(model: nn.Module, images: torch.Tensor, chunk: int | None = CPU_CHUNK) -> torch.Tensor:
    """``model(images)`` `(B, ...)` → `(B, D)`, run ``chunk`` images at a time (all at once for ``None``).

    For inference only (BatchNorm in eval mode), where the rows do not depend on each other.
    """
    if chunk is None or images.shape[0] <= chunk:
        return model(as_model_input(images, model))
    return torch.cat([model(as_model_input(part, model)) for part in images.split(chunk)])


def chunk_for(device: torch.device | str) -> int | None:
    """Images per forward pass on ``device``: :data:`CPU_CHUNK` on the CPU, the whole batch elsewhere."""
    return CPU_CHUNK if torch.device(device).type == "cpu" else None


@torch.inference_mode()
def batch_descriptors(model: nn.Module, images: torch.Tensor, device: torch.device | str) -> np.ndarray:
    """Descriptors ``(B, D)`` float32 on the host of prepared inputs ``images`` ``(B, C, H, W)``, run on ``device``.

    The one forward pass of every path from images to descriptors (file lists in
    ``eval.extract``, in-memory photos in the localizer): chunked as :func:`chunk_for` says.
    """
    return run_in_chunks(model, images.to(device, non_blocking=True), chunk_for(device)).float().cpu().numpy()


def as_model_input(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``images`` `(B, C, H, W)` in the memory layout of ``model``'s convolutions (a no-op when they match)."""
    if images.dim() == 4 and uses_channels_last(model):
        return images.contiguous(memory_format=torch.channels_last)
    return images

"""Mixed precision (``amp``) and ``torch.compile`` (``compile``) for the student's training step.

Only the student's forward pass runs under autocast; its descriptors are cast
back to float32 before the loss, so losses, cached teacher descriptors and
the optimiser state stay in float32. ``fp16`` scales the loss with a
``GradScaler`` (float16 gradients underflow otherwise); ``bf16`` has float32's
exponent range and needs no scaling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from vprdistill.train.config import AMP_MODES
from vprdistill.utils.logging import get_logger

logger = get_logger("amp_compile")

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device) -> None:
    """Raise ``ValueError`` when ``amp`` is unknown or unsupported on ``device``."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp: fp16 needs a CUDA device (this run is on {device.type}); use amp: bf16 on the CPU")


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (AVX-512 BF16 or AMX on a CPU; Ampere or later on CUDA).

    Elsewhere ``amp: bf16`` is emulated, and slower than float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of ``amp`` on ``device`` (a no-op context for ``off``)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for ``fp16`` only; disabled, it passes the loss and ``step`` through unchanged."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


class StudentForward:
    """Calls the student, compiled with ``torch.compile`` when asked, falling back to eager mode.

    Compilation happens lazily at the first call (and again for new input
    shapes). When a compiled call raises and the same call succeeds in eager
    mode, the error was the compiler's: a warning is logged and the rest of
    the run is eager. An error eager mode raises too is the caller's and
    propagates.

    Args:
        module: the student, or its ``DistributedDataParallel`` wrapper.
        compile: whether to compile it.
        backend: the ``torch.compile`` backend (a name or a callable).
    """

    def __init__(self, module: torch.nn.Module, compile: bool = False, backend: str | Callable = "inductor") -> None:
        self.module = module
        self.compiled = torch.compile(module, backend=backend) if compile else None

    @property
    def is_compiled(self) -> bool:
        """True while calls go through the compiled module."""
        return self.compiled is not None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(B, D)`` of inputs ``(B, C, H, W)``."""
        if self.compiled is None:
            return self.module(images)
        try:
            return self.compiled(images)
        except Exception as error:  # the compiler's errors have no common base class
            output = self.module(images)
            logger.warning(
                "torch.compile failed (%s: %s); training continues without compilation",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            self.compiled = None
            torch._dynamo.reset()
            return output

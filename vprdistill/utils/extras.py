"""Optional extras: the packages one feature needs, imported only when that feature runs.

The core install (``pip install vprdistill``) trains and evaluates; segmentation
(``segment``), ONNX export and runtimes (``export``), the HTTP service (``serve``)
and the demo's plots (``report``) each come with an extra. A feature's entry
point calls :func:`require`, so a missing package ends in one line naming the
extra to install instead of a traceback. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """A feature's optional package is not installed; the message names the extra that brings it.

    Derives from ``ImportError`` (code catching that keeps working), yet is its own class so the
    command line reports it in one line without doing the same for a ``ModuleNotFoundError`` that
    is a bug.
    """


def _is_missing(error: ModuleNotFoundError, module: str) -> bool:
    """Whether ``error`` says ``module`` itself (or a package above it) is absent, not a module it imports."""
    if error.name is None:
        return False
    return module == error.name or module.startswith(error.name + ".")


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``; if it is not installed, raise :class:`MissingExtraError`.

    Args:
        module: the module's import name (``"onnxruntime"``, ``"matplotlib.pyplot"``).
        extra: the optional extra of ``vprdistill`` that installs it (``"export"``).
        feature: what needs it, as the message's subject (``"vprdistill export"``).

    Raises:
        MissingExtraError: ``module`` or a package above it is not installed.
        ModuleNotFoundError: ``module`` is installed but one of its own imports is missing
            (a broken install, reported as it is).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if not _is_missing(error, module):
            raise
        raise MissingExtraError(
            f"{feature} needs the optional '{extra}' extra: uv sync --extra {extra} "
            f"(or pip install 'vprdistill[{extra}]')",
            name=module,
        ) from error

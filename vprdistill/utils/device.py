"""Device and thread selection shared by every command."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI reads DEVICE_CHOICES to build its
# help, and `vprdistill --help` must answer without loading torch.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|mps`` (or ``cuda:1``) into a usable ``torch.device``.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. Asking explicitly for a
    device that is not present is an error rather than a silent fallback, so a
    benchmark never reports CPU figures under a GPU label.
    """
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was requested but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("--device mps was requested but Apple MPS is not available on this machine")
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def set_threads(num_threads: int | None) -> None:
    """Set the number of CPU threads of torch, faiss and the BLAS libraries NumPy and SciPy load."""
    if num_threads is None or num_threads <= 0:
        return
    import faiss
    import torch

    torch.set_num_threads(num_threads)
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(num_threads)
    # NumPy, SciPy and faiss each bundle their own BLAS/OpenMP pools, which torch's
    # setting does not reach; without this, --threads 1 still runs BLAS on every core.
    threadpool_limits(num_threads)

"""The one place that decides which engine runs a kernel."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Literal

from celeris.errors import DeviceError, check_choice

if TYPE_CHECKING:
    import torch

Device = Literal["cpu", "cuda"]


@functools.cache
def _cuda_status() -> tuple[bool, str]:
    """Return whether numba-cuda can run kernels here, and why not if it cannot."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken: say so, never crash 'auto'
        return False, f"numba-cuda is not importable ({exc}); install celeris[gpu]"
    try:
        if not cuda.is_available():
            return False, "no CUDA driver or NVIDIA GPU was found"
    except Exception as exc:
        return False, f"CUDA initialisation failed ({exc})"
    return True, "CUDA device available"


def cuda_available() -> bool:
    """Return True when CUDA kernels can run (a GPU, or the numba CUDA simulator)."""
    return _cuda_status()[0]


def resolve_device(device: str = "auto") -> Device:
    """Resolve ``"auto" | "cpu" | "cuda"`` to the engine that will run.

    ``auto`` picks CUDA when it is available and quietly falls back to the CPU; an explicit
    ``cuda`` that cannot run raises :class:`~celeris.DeviceError` saying why.
    """
    check_choice("device", device, ("auto", "cpu", "cuda"))
    if device == "cpu":
        return "cpu"
    ok, why = _cuda_status()
    if device == "cuda" and not ok:
        raise DeviceError(f"device='cuda' cannot run: {why}")
    if device == "auto" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # The simulator is for tests of the CUDA path, never a silent choice for real work.
        return "cpu"
    return "cuda" if ok else "cpu"


def resolve_torch_device(device: str = "auto") -> torch.device:
    """Return the torch device for ``"auto" | "cpu" | "cuda"`` (models, training, the LLM).

    The torch counterpart of :func:`resolve_device`, with the same rule: ``auto`` picks CUDA
    when torch sees a GPU and falls back quietly to the CPU; an explicit ``cuda`` that cannot
    run raises :class:`~celeris.DeviceError` saying why. torch is imported on call, so this
    module stays importable without it.
    """
    import torch

    check_choice("device", device, ("auto", "cpu", "cuda"))
    if device == "cpu":
        return torch.device("cpu")
    ok = torch.cuda.is_available()
    if device == "cuda" and not ok:
        why = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else "torch.cuda.is_available() is False (no NVIDIA GPU or driver visible)"
        )
        raise DeviceError(f"device='cuda' cannot run: {why}")
    return torch.device("cuda" if ok else "cpu")

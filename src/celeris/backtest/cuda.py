"""CUDA builds of the simulation kernels: the same source as :mod:`celeris.backtest.kernel` and
:mod:`celeris.backtest.group_kernel`.

``kernel.py`` is executed a second time with ``__celeris_jit__`` bound to
``numba.cuda.jit(device=True)``; every helper and :func:`simulate_column` become device
functions, and :func:`simulate_cuda` runs one column per GPU thread. Under
``NUMBA_ENABLE_CUDASIM=1`` the same code runs on numba's CUDA simulator (used by CI).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numba import cuda  # module global: the CUDA simulator swaps it inside kernels

THREADS_PER_BLOCK = 64


def _build(filename: str, **injected: ModuleType) -> ModuleType:
    """Execute ``filename`` (a kernel source beside this file) as a CUDA device-function module.

    ``injected`` binds the module globals through which a kernel reaches the CUDA builds of the
    kernels it calls (``__celeris_kernel__``, ``__celeris_perp__``).
    """
    path = Path(__file__).with_name(filename)
    name = f"celeris.backtest._{path.stem}_cuda"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__celeris_jit__"] = cuda.jit(device=True)
    for key, value in injected.items():
        module.__dict__[f"__celeris_{key}__"] = value
    spec.loader.exec_module(module)
    return module


@functools.cache
def _device_module() -> ModuleType:
    return _build("kernel.py")


@functools.cache
def _launcher() -> Any:
    simulate_column = _device_module().simulate_column

    @cuda.jit
    def simulate_cuda(prices, signals, params, ann_factor, out):
        col: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stub: 2 arguments
        if col < params.shape[0]:
            simulate_column(col, prices, signals, params, ann_factor, out)

    return simulate_cuda


def simulate_cuda(
    prices: tuple[np.ndarray, ...],
    signals: tuple[np.ndarray, ...],
    params: np.ndarray,
    ann_factor: float,
    out: tuple[np.ndarray, ...],
) -> None:
    """Run the kernel on the GPU with the CPU kernel's arguments; outputs are copied back in place.

    Inputs are copied to the device once; the output arrays (metrics, equity, orders, trades)
    are written on the device and copied back into the given numpy arrays.
    """

    def to_dev(a: np.ndarray) -> Any:
        return cuda.to_device(np.ascontiguousarray(a))

    d_out = tuple(cuda.to_device(a) for a in out)
    blocks = (params.shape[0] + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _launcher()[blocks, THREADS_PER_BLOCK](
        tuple(to_dev(a) for a in prices),
        tuple(to_dev(a) for a in signals),
        to_dev(params),
        ann_factor,
        d_out,
    )
    cuda.synchronize()
    # metrics, equity, orders, trades; the offsets are inputs. Placeholders are (1, 1): copying
    # them back is free.
    for k in (0, 1, 2, 4):
        d_out[k].copy_to_host(out[k])


@functools.cache
def _perp_device_module() -> ModuleType:
    return _build("perp.py")


@functools.cache
def _group_device_module() -> ModuleType:
    return _build("group_kernel.py", kernel=_device_module(), perp=_perp_device_module())


@functools.cache
def _group_launcher() -> Any:
    simulate_group = _group_device_module().simulate_group

    @cuda.jit
    def simulate_groups_cuda(
        prices, signals, sizes, perp, col_params, group_params, groups, mode, ann_factor, out,
        scratch,
    ):  # fmt: skip
        g: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stub: 2 arguments
        if g < group_params.shape[0]:
            simulate_group(
                g, prices, signals, sizes, perp, col_params, group_params, groups, mode,
                ann_factor, out, scratch,
            )  # fmt: skip

    return simulate_groups_cuda


def simulate_groups_cuda(
    prices: tuple[np.ndarray, ...],
    signals: tuple[np.ndarray, ...],
    sizes: np.ndarray,
    perp: tuple[np.ndarray, ...],
    col_params: np.ndarray,
    group_params: np.ndarray,
    groups: np.ndarray,
    mode: int,
    ann_factor: float,
    out: tuple[np.ndarray, ...],
    scratch: tuple[np.ndarray, ...],
) -> None:
    """Run the grouped kernel on the GPU (one thread per group) with the CPU kernel's arguments."""

    def to_dev(a: np.ndarray) -> Any:
        return cuda.to_device(np.ascontiguousarray(a))

    d_out = tuple(cuda.to_device(a) for a in out)
    d_scratch = tuple(cuda.to_device(a) for a in scratch)
    blocks = (group_params.shape[0] + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _group_launcher()[blocks, THREADS_PER_BLOCK](
        tuple(to_dev(a) for a in prices),
        tuple(to_dev(a) for a in signals),
        to_dev(sizes),
        tuple(to_dev(a) for a in perp),
        to_dev(col_params),
        to_dev(group_params),
        to_dev(groups),
        mode,
        ann_factor,
        d_out,
        d_scratch,
    )
    cuda.synchronize()
    for k in (0, 1, 2, 4):
        d_out[k].copy_to_host(out[k])

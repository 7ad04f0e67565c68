"""CUDA build of the simulation kernel: the same source as :mod:`celeris.backtest.kernel`.

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


@functools.cache
def _device_module() -> ModuleType:
    path = Path(__file__).with_name("kernel.py")
    spec = importlib.util.spec_from_file_location("celeris.backtest._kernel_cuda", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__celeris_jit__"] = cuda.jit(device=True)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _launcher() -> Any:
    simulate_column = _device_module().simulate_column

    @cuda.jit
    def simulate_cuda(
        close,
        open_,
        high,
        low,
        price,
        entries,
        exits,
        short_entries,
        short_exits,
        params,
        ann_factor,
        metrics,
        equity,
        orders,
        order_offsets,
        trades,
        trade_offsets,
    ):
        col: int = cuda.grid(1)  # type: ignore[call-arg]  # numba's stub: 2 arguments
        if col < params.shape[0]:
            simulate_column(
                col,
                close,
                open_,
                high,
                low,
                price,
                entries,
                exits,
                short_entries,
                short_exits,
                params,
                ann_factor,
                metrics,
                equity,
                orders,
                order_offsets,
                trades,
                trade_offsets,
            )

    return simulate_cuda


def simulate_cuda(*arrays: Any) -> None:
    """Run the kernel on the GPU with the CPU kernel's arguments; outputs are copied back in place.

    Inputs are copied to the device once; the output arrays (metrics, equity, orders, trades)
    are written on the device and copied back into the given numpy arrays.
    """
    (close, open_, high, low, price, entries, exits, s_entries, s_exits, params, ann_factor,
     metrics, equity, orders, order_offsets, trades, trade_offsets) = arrays  # fmt: skip
    n_cols = params.shape[0]
    to_dev = cuda.to_device
    d_inputs = [to_dev(np.ascontiguousarray(a)) for a in (close, open_, high, low, price)]
    d_signals = [to_dev(np.ascontiguousarray(a)) for a in (entries, exits, s_entries, s_exits)]
    d_params = to_dev(np.ascontiguousarray(params))
    d_metrics = to_dev(metrics)
    d_equity = to_dev(equity)
    d_orders = to_dev(orders)
    d_trades = to_dev(trades)
    d_ooff = to_dev(order_offsets)
    d_toff = to_dev(trade_offsets)
    blocks = (n_cols + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _launcher()[blocks, THREADS_PER_BLOCK](
        *d_inputs,
        *d_signals,
        d_params,
        ann_factor,
        d_metrics,
        d_equity,
        d_orders,
        d_ooff,
        d_trades,
        d_toff,
    )
    cuda.synchronize()
    for device_array, host in (
        (d_metrics, metrics),
        (d_equity, equity),
        (d_orders, orders),
        (d_trades, trades),
    ):
        device_array.copy_to_host(host)  # placeholders are (1, 1): copying them back is free

"""Array-level driver of the simulation kernel: device dispatch, record sizing, chunking.

Everything here takes numpy arrays already validated and broadcast by
:func:`celeris.backtest.from_signals`; nothing here knows about pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from celeris.backtest import kernel as K
from celeris.compute import resolve_device


def placeholder_f2() -> np.ndarray:
    # A fresh (1, 1) placeholder per call: a 1-bar, 1-column run may write into it harmlessly.
    return np.zeros((1, 1), dtype=np.float64)


def placeholder_i1() -> np.ndarray:
    return np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class KernelInputs:
    """Broadcast inputs of one simulation; 2-D arrays are (n_bars, 1 or n_cols)."""

    close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    price: np.ndarray
    entries: np.ndarray
    exits: np.ndarray
    short_entries: np.ndarray
    short_exits: np.ndarray
    params: np.ndarray  # (n_cols, N_PARAMS) float64
    ann_factor: float

    @property
    def prices(self) -> tuple[np.ndarray, ...]:
        """(close, open, high, low, price), read-only: the kernel's ``prices`` argument."""
        return tuple(readonly(a) for a in (self.close, self.open, self.high, self.low, self.price))

    @property
    def signals(self) -> tuple[np.ndarray, ...]:
        """(entries, exits, short_entries, short_exits), read-only: the kernel's ``signals``."""
        arrays = (self.entries, self.exits, self.short_entries, self.short_exits)
        return tuple(readonly(a) for a in arrays)

    @property
    def n_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_cols(self) -> int:
        return int(self.params.shape[0])

    def select(self, cols: np.ndarray) -> KernelInputs:
        """Return the inputs of the given column positions only."""

        def sub(a: np.ndarray) -> np.ndarray:
            return a if a.shape[1] == 1 else a[:, cols]

        return KernelInputs(
            close=sub(self.close),
            open=sub(self.open),
            high=sub(self.high),
            low=sub(self.low),
            price=sub(self.price),
            entries=sub(self.entries),
            exits=sub(self.exits),
            short_entries=sub(self.short_entries),
            short_exits=sub(self.short_exits),
            params=self.params[cols],
            ann_factor=self.ann_factor,
        )


@dataclass(frozen=True)
class KernelOutputs:
    metrics: np.ndarray  # (n_cols, N_METRICS)
    equity: np.ndarray | None  # (n_bars, n_cols)
    orders: np.ndarray | None  # (n_orders, N_ORDER_FIELDS)
    trades: np.ndarray | None  # (n_trades, N_TRADE_FIELDS)


def _launch(inp: KernelInputs, device: str, out: tuple[np.ndarray, ...]) -> None:
    """Run the kernel; ``out`` is (metrics, equity, orders, order_offsets, trades, trade_offsets)."""
    args = (inp.prices, inp.signals, readonly(inp.params), float(inp.ann_factor), out)
    if device == "cuda":
        from celeris.backtest.cuda import simulate_cuda

        simulate_cuda(*args)
    else:
        K.simulate_nb(*args)


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view (the kernel's input type), leaving the caller's array untouched."""
    view = a.view()
    view.flags.writeable = False
    return view


def simulate(
    inp: KernelInputs,
    *,
    device: str = "auto",
    keep_equity: bool = False,
    keep_records: bool = False,
) -> KernelOutputs:
    """Run the kernel over every column of ``inp``.

    Metrics are always computed inside the kernel. Equity curves (n_bars x n_cols float64) and
    order/trade records are materialised only when asked for; records take a first pass to
    count orders per column, then a second pass that writes them into exactly-sized arrays.
    """
    engine = resolve_device(device)
    n_cols = inp.n_cols
    metrics = np.full((n_cols, K.N_METRICS), np.nan)
    equity = np.empty((inp.n_bars, n_cols)) if keep_equity else placeholder_f2()
    if not keep_records:
        _launch(
            inp,
            engine,
            (
                metrics,
                equity,
                placeholder_f2(),
                placeholder_i1(),
                placeholder_f2(),
                placeholder_i1(),
            ),
        )
        return KernelOutputs(metrics, equity if keep_equity else None, None, None)
    # Pass 1 counts orders; trades <= orders + 1 (an open trade) per column.
    _launch(
        inp,
        engine,
        (
            metrics,
            placeholder_f2(),
            placeholder_f2(),
            placeholder_i1(),
            placeholder_f2(),
            placeholder_i1(),
        ),
    )
    n_orders = metrics[:, K.M_ORDERS].astype(np.int64)
    order_offsets = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(n_orders, out=order_offsets[1:])
    trade_offsets = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(n_orders + 1, out=trade_offsets[1:])
    orders = np.full((max(int(order_offsets[-1]), 1), K.N_ORDER_FIELDS), np.nan)
    trades = np.full((max(int(trade_offsets[-1]), 1), K.N_TRADE_FIELDS), np.nan)
    _launch(inp, engine, (metrics, equity, orders, order_offsets, trades, trade_offsets))
    orders = orders[: int(order_offsets[-1])]
    trades = trades[~np.isnan(trades[:, K.T_COL])]
    return KernelOutputs(metrics, equity if keep_equity else None, orders, trades)

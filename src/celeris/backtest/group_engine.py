"""Array-level driver of the grouped kernel: device dispatch, scratch, record sizing.

The grouped counterpart of :mod:`celeris.backtest.engine`: it takes numpy arrays already
validated and laid out by :mod:`celeris.backtest.group` (columns of a group contiguous) and
knows nothing about pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest.engine import KernelOutputs, placeholder_f2, placeholder_i1, readonly
from celeris.compute import resolve_device


@dataclass(frozen=True)
class GroupInputs:
    """Inputs of one grouped simulation.

    Price arrays are (n_bars, n_assets) with NaN where an asset is not listed; signal and size
    arrays are (n_bars or 1, n_cols or 1); ``col_params`` is (n_cols, N_COL_PARAMS) with each
    column's asset in ``C_ASSET``; ``groups`` holds n_groups + 1 column offsets.
    """

    close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    price: np.ndarray
    entries: np.ndarray
    exits: np.ndarray
    short_entries: np.ndarray
    short_exits: np.ndarray
    sizes: np.ndarray
    col_params: np.ndarray
    group_params: np.ndarray
    groups: np.ndarray
    mode: int
    ann_factor: float
    #: (funding, mark, tiers) of a perpetual book: funding rates and mark prices (n_bars or 1,
    #: n_assets or 1; a (1, 1) mark means "the bar's open") and the (n_tables, n_tiers, 3)
    #: maintenance tier tables the columns index by ``C_TIERS``.
    perp: tuple[np.ndarray, np.ndarray, np.ndarray] = (
        np.zeros((1, 1)),
        np.zeros((1, 1)),
        np.zeros((1, 1, 3)),
    )

    @property
    def n_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_cols(self) -> int:
        return int(self.col_params.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.group_params.shape[0])

    def args(self) -> tuple[Any, ...]:
        """The kernel's leading arguments, read-only."""
        prices = tuple(
            readonly(a) for a in (self.close, self.open, self.high, self.low, self.price)
        )
        signals = tuple(
            readonly(a) for a in (self.entries, self.exits, self.short_entries, self.short_exits)
        )
        return (
            prices,
            signals,
            readonly(self.sizes),
            tuple(readonly(a) for a in self.perp),
            readonly(self.col_params),
            readonly(self.group_params),
            readonly(self.groups),
            int(self.mode),
            float(self.ann_factor),
        )


def _scratch(inp: GroupInputs) -> tuple[np.ndarray, ...]:
    return (
        np.zeros((inp.n_cols, GK.N_STATE)),
        np.zeros((inp.n_cols, GK.N_IW), dtype=np.int64),
        np.zeros((inp.n_groups, GK.N_ACC)),
        np.zeros((inp.n_groups, 4)),
    )


@dataclass(frozen=True)
class GroupOutputs(KernelOutputs):
    """Kernel outputs per group, plus the book accumulators and each column's funding."""

    book: np.ndarray  # (n_groups, N_ACC): trade sums, funding, liquidations, margin, leverage
    funding: np.ndarray  # (n_cols,) funding paid (+) or received (-) by every column


def _launch(inp: GroupInputs, device: str, out: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    scratch = _scratch(inp)
    args = (*inp.args(), out, scratch)
    if device == "cuda":
        from celeris.backtest.cuda import simulate_groups_cuda

        simulate_groups_cuda(*args)
    else:
        GK.simulate_groups_nb(*args)
    return scratch


def simulate_groups(
    inp: GroupInputs, *, device: str = "auto", keep_equity: bool = False, keep_records: bool = False
) -> GroupOutputs:
    """Run the grouped kernel: metrics per group, and group equity / records on request.

    Records take a counting pass first (orders per group), then a pass that writes them into
    exactly-sized arrays; a group has at most one open trade per column besides its exits.
    """
    engine = resolve_device(device)
    metrics = np.full((inp.n_groups, K.N_METRICS), np.nan)
    equity = np.empty((inp.n_bars, inp.n_groups)) if keep_equity else placeholder_f2()
    if not keep_records:
        scratch = _launch(
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
        return GroupOutputs(metrics, equity if keep_equity else None, None, None, *_extras(scratch))
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
    widths = np.diff(inp.groups)
    order_offsets = np.zeros(inp.n_groups + 1, dtype=np.int64)
    np.cumsum(n_orders, out=order_offsets[1:])
    trade_offsets = np.zeros(inp.n_groups + 1, dtype=np.int64)
    np.cumsum(n_orders + widths, out=trade_offsets[1:])
    orders = np.full((max(int(order_offsets[-1]), 1), K.N_ORDER_FIELDS), np.nan)
    trades = np.full((max(int(trade_offsets[-1]), 1), K.N_TRADE_FIELDS), np.nan)
    scratch = _launch(inp, engine, (metrics, equity, orders, order_offsets, trades, trade_offsets))
    orders = orders[: int(order_offsets[-1])]
    trades = trades[~np.isnan(trades[:, K.T_COL])]
    return GroupOutputs(metrics, equity if keep_equity else None, orders, trades, *_extras(scratch))


def _extras(scratch: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    state, _, book, _ = scratch
    return book, state[:, GK.S_FUNDING].copy()

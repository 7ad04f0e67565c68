"""Independent accounts taken together: the statistics behind ``Portfolio.stats(group_by=...)``.

vectorbt's regrouping of a portfolio without cash sharing: each column kept its own cash, and a
group's figures are those of the sum of its columns' values (start value: the sum of their
starting cash). Value metrics are the kernel's own definitions, computed by the kernel's own
helpers (``mark_bar``, ``write_metrics``) on the summed curve; trade metrics count the trades of
every column of the group; ``exposure`` is the share of bars where any of them holds a position.
For one balance shared by the columns, simulate them as a book instead
(``from_signals(..., cash_sharing=True)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numba import njit

from celeris.backtest import kernel as K
from celeris.backtest.group import group_codes
from celeris.backtest.metrics import metrics_frame

if TYPE_CHECKING:
    from celeris.backtest.portfolio import Portfolio


@njit(cache=True)
def _curve_metrics_nb(values, init_cash, ann_factor, metrics, row, counts, sums, exposure):
    """Value metrics of one summed curve into ``metrics[row]``, with the given trade figures.

    ``counts``: closed trades, open trades, wins, losses, orders; ``sums``: sum of winning and
    losing pnl and returns, best and worst return, fees, open pnl.
    """
    n = values.shape[0]
    prev = init_cash
    r_sum = 0.0
    r_sumsq = 0.0
    down_sq = 0.0
    dd_started = False
    peak_val = np.nan
    valley_val = np.nan
    peak_idx = -1
    max_dd = 0.0
    max_dd_dur = 0
    for i in range(n):
        r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx, max_dd, max_dd_dur = (
            K.mark_bar(i, values[i], prev, r_sum, r_sumsq, down_sq, dd_started, peak_val,
                       valley_val, peak_idx, max_dd, max_dd_dur)
        )  # fmt: skip
        prev = values[i]
    if dd_started:
        max_dd_dur = max(max_dd_dur, n - 1 - peak_idx)
        max_dd = min(max_dd, (valley_val - peak_val) / peak_val)
    K.write_metrics(
        metrics, row, values[n - 1], init_cash, ann_factor, n, r_sum, r_sumsq, down_sq, max_dd,
        max_dd_dur, counts[0], counts[1], counts[2], counts[3], sums[0], sums[1], sums[2],
        sums[3], sums[4], sums[5], exposure, sums[6], counts[4], sums[7],
    )  # fmt: skip


def _trade_figures(
    trades: np.ndarray, orders: np.ndarray, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``counts`` and ``sums`` of :func:`_curve_metrics_nb` for the columns ``members``."""
    mine = np.isin(trades[:, K.T_COL].astype(np.int64), members)
    closed = trades[mine & (trades[:, K.T_STATUS] == K.TRADE_CLOSED)]
    still_open = trades[mine & (trades[:, K.T_STATUS] == K.TRADE_OPEN)]
    pnl, ret = closed[:, K.T_PNL], closed[:, K.T_RETURN]
    win, loss = pnl > 0, pnl < 0
    in_group = np.isin(orders[:, K.O_COL].astype(np.int64), members)
    counts = np.array(
        [len(closed), len(still_open), win.sum(), loss.sum(), in_group.sum()], dtype=np.float64
    )
    sums = np.array(
        [
            pnl[win].sum(),
            pnl[loss].sum(),
            ret[win].sum(),
            ret[loss].sum(),
            ret.max() if len(ret) else np.nan,
            ret.min() if len(ret) else np.nan,
            orders[in_group, K.O_FEES].sum(),
            still_open[:, K.T_PNL].sum(),
        ]
    )
    return counts, sums


def _held(orders: np.ndarray, members: np.ndarray, n_bars: int) -> np.ndarray:
    """Bars after whose orders any of ``members`` holds a position."""
    held = np.zeros(n_bars, dtype=bool)
    for col in members:
        mine = orders[orders[:, K.O_COL] == col]
        if not len(mine):
            continue
        flow = np.zeros(n_bars)
        signed = np.where(mine[:, K.O_SIDE] == K.BUY, mine[:, K.O_SIZE], -mine[:, K.O_SIZE])
        np.add.at(flow, mine[:, K.O_IDX].astype(np.int64), signed)
        position = np.cumsum(flow)
        held |= np.abs(position) > K.MIN_SIZE * 1e-3
    return held


def regrouped_stats(pf: Portfolio, group_by: Any) -> pd.DataFrame:
    """One row per group of ``pf``'s columns with every metric of :data:`~celeris.backtest.METRICS`."""
    codes, labels = group_codes(group_by, pf.columns, 1, False)
    full = pf.arrays
    equity, trades, orders = full.equity, full.trades, full.orders
    assert equity is not None and trades is not None and orders is not None
    init = pf.init_cash.to_numpy()
    metrics = np.full((len(labels), K.N_METRICS), np.nan)
    for g in range(len(labels)):
        members = np.flatnonzero(codes == g)
        values = equity[:, members].sum(axis=1)
        counts, sums = _trade_figures(trades, orders, members)
        exposure = float(_held(orders, members, len(values)).mean())
        _curve_metrics_nb(
            values, float(init[members].sum()), pf.ann_factor, metrics, g, counts, sums, exposure
        )
    frame = metrics_frame(metrics, labels, pf.freq)
    frame.insert(0, "start_value", [init[codes == g].sum() for g in range(len(labels))])
    frame.insert(0, "end", pf.index[-1])
    frame.insert(0, "start", pf.index[0])
    frame.insert(3, "columns", np.bincount(codes, minlength=len(labels)))
    frame["execution"] = pf.execution
    frame["year_days"] = pf.annualisation.days
    return frame

"""What each backtest metric is: its kernel slot, meaning, kind and which way is better.

A leaf of :mod:`celeris.backtest`: it imports only the kernel's slot constants, so that
``portfolio``, ``sweep``, ``walk_forward`` and ``report`` all read the metric metadata from
here instead of from one another. How a metric is *shown* is decided here too
(:func:`format_metric`, built on :mod:`celeris.formatting`), for the HTML report, the CLI tables
and the LLM prompts alike; only the labels of the report stay in :mod:`celeris.backtest.report`.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.errors import ConfigError, did_you_mean
from celeris.formatting import (
    MISSING,
    NumberKind,
    format_duration,
    format_number,
    format_timestamp,
    is_missing,
)

#: Columns of :meth:`Portfolio.stats`, in order, with their kernel slot and meaning.
METRICS: dict[str, tuple[int, str]] = {
    "end_value": (K.M_END_VALUE, "portfolio value at the last bar"),
    "total_return": (K.M_TOTAL_RETURN, "end value / start value - 1"),
    "cagr": (K.M_CAGR, "compound annual growth rate, (end/start)^(ann_factor/n_bars) - 1"),
    "volatility": (K.M_VOLATILITY, "annualised std of bar returns (ddof=1)"),
    "sharpe": (K.M_SHARPE, "mean / std of bar returns * sqrt(ann_factor), risk-free 0"),
    "sortino": (K.M_SORTINO, "mean return * ann_factor / annualised downside deviation"),
    "calmar": (K.M_CALMAR, "cagr / max_drawdown"),
    "max_drawdown": (K.M_MAX_DD, "largest peak-to-valley fall of value, as a positive fraction"),
    "max_drawdown_duration": (K.M_MAX_DD_DURATION, "longest drawdown, peak to recovery (or end)"),
    "trades": (K.M_TRADES, "trades, including one still open at the end"),
    "closed_trades": (K.M_CLOSED_TRADES, "closed trades"),
    "win_rate": (K.M_WIN_RATE, "share of closed trades with pnl > 0"),
    "profit_factor": (K.M_PROFIT_FACTOR, "gross profit / gross loss of closed trades"),
    "expectancy": (K.M_EXPECTANCY, "expected pnl per closed trade (cash)"),
    "best_trade": (K.M_BEST_TRADE, "best closed-trade return"),
    "worst_trade": (K.M_WORST_TRADE, "worst closed-trade return"),
    "avg_winning_trade": (K.M_AVG_WIN, "mean return of winning closed trades"),
    "avg_losing_trade": (K.M_AVG_LOSS, "mean return of losing closed trades"),
    "exposure": (K.M_EXPOSURE, "share of bars that end with an open position"),
    "total_fees": (K.M_TOTAL_FEES, "fees paid (cash)"),
    "orders": (K.M_ORDERS, "filled orders"),
    "open_trade_pnl": (K.M_OPEN_PNL, "unrealised pnl of the open trade at the last close"),
}
#: Buy-and-hold of the same bars, added to :meth:`Portfolio.stats` after :data:`METRICS`.
BENCHMARK_METRICS = ("benchmark_return", "benchmark_sharpe", "benchmark_max_drawdown")
#: Metrics that are fractions (shown as percents by reports and tables).
PERCENT_METRICS = frozenset(
    {
        "total_return",
        "cagr",
        "volatility",
        "max_drawdown",
        "win_rate",
        "best_trade",
        "worst_trade",
        "avg_winning_trade",
        "avg_losing_trade",
        "exposure",
        "benchmark_return",
        "benchmark_max_drawdown",
    }
)
#: Metrics that are cash amounts.
CASH_METRICS = frozenset({"start_value", "end_value", "expectancy", "total_fees", "open_trade_pnl"})
#: Metrics that are ratios (neither fractions nor cash).
RATIO_METRICS = frozenset({"sharpe", "sortino", "calmar", "profit_factor", "benchmark_sharpe"})
#: Metrics that count events (integers in :meth:`Portfolio.stats`).
COUNT_METRICS = ("trades", "closed_trades", "orders")
#: Other columns shown as percents or cash: trade records and walk-forward summaries.
_PERCENT_NAMES = PERCENT_METRICS | {"oos_total_return", "return"}
_CASH_NAMES = CASH_METRICS | {"entry_price", "exit_price", "pnl"}
#: Metrics where lower is better: rankings sort them ascending, heat-maps keep their minimum.
HIGHER_IS_WORSE = frozenset({"max_drawdown", "max_drawdown_duration", "volatility", "total_fees"})


def metric_slot(metric: str) -> int:
    """Kernel slot of ``metric`` (its column in a metrics array); unknown names raise ConfigError."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}")
    return METRICS[metric][0]


def metrics_frame(metrics: np.ndarray, index: pd.Index, freq: pd.Timedelta | None) -> pd.DataFrame:
    """Kernel metric rows as a frame of :data:`METRICS` (counts as ints, durations as Timedelta)."""
    data: dict[str, Any] = {}
    for name, (slot, _) in METRICS.items():
        col = metrics[:, slot]
        if name in COUNT_METRICS:
            data[name] = col.astype(np.int64)
        elif name == "max_drawdown_duration" and freq is not None:
            data[name] = pd.to_timedelta(col * freq.value, unit="ns")
        else:
            data[name] = col
    return pd.DataFrame(data, index=index)


def rank_order(values: np.ndarray, metric: str) -> np.ndarray:
    """Positions of finite ``values`` from best to worst (ascending for drawdown-like metrics)."""
    key = np.asarray(values, dtype=np.float64)
    order = np.argsort(key if metric in HIGHER_IS_WORSE else -key, kind="stable")
    return order[np.isfinite(key[order])]


def metric_kind(name: str) -> NumberKind:
    """How the values of ``name`` are shown: ``"percent"``, ``"cash"``, ``"ratio"``, ``"count"``
    or ``"number"`` (any other column; a name ending in ``_return`` is a percent)."""
    if name in _PERCENT_NAMES or name.endswith("_return"):
        return "percent"
    if name in _CASH_NAMES:
        return "cash"
    if name in RATIO_METRICS:
        return "ratio"
    if name in COUNT_METRICS:
        return "count"
    return "number"


def format_metric(name: str, value: Any, *, missing: str = MISSING, signed: bool = False) -> str:
    """Format one metric value (a :meth:`Portfolio.stats` entry, a table cell) for people.

    Returns and drawdowns as percents with two decimals (``"30.87%"``), ratios with three
    decimals, cash with thousands separators and two decimals, counts as integers, durations
    in days and hours (``"2,907 days 4 h"``), timestamps as ISO dates, other numbers as an int
    when whole else with three decimals; a missing value as ``missing``.

    Parameters
    ----------
    name
        The metric (or column) name; it decides the kind (:func:`metric_kind`).
    value
        The value; numpy and pandas scalars included.
    missing
        What None, NaN and NaT show: ``"n/a"`` (reports, prompts) or ``"-"`` (CLI tables).
    signed
        Show a ``+`` on non-negative values (returns in the analyst's prompts).

    Examples
    --------
    >>> format_metric("total_return", 0.308658)
    '30.87%'
    >>> format_metric("sharpe", 0.21598)
    '0.216'
    >>> format_metric("max_drawdown_duration", pd.Timedelta(days=2907, hours=4))
    '2,907 days 4 h'
    >>> format_metric("win_rate", float("nan"), missing="-"), format_metric("return", 0.0125, signed=True)
    ('-', '+1.25%')
    """
    if isinstance(value, datetime.timedelta | np.timedelta64):
        return format_duration(value, missing=missing)
    if isinstance(value, datetime.datetime | np.datetime64):
        return format_timestamp(value, missing=missing)
    if (
        name == "max_drawdown_duration"  # a bar count when the bar spacing is unknown
        and isinstance(value, int | float | np.integer | np.floating)
        and not is_missing(value)
        and np.isfinite(value)
    ):
        return f"{int(value):,} bars"
    return format_number(value, metric_kind(name), signed=signed, missing=missing)

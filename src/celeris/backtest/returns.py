"""Metrics of a bare return series, with the kernel's definitions (for stitched records)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.nan if num == 0 or math.isnan(num) else math.copysign(math.inf, num)
    return num / den


def returns_metrics(
    returns: np.ndarray, ann_factor: float, init_value: float = 1.0
) -> dict[str, float]:
    """Total return, CAGR, volatility, Sharpe, Sortino, max drawdown and Calmar of bar returns.

    Definitions match :data:`celeris.backtest.METRICS` (ddof=1 volatility, downside deviation
    over all bars, drawdown of the compounded value from its running peak, first value included).
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("returns must be a non-empty 1-D array")
    value = init_value * np.cumprod(1.0 + r)
    growth = value[-1] / init_value
    n = r.size
    std = float(np.std(r, ddof=1)) if n > 1 else math.nan
    mean = float(np.mean(r))
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(ann_factor)
    peak = np.maximum.accumulate(value)
    max_dd = float(np.max(1.0 - value / peak))
    cagr = growth ** (ann_factor / n) - 1.0 if growth >= 0 else math.nan
    return {
        "total_return": growth - 1.0,
        "cagr": cagr,
        "volatility": std * math.sqrt(ann_factor),
        "sharpe": _ratio(mean, std) * math.sqrt(ann_factor) if n > 1 else math.nan,
        "sortino": _ratio(mean * ann_factor, downside) if n > 1 else math.nan,
        "max_drawdown": max_dd,
        "calmar": cagr / max_dd if max_dd > 0 else math.nan,
    }


def bar_returns(equity: pd.DataFrame, init_cash: np.ndarray) -> pd.DataFrame:
    """Bar returns of equity curves, the first bar measured against each curve's ``init_cash``."""
    prev = equity.shift(1)
    prev.iloc[0] = init_cash
    return equity / prev - 1.0

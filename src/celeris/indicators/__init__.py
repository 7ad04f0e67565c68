"""Technical indicators, batched over parameter grids.

``celeris.indicators.sma(close, 20)`` and friends take pandas or numpy and return the same;
pass a sequence of windows to get one column per window. The numba kernels behind them, in
:mod:`celeris.indicators.nb` (``sma_nb(close, windows)`` ...), take only numpy arrays and are
what the backtest sweep engine calls. Importing this package does not import numba: kernels
compile (or load from the cache) on first use.

See :mod:`celeris.indicators.api` for shapes, warm-up lengths and the NaN rules.
"""

from __future__ import annotations

from celeris.indicators.api import (
    ADX,
    MACD,
    BBands,
    Donchian,
    adx,
    atr,
    bbands,
    donchian,
    ema,
    macd,
    rolling_std,
    rsi,
    sma,
    wma,
    zscore,
)

__all__ = [
    "ADX",
    "MACD",
    "BBands",
    "Donchian",
    "adx",
    "atr",
    "bbands",
    "donchian",
    "ema",
    "macd",
    "rolling_std",
    "rsi",
    "sma",
    "wma",
    "zscore",
]

"""Numba kernel of :meth:`celeris.models.features.FeatureSpec.last_windows`: the indicator
features of many symbols at once.

One call computes every indicator feature of every symbol (rows of ``[A, T]`` arrays) with the
very column kernels of :mod:`celeris.indicators.nb` that ``celeris.indicators.rsi`` & co. run
for one series, and keeps the last ``L`` bars of each. The elementwise parts of the features
(``log``, divisions, ``(rsi - 50) / 50``) stay in numpy in the wrapper, where the per-symbol
path (:func:`celeris.models.data.feature_frame`) computes them too, so both paths are the same
floating-point operations on the same values.

A symbol shorter than the longest is left-padded with NaN: every indicator kernel starts at
the first bar where its inputs are valid and counts its warm-up from there, so padding changes
nothing (bit for bit, tested).

The calling API lives in :mod:`celeris.models.features`; this module only takes arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from celeris.indicators.nb import (
    _STD,
    _ZSCORE,
    _atr_col_nb,
    _ema_seeded_nb,
    _moments_col_nb,
    _nan_outside,
    _rsi_col_nb,
    _sma_col_nb,
    true_range_nb,
    valid_span_nb,
)

# Indicator codes (``kinds``), one per windowed feature of celeris.models.data.FEATURES.
RSI = 0
ZSCORE = 1
ATR = 2
SMA = 3
EMA = 4
VOLATILITY = 5


@njit(cache=True, nogil=True)
def _ema_col_nb(x, start, stop, w, out):
    # the body of celeris.indicators.nb.ema_nb for one window
    first = start + w - 1
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    _ema_seeded_nb(x, first, w, stop, out)


@njit(cache=True, nogil=True)
def last_indicators_nb(kinds, windows, close, high, low, log_return, length, out):
    """Fill ``out[j, a, :]`` with the last ``length`` bars of indicator ``kinds[j]`` (window
    ``windows[j]``) of symbol ``a``.

    Parameters
    ----------
    kinds, windows : int64 ``[F]``
        Indicator codes (:data:`RSI` ...) and their windows.
    close, high, low, log_return : float64 ``[A, T]``
        Rows are symbols (C order), oldest bar first, NaN-padded on the left. ``high`` and
        ``low`` are read for ATR only, ``log_return`` (``log(close_t / close_{t-1})``, NaN on a
        symbol's first bar) for the volatility only: pass ``[A, 0]``-shaped arrays when unused.
    length : int
        Bars kept per symbol (``L <= T``).
    out : float64 ``[F, A, L]``
        Same values as ``rsi_nb(close[a], windows)[-L:, 0]`` (``zscore_nb``, ``atr_nb``,
        ``sma_nb``, ``ema_nb``; ``rolling_std_nb(log_return[a], windows, 0)`` for the
        volatility).
    """
    n_assets, n_bars = close.shape
    col = np.empty(n_bars)
    lo = n_bars - length
    for a in range(n_assets):
        x = close[a]
        start, stop = valid_span_nb(x)
        for j in range(kinds.shape[0]):
            kind = kinds[j]
            w = windows[j]
            if kind == RSI:
                _rsi_col_nb(x, start, stop, w, col)
            elif kind == ZSCORE:
                _moments_col_nb(x, start, stop, w, _ZSCORE, 0.0, 0.0, col, col, col)
            elif kind == ATR:
                h = high[a]
                lw = low[a]
                s, e = valid_span_nb(h + lw + x)
                tr = true_range_nb(h, lw, x)
                _atr_col_nb(tr, s, e, w, col)
            elif kind == SMA:
                _sma_col_nb(x, start, stop, w, col)
            elif kind == EMA:
                _ema_col_nb(x, start, stop, w, col)
            else:  # VOLATILITY: rolling std (ddof 0) of the log returns
                r = log_return[a]
                s, e = valid_span_nb(r)
                _moments_col_nb(r, s, e, w, _STD, 0.0, 0.0, col, col, col)
            for t in range(length):
                out[j, a, t] = col[lo + t]
    return out

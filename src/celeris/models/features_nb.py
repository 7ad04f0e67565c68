"""Numba kernel of :meth:`celeris.models.features.FeatureSpec.last_windows`: the indicator
features of many symbols at once.

One call computes every indicator feature of every symbol (time-major ``[T, fields, A]`` bars,
the live loop's layout) and keeps the last ``L`` bars of each. Each column runs the very column kernel of
:mod:`celeris.indicators.nb` that ``celeris.indicators.rsi`` & co. run for one series, with one
exception for speed: the recursive features (RSI, ATR, EMA) of a block of bars without a NaN
run across the symbols, bar by bar (:func:`_rsi_across_nb` ...): the same floating-point
operations on the same values in the same order per symbol as the column kernel, but 100
independent recursions interleaved instead of one at a time, which the CPU overlaps (RSI of
100 symbols x 542 bars: 0.07 ms vs 0.5). Tests hold the two equal bit for bit.

The elementwise parts of the features (``log``, divisions, ``(rsi - 50) / 50``) stay in numpy
in the wrapper, where the per-symbol path (:func:`celeris.models.data.feature_frame`) computes
them too, so both paths are the same floating-point operations on the same values.

A symbol shorter than the longest is top-padded with NaN: every indicator kernel starts at
the first bar where its inputs are valid and counts its warm-up from there, so padding changes
nothing (bit for bit, tested).

Feature ``j`` is computed over the bars ``starts[j]:`` only, as if the bars before were not
there (``starts`` all 0: every bar). The bounded windows of the live loop use it to compute
each feature over the bars its value needs (``FeatureSpec.bars_settled``).

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
def _span3_nb(high, low, close):
    # valid_span_nb(high + low + close) without the temporary sum
    n = close.shape[0]
    start = n
    for i in range(n):
        if not np.isnan(high[i] + low[i] + close[i]):
            start = i
            break
    stop = n
    for i in range(start + 1, n):
        if np.isnan(high[i] + low[i] + close[i]):
            stop = i
            break
    return start, stop


@njit(cache=True, nogil=True)
def _true_range_into_nb(high, low, close, out):
    # celeris.indicators.nb.true_range_nb written into `out` (no allocation per symbol)
    n = close.shape[0]
    if n > 0:
        out[0] = np.nan
    for t in range(1, n):
        out[t] = _true_range_nb(high[t], low[t], close[t - 1])


@njit(cache=True, nogil=True, inline="always")
def _true_range_nb(high, low, prev_close):
    # one bar of celeris.indicators.nb.true_range_nb, its comparisons in its order
    greatest = high - low
    v = abs(prev_close - high)
    if v > greatest:
        greatest = v
    v = abs(prev_close - low)
    if v > greatest:
        greatest = v
    return greatest


# -- the recursive features across the symbols (a block without NaN) --------------------------


@njit(cache=True, nogil=True)
def _any_nan_nb(state):
    # NaN where any value is (or where infinities of both signs meet: then the caller redoes
    # the work by column, which gives the same values)
    return np.isnan(np.sum(state))


@njit(cache=True, nogil=True)
def _lead_nan_nb(out, lo, first, n):
    # NaN on the kept bars [lo, n) before the first valid one; True when no bar is valid
    for t in range(lo, min(first, n)):
        for a in range(out.shape[1]):
            out[t - lo, a] = np.nan
    return first >= n


@njit(cache=True, nogil=True)
def _rsi_across_nb(bars, ic, s0, w, out, gain, loss):
    # _rsi_col_nb over bars[s0:, ic, a] for every a, bars outer, as if every bar were valid; False
    # when one was NaN (then `out` is not the column kernel's: the caller runs that)
    n = bars.shape[0]
    n_assets = bars.shape[2]
    lo = n - out.shape[0]
    first = s0 + w
    if _lead_nan_nb(out, lo, first, n):
        return True
    for a in range(n_assets):
        gain[a] = 0.0
        loss[a] = 0.0
    for t in range(s0 + 1, first + 1):
        for a in range(n_assets):
            d = bars[t, ic, a] - bars[t - 1, ic, a]
            if d < 0.0:
                loss[a] -= d
            else:
                gain[a] += d
    for a in range(n_assets):
        gain[a] /= w
        loss[a] /= w
        if first >= lo:
            total = gain[a] + loss[a]
            out[first - lo, a] = 100.0 * (gain[a] / total) if total != 0.0 else 0.0
    for t in range(first + 1, n):
        for a in range(n_assets):
            d = bars[t, ic, a] - bars[t - 1, ic, a]
            lo_ss = loss[a] * (w - 1)
            g = gain[a] * (w - 1)
            if d < 0.0:
                lo_ss -= d
            else:
                g += d
            lo_ss /= w
            g /= w
            loss[a] = lo_ss
            gain[a] = g
            if t >= lo:
                total = g + lo_ss
                out[t - lo, a] = 100.0 * (g / total) if total != 0.0 else 0.0
    # a NaN bar makes its change NaN, and gain or loss NaN from there on
    return not (_any_nan_nb(gain) or _any_nan_nb(loss))


@njit(cache=True, nogil=True)
def _atr_across_nb(bars, ih, il, ic, s0, w, out, prev, seen):
    # true range, then _atr_col_nb over the bars s0: of every symbol, bars outer, as if every
    # bar were valid; False when one was NaN (`seen`: a NaN-sticky sum of high + low + close)
    n = bars.shape[0]
    n_assets = bars.shape[2]
    lo = n - out.shape[0]
    first = s0 + w
    if _lead_nan_nb(out, lo, first, n):
        return True
    for a in range(n_assets):
        prev[a] = 0.0
        seen[a] = bars[s0, ih, a] + bars[s0, il, a] + bars[s0, ic, a]
    for t in range(s0 + 1, first + 1):
        for a in range(n_assets):
            prev[a] += _true_range_nb(bars[t, ih, a], bars[t, il, a], bars[t - 1, ic, a])
            seen[a] += bars[t, ih, a] + bars[t, il, a] + bars[t, ic, a]
    for a in range(n_assets):
        prev[a] = prev[a] / w
        if first >= lo:
            out[first - lo, a] = prev[a]
    for t in range(first + 1, n):
        for a in range(n_assets):
            p = prev[a] * (w - 1)
            p += _true_range_nb(bars[t, ih, a], bars[t, il, a], bars[t - 1, ic, a])
            p /= w
            prev[a] = p
            seen[a] += bars[t, ih, a] + bars[t, il, a] + bars[t, ic, a]
            if t >= lo:
                out[t - lo, a] = p
    return not _any_nan_nb(seen)


@njit(cache=True, nogil=True)
def _ema_across_nb(bars, ic, s0, w, out, prev):
    # _ema_col_nb over bars[s0:, ic, a] for every a, bars outer, as if every bar were valid; False
    # when one was NaN (which the EMA carries from its bar on)
    n = bars.shape[0]
    n_assets = bars.shape[2]
    lo = n - out.shape[0]
    first = s0 + w - 1
    if _lead_nan_nb(out, lo, first, n):
        return True
    for a in range(n_assets):
        prev[a] = 0.0
    for t in range(first - w + 1, first + 1):
        for a in range(n_assets):
            prev[a] += bars[t, ic, a]
    for a in range(n_assets):
        prev[a] = prev[a] / w
        if first >= lo:
            out[first - lo, a] = prev[a]
    k = 2.0 / (w + 1)
    for t in range(first + 1, n):
        for a in range(n_assets):
            p = (bars[t, ic, a] - prev[a]) * k + prev[a]
            prev[a] = p
            if t >= lo:
                out[t - lo, a] = p
    return not _any_nan_nb(prev)


# -- one column --------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _column_nb(kind, w, s0, a, bars, ih, il, ic, log_return, col, tr):
    # The column kernel of indicator `kind` for symbol `a` over the bars s0: into col[:n - s0].
    m = bars.shape[0] - s0
    x = bars[s0:, ic, a]
    c = col[:m]
    if kind == RSI:
        start, stop = valid_span_nb(x)
        _rsi_col_nb(x, start, stop, w, c)
    elif kind == ZSCORE:
        start, stop = valid_span_nb(x)
        _moments_col_nb(x, start, stop, w, _ZSCORE, 0.0, 0.0, c, c, c)
    elif kind == ATR:
        h = bars[s0:, ih, a]
        lw = bars[s0:, il, a]
        start, stop = _span3_nb(h, lw, x)
        t_r = tr[:m]
        _true_range_into_nb(h, lw, x, t_r)
        _atr_col_nb(t_r, start, stop, w, c)
    elif kind == SMA:
        start, stop = valid_span_nb(x)
        _sma_col_nb(x, start, stop, w, c)
    elif kind == EMA:
        start, stop = valid_span_nb(x)
        _ema_col_nb(x, start, stop, w, c)
    else:  # VOLATILITY: rolling std (ddof 0) of the log returns
        r = log_return[s0:, a]
        if s0 > 0:
            # the first log return of the bars s0: reads the bar before them: not there
            start, stop = valid_span_nb(r[1:])
            start += 1
            stop += 1
        else:
            start, stop = valid_span_nb(r)
        _moments_col_nb(r, start, stop, w, _STD, 0.0, 0.0, c, c, c)


@njit(cache=True, nogil=True)
def last_indicators_nb(kinds, windows, starts, bars, fields, log_return, out):
    """Fill ``out[j, :, a]`` with the last ``L = out.shape[1]`` bars of indicator ``kinds[j]``
    (window ``windows[j]``) of symbol ``a``, computed over its bars ``starts[j]:``.

    Parameters
    ----------
    kinds, windows, starts : int64 ``[F]``
        Indicator codes (:data:`RSI` ...), their windows, and the first bar each is computed
        from (``0 <= starts[j] <= T - L``; 0: every bar).
    bars : float64 ``[T, K, A]``
        Time-major bars, C order (the live loop's ``[T, 5, A]`` history as it is): field ``k``
        of symbol ``a`` is ``bars[:, k, a]``, oldest bar first, NaN-padded at the top.
    fields : int64 ``[3]``
        The positions of high, low and close in ``bars``'s second axis (high and low are read
        for ATR only).
    log_return : float64 ``[T, A]``
        ``log(close_t / close_{t-1})``, NaN on a symbol's first bar, read for the volatility
        only, from bar ``starts[j] + 1`` on (``[0, A]`` when unused).
    out : float64 ``[F, L, A]``
        Same values as ``rsi_nb(close[starts[j]:, a], windows)[-L:, 0]`` (``zscore_nb``,
        ``atr_nb``, ``sma_nb``, ``ema_nb``; ``rolling_std_nb`` with ddof 0 of the log returns
        of ``close[starts[j]:, a]`` for the volatility).
    """
    n_bars = bars.shape[0]
    n_assets = bars.shape[2]
    ih = fields[0]
    il = fields[1]
    ic = fields[2]
    length = out.shape[1]
    m = 0
    for j in range(starts.shape[0]):
        m = max(m, n_bars - starts[j])
    col = np.empty(m)
    tr = np.empty(m)
    state = np.empty((2, n_assets))
    seen = np.empty(n_assets)
    # Not spread over numba's threads: on the shared 2-core machine (one core busy elsewhere)
    # the symbols on two threads took 3.37 ms vs 3.51 on one (100 x 1,000 bars, by column).
    for j in range(kinds.shape[0]):
        kind = kinds[j]
        w = windows[j]
        s0 = starts[j]
        o = out[j]
        if w >= 1 and kind == RSI:
            done = _rsi_across_nb(bars, ic, s0, w, o, state[0], state[1])
        elif w >= 1 and kind == ATR:
            done = _atr_across_nb(bars, ih, il, ic, s0, w, o, state[0], seen)
        elif w >= 1 and kind == EMA:
            done = _ema_across_nb(bars, ic, s0, w, o, state[0])
        else:
            done = False
        if not done:
            lo = n_bars - s0 - length
            for a in range(n_assets):
                _column_nb(kind, w, s0, a, bars, ih, il, ic, log_return, col, tr)
                for t in range(length):
                    o[t, a] = col[lo + t]
    return out

"""Numba kernels for technical indicators, batched over windows.

Every kernel takes 1-D float64 inputs and a 1-D int64 array of windows and returns float64
arrays of shape ``(n_bars, n_windows)`` (Fortran order: each window's column is contiguous),
NaN during the warm-up. Windows are independent, so kernels run them in parallel (``prange``).
The backtest sweep engine calls these directly; pandas and validation live in
:mod:`celeris.indicators.api`.

NaN rules, shared by every kernel:

* **Leading NaN.** The indicator starts at ``start``, the first bar where every input is
  non-NaN, and its warm-up counts from there, as TA-Lib's Python wrapper does. So an
  indicator of an indicator (``rsi(sma(close))``) works.
* **A gap.** From the first NaN bar after ``start`` on (a NaN in *any* input), every output is
  NaN: a gap poisons the rest of the series, as NaN poisons TA-Lib's running sums.
* Inputs are otherwise finite (the wrappers reject ``inf``); a window ``< 1`` gives an all-NaN
  column (the wrappers reject it).

Running sums (SMA, WMA, rolling variance) are kept around a shift ``K`` and recomputed from
scratch every ``window`` bars, so rounding cannot accumulate over a long series (no drift)
and variance does not lose digits to ``E[x^2] - E[x]^2`` cancellation. The cost of the
recomputation is O(window) once per window, i.e. O(1) per bar.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Windows up to this size get an exact two-pass variance on every bar: the shifted running sums
# lose relative accuracy when a short window is flat compared with the bars just before it.
_EXACT_VARIANCE_MAX_WINDOW = 16


# ----------------------------------------------------------------------------------------------
# shared helpers


@njit(cache=True, nogil=True)
def valid_span_nb(x):
    """Return ``(start, stop)``: the first non-NaN bar and the first NaN bar after it.

    Outputs can only be non-NaN on bars ``start <= t < stop``; ``start == stop == len(x)`` when
    every value is NaN. For several inputs pass their sum (NaN where any input is NaN).
    """
    n = x.shape[0]
    start = n
    for i in range(n):
        if not np.isnan(x[i]):
            start = i
            break
    stop = n
    for i in range(start + 1, n):
        if np.isnan(x[i]):
            stop = i
            break
    return start, stop


@njit(cache=True, nogil=True)
def _mean_m2_col_nb(x, start, stop, w, mean_out, m2_out, want_m2):
    # Rolling mean and, if want_m2, M2 = sum of squared deviations from the mean, over the
    # window ending at each bar of [start + w - 1, stop). mean_out/m2_out arrive NaN-filled.
    if w < 1 or start + w - 1 >= stop:
        return
    first = start + w - 1
    exact_each_bar = want_m2 and w <= _EXACT_VARIANCE_MAX_WINDOW
    k = 0.0  # shift: the window mean at the last recomputation
    s1 = 0.0  # sum of (x - k) over the window
    s2 = 0.0  # sum of (x - k)^2 over the window
    since = w  # incremental updates since the last recomputation; w forces one
    run = 0  # length of the run of equal values ending at t
    for t in range(start, stop):
        if t > start and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if t < first:
            continue
        if run >= w:
            # A flat window: exact values, and the sums are rebuilt on the next moving bar.
            mean_out[t] = x[t]
            if want_m2:
                m2_out[t] = 0.0
            since = w
            continue
        if since >= w or exact_each_bar:
            total = 0.0
            for i in range(t - w + 1, t + 1):
                total += x[i]
            k = total / w
            s1 = 0.0
            s2 = 0.0
            for i in range(t - w + 1, t + 1):
                d = x[i] - k
                s1 += d
                s2 += d * d
            since = 1
        else:
            dn = x[t] - k
            do = x[t - w] - k
            s1 += dn - do
            if want_m2:
                s2 += dn * dn - do * do
            since += 1
        mean_out[t] = k + s1 / w
        if want_m2:
            m2 = s2 - s1 * s1 / w
            m2_out[t] = m2 if m2 > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _ema_seeded_nb(x, seed_end, period, stop, out):
    # TA-Lib's EMA: seeded at seed_end with the SMA of the `period` values ending there, then
    # prev = (x - prev) * k + prev with k = 2 / (period + 1), written to out[seed_end:stop].
    total = 0.0
    for i in range(seed_end - period + 1, seed_end + 1):
        total += x[i]
    prev = total / period
    out[seed_end] = prev
    k = 2.0 / (period + 1)
    for t in range(seed_end + 1, stop):
        prev = (x[t] - prev) * k + prev
        out[t] = prev


@njit(cache=True, nogil=True)
def _nan_matrix_nb(n, k):
    # [window, bar]; kernels return its transpose, [bar, window] with contiguous columns
    return np.full((k, n), np.nan)


# ----------------------------------------------------------------------------------------------
# moving averages


@njit(cache=True, nogil=True, parallel=True)
def sma_nb(close, windows):
    """Simple moving average; same as ``talib.SMA(close, w)`` and ``close.rolling(w).mean()``.

    Lookback ``w - 1``.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    out = _nan_matrix_nb(n, windows.shape[0])
    for j in prange(windows.shape[0]):
        _mean_m2_col_nb(close, start, stop, windows[j], out[j], out[j], False)
    return out.T


@njit(cache=True, nogil=True, parallel=True)
def ema_nb(close, windows):
    """Exponential moving average with ``k = 2 / (w + 1)``, seeded with the SMA of the first
    ``w`` bars; same as ``talib.EMA(close, w)``. Lookback ``w - 1``.

    (pandas' ``close.ewm(span=w, adjust=False).mean()`` seeds with the first bar instead.)
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    out = _nan_matrix_nb(n, windows.shape[0])
    for j in prange(windows.shape[0]):
        w = windows[j]
        if w >= 1 and start + w - 1 < stop:
            _ema_seeded_nb(close, start + w - 1, w, stop, out[j])
    return out.T


@njit(cache=True, nogil=True)
def _wma_col_nb(x, start, stop, w, out):
    if w < 1 or start + w - 1 >= stop:
        return
    divider = w * (w + 1) / 2.0
    k = 0.0  # shift; WMA(x) = k + WMA(x - k) because the weights sum to `divider`
    num = 0.0  # sum of (w - j) * (x[t - j] - k), j = 0 .. w - 1
    s = 0.0  # sum of (x[t - j] - k)
    since = w
    for t in range(start + w - 1, stop):
        if since >= w:
            k = x[t]
            num = 0.0
            s = 0.0
            for j in range(w):
                y = x[t - j] - k
                num += (w - j) * y
                s += y
            since = 1
        else:
            y = x[t] - k
            num += w * y - s  # every older bar loses one unit of weight
            s += y - (x[t - w] - k)
            since += 1
        out[t] = k + num / divider


@njit(cache=True, nogil=True, parallel=True)
def wma_nb(close, windows):
    """Linearly weighted moving average (weights ``1 .. w``, newest heaviest); same as
    ``talib.WMA(close, w)`` and ``close.rolling(w).apply(lambda v: v @ arange(1, w + 1)) / (w (w + 1) / 2)``.
    Lookback ``w - 1``.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    out = _nan_matrix_nb(n, windows.shape[0])
    for j in prange(windows.shape[0]):
        _wma_col_nb(close, start, stop, windows[j], out[j])
    return out.T


# ----------------------------------------------------------------------------------------------
# dispersion


@njit(cache=True, nogil=True, parallel=True)
def rolling_std_nb(close, windows, ddof):
    """Rolling standard deviation with ``ddof`` delta degrees of freedom; same as
    ``close.rolling(w).std(ddof=ddof)`` and, for ``ddof=0``, ``talib.STDDEV(close, w, 1)``.

    Lookback ``w - 1``; NaN everywhere when ``w <= ddof``. Unlike TA-Lib, a variance below
    ``1e-8`` is not rounded to 0 (only an exactly flat window gives exactly 0), so the result
    scales with the prices.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    k = windows.shape[0]
    out = _nan_matrix_nb(n, k)
    for j in prange(k):
        w = windows[j]
        if w - ddof < 1:
            continue
        mean = np.full(n, np.nan)
        _mean_m2_col_nb(close, start, stop, w, mean, out[j], True)
        col = out[j]
        for t in range(start + w - 1, stop):
            col[t] = np.sqrt(col[t] / (w - ddof))
    return out.T


@njit(cache=True, nogil=True, parallel=True)
def zscore_nb(close, windows):
    """Rolling z-score ``(close - mean) / std`` over the window ending at each bar, population
    std (``ddof=0``); same as ``(close - close.rolling(w).mean()) / close.rolling(w).std(ddof=0)``.

    Lookback ``w - 1``. NaN where the window is flat (std 0: the z-score is undefined), which
    includes every bar when ``w == 1``.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    k = windows.shape[0]
    out = _nan_matrix_nb(n, k)
    for j in prange(k):
        w = windows[j]
        if w < 1:
            continue
        mean = np.full(n, np.nan)
        m2 = np.full(n, np.nan)
        _mean_m2_col_nb(close, start, stop, w, mean, m2, True)
        col = out[j]
        for t in range(start + w - 1, stop):
            if m2[t] > 0.0:
                col[t] = (close[t] - mean[t]) / np.sqrt(m2[t] / w)
    return out.T


@njit(cache=True, nogil=True, parallel=True)
def bbands_nb(close, windows, nbdev_up, nbdev_dn):
    """Bollinger Bands ``(upper, middle, lower)``: the SMA plus ``nbdev_up`` and minus
    ``nbdev_dn`` population standard deviations; same as
    ``talib.BBANDS(close, w, nbdev_up, nbdev_dn, matype=0)``. Lookback ``w - 1``.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    k = windows.shape[0]
    upper = _nan_matrix_nb(n, k)
    middle = _nan_matrix_nb(n, k)
    lower = _nan_matrix_nb(n, k)
    for j in prange(k):
        w = windows[j]
        if w < 1:
            continue
        up = upper[j]
        mid = middle[j]
        lo = lower[j]
        _mean_m2_col_nb(close, start, stop, w, mid, lo, True)
        for t in range(start + w - 1, stop):
            std = np.sqrt(lo[t] / w)
            up[t] = mid[t] + nbdev_up * std
            lo[t] = mid[t] - nbdev_dn * std
    return upper.T, middle.T, lower.T


# ----------------------------------------------------------------------------------------------
# momentum


@njit(cache=True, nogil=True)
def _rsi_col_nb(x, start, stop, w, out):
    if w < 1 or start + w >= stop:
        return
    # Wilder's RSI exactly as TA-Lib computes it: the first average gain/loss is the plain mean
    # of the first w changes, then avg = (avg * (w - 1) + change) / w.
    gain = 0.0
    loss = 0.0
    for t in range(start + 1, start + w + 1):
        d = x[t] - x[t - 1]
        if d < 0.0:
            loss -= d
        else:
            gain += d
    gain /= w
    loss /= w
    total = gain + loss
    # No movement at all: TA-Lib's value, 0 (TA-Lib tests |total| < 1e-8; we test == 0 so the
    # RSI does not depend on the price scale).
    out[start + w] = 100.0 * (gain / total) if total != 0.0 else 0.0
    for t in range(start + w + 1, stop):
        d = x[t] - x[t - 1]
        loss *= w - 1
        gain *= w - 1
        if d < 0.0:
            loss -= d
        else:
            gain += d
        loss /= w
        gain /= w
        total = gain + loss
        out[t] = 100.0 * (gain / total) if total != 0.0 else 0.0


@njit(cache=True, nogil=True, parallel=True)
def rsi_nb(close, windows):
    """Wilder's relative strength index; same as ``talib.RSI(close, w)``. Lookback ``w``.

    0 where there was no price change over the whole smoothing memory (TA-Lib's value).
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    out = _nan_matrix_nb(n, windows.shape[0])
    for j in prange(windows.shape[0]):
        _rsi_col_nb(close, start, stop, windows[j], out[j])
    return out.T


@njit(cache=True, nogil=True, parallel=True)
def macd_nb(close, fast, slow, signal):
    """MACD ``(macd, signal, hist)`` for each combination ``(fast[j], slow[j], signal[j])``;
    same as ``talib.MACD(close, fast, slow, signal)`` when ``fast <= slow``.

    TA-Lib's alignment: both EMAs are seeded on the same bar, ``L - 1`` with
    ``L = max(fast, slow)``, each with the SMA of its own last ``period`` bars (so the fast EMA
    is *not* seeded at bar ``fast - 1``); the signal EMA of the MACD line is seeded ``signal - 1``
    bars later. All three outputs start at lookback ``L - 1 + signal - 1``. When
    ``fast > slow`` the literal ``EMA(fast) - EMA(slow)`` is returned (TA-Lib swaps them).
    """
    n = close.shape[0]
    start, stop = valid_span_nb(close)
    k = fast.shape[0]
    macd = _nan_matrix_nb(n, k)
    sig = _nan_matrix_nb(n, k)
    hist = _nan_matrix_nb(n, k)
    for j in prange(k):
        f = fast[j]
        s = slow[j]
        p = signal[j]
        if f < 1 or s < 1 or p < 1:
            continue
        a = start + max(f, s) - 1  # first bar of the MACD line
        if a + p - 1 >= stop:
            continue
        line = macd[j]
        total_f = 0.0
        for i in range(a - f + 1, a + 1):
            total_f += close[i]
        total_s = 0.0
        for i in range(a - s + 1, a + 1):
            total_s += close[i]
        ef = total_f / f
        es = total_s / s
        kf = 2.0 / (f + 1)
        ks = 2.0 / (s + 1)
        line[a] = ef - es
        for t in range(a + 1, stop):
            ef = (close[t] - ef) * kf + ef
            es = (close[t] - es) * ks + es
            line[t] = ef - es
        _ema_seeded_nb(line, a + p - 1, p, stop, sig[j])
        for t in range(a, a + p - 1):
            line[t] = np.nan  # TA-Lib emits the line only once the signal exists
        h = hist[j]
        sg = sig[j]
        for t in range(a + p - 1, stop):
            h[t] = line[t] - sg[t]
    return macd.T, sig.T, hist.T


# ----------------------------------------------------------------------------------------------
# range


@njit(cache=True, nogil=True)
def true_range_nb(high, low, close):
    """True range ``max(high - low, |high - prev close|, |low - prev close|)``; same as
    ``talib.TRANGE(high, low, close)``. NaN on bar 0 (no previous close).
    """
    n = close.shape[0]
    out = np.full(n, np.nan)
    for t in range(1, n):
        greatest = high[t] - low[t]
        v = abs(close[t - 1] - high[t])
        if v > greatest:
            greatest = v
        v = abs(close[t - 1] - low[t])
        if v > greatest:
            greatest = v
        out[t] = greatest
    return out


@njit(cache=True, nogil=True, parallel=True)
def atr_nb(high, low, close, windows):
    """Wilder's average true range; same as ``talib.ATR(high, low, close, w)``. Lookback ``w``.

    The first true range needs a previous close, so the first ATR (bar ``start + w``) is the
    plain mean of the true ranges of bars ``start + 1 .. start + w``; after that
    ``atr = (atr * (w - 1) + tr) / w``. ``w == 1`` gives the true range itself.
    """
    n = close.shape[0]
    start, stop = valid_span_nb(high + low + close)
    tr = true_range_nb(high, low, close)
    out = _nan_matrix_nb(n, windows.shape[0])
    for j in prange(windows.shape[0]):
        w = windows[j]
        if w < 1 or start + w >= stop:
            continue
        col = out[j]
        total = 0.0
        for t in range(start + 1, start + w + 1):
            total += tr[t]
        prev = total / w
        col[start + w] = prev
        for t in range(start + w + 1, stop):
            prev *= w - 1
            prev += tr[t]
            prev /= w
            col[t] = prev
    return out.T


@njit(cache=True, nogil=True, parallel=True)
def donchian_nb(high, low, windows):
    """Donchian channel ``(upper, middle, lower)``: highest high and lowest low over the window
    and their midpoint; same as ``high.rolling(w).max()``, ``(upper + lower) / 2``,
    ``low.rolling(w).min()`` (and ``talib.MAX``, ``talib.MIDPRICE``, ``talib.MIN``).

    Lookback ``w - 1``. O(n) per window with monotonic deques.
    """
    n = high.shape[0]
    start, stop = valid_span_nb(high + low)
    k = windows.shape[0]
    upper = _nan_matrix_nb(n, k)
    middle = _nan_matrix_nb(n, k)
    lower = _nan_matrix_nb(n, k)
    for j in prange(k):
        w = windows[j]
        if w < 1 or start + w - 1 >= stop:
            continue
        up = upper[j]
        mid = middle[j]
        lo = lower[j]
        # deques of bar indices, values decreasing (maxq) / increasing (minq) from the head
        maxq = np.empty(stop - start, np.int64)
        minq = np.empty(stop - start, np.int64)
        max_head = 0
        max_tail = 0
        min_head = 0
        min_tail = 0
        for t in range(start, stop):
            while max_tail > max_head and high[maxq[max_tail - 1]] <= high[t]:
                max_tail -= 1
            maxq[max_tail] = t
            max_tail += 1
            if maxq[max_head] <= t - w:
                max_head += 1
            while min_tail > min_head and low[minq[min_tail - 1]] >= low[t]:
                min_tail -= 1
            minq[min_tail] = t
            min_tail += 1
            if minq[min_head] <= t - w:
                min_head += 1
            if t >= start + w - 1:
                hi = high[maxq[max_head]]
                lw = low[minq[min_head]]
                up[t] = hi
                lo[t] = lw
                mid[t] = (hi + lw) / 2.0
    return upper.T, middle.T, lower.T

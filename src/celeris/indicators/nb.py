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

Every kernel takes an optional ``out`` (a 3-tuple for the three-output kernels): preallocated
float64 arrays of shape ``(n_bars, n_windows)``, best Fortran-ordered (``np.empty((k, n)).T``),
that are filled and returned. Allocating large outputs with numpy is markedly faster than
numba's allocator where transparent huge pages are opt-in (``madvise``): numpy asks for them.

Running sums (SMA, WMA, rolling variance) are kept around a shift ``K`` and recomputed from
scratch every ``window`` bars (every ``max(window, 512)`` for SMA and WMA), so rounding cannot
accumulate over a long series (no drift) and variance does not lose digits to
``E[x^2] - E[x]^2`` cancellation; windows up to 16 bars get an exact two-pass variance on every
bar. The recomputation costs O(window) once per block, i.e. O(1) per bar.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Windows up to this size get an exact two-pass variance on every bar: the shifted running sums
# lose relative accuracy when a short window is flat compared with the bars just before it.
_EXACT_VARIANCE_MAX_WINDOW = 16
# SMA and WMA sums are recomputed every max(window, this) bars: short windows would otherwise
# spend more time recomputing than sliding. Rounding still cannot accumulate past one block.
_MIN_RECOMPUTE_BLOCK = 512


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
def _nan_outside(col, a, b):
    # NaN on every bar outside [a, b); all of col when a >= b. Columns fill their own NaN so
    # outputs come from np.empty and each page is first touched by the thread that computes it.
    n = col.shape[0]
    if a >= b:
        a = n
        b = n
    for i in range(a):
        col[i] = np.nan
    for i in range(b, n):
        col[i] = np.nan


@njit(cache=True, nogil=True)
def _sma_col_nb(x, start, stop, w, out):
    first = start + w - 1
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    inv_w = 1.0 / w
    t = first
    while t < stop:
        # Recompute the window sum around its own mean, then slide it for one block.
        total = 0.0
        for i in range(t - w + 1, t + 1):
            total += x[i]
        k = total * inv_w
        s1 = 0.0  # sum of (x - k) over the window
        for i in range(t - w + 1, t + 1):
            s1 += x[i] - k
        out[t] = k + s1 * inv_w
        end = min(t + max(w, _MIN_RECOMPUTE_BLOCK), stop)
        for u in range(t + 1, end):
            s1 += x[u] - x[u - w]
            out[u] = k + s1 * inv_w
        t = end


# What _moments_col_nb writes: the std, the z-score, or the three Bollinger bands.
_STD = 1
_ZSCORE = 2
_BANDS = 3


@njit(cache=True, nogil=True)
def _emit_moments(mode, t, xt, mean, m2, w, a, b, o1, o2, o3):
    # a: ddof for _STD, nbdev_up for _BANDS; b: nbdev_dn for _BANDS
    if mode == _STD:
        o1[t] = np.sqrt(m2 / (w - a))
    elif mode == _ZSCORE:
        o1[t] = (xt - mean) / np.sqrt(m2 / w) if m2 > 0.0 else np.nan
    else:
        std = np.sqrt(m2 / w)
        o1[t] = mean + a * std
        o2[t] = mean
        o3[t] = mean - b * std


@njit(cache=True, nogil=True)
def _moments_col_nb(x, start, stop, w, mode, a, b, o1, o2, o3):
    # Rolling mean and M2 (sum of squared deviations from the mean) over the window ending at
    # each bar of [start + w - 1, stop), turned into the output `mode` asks for.
    first = start + w - 1
    if w < 1 or first >= stop:
        first = stop = 0
    _nan_outside(o1, first, stop)
    if mode == _BANDS:
        _nan_outside(o2, first, stop)
        _nan_outside(o3, first, stop)
    if first >= stop:
        return
    inv_w = 1.0 / w
    exact_each_bar = w <= _EXACT_VARIANCE_MAX_WINDOW
    k = 0.0  # shift: the window mean at the last recomputation
    s1 = 0.0  # sum of (x - k) over the window
    s2 = 0.0  # sum of (x - k)^2 over the window
    since = w  # incremental updates since the last recomputation; w forces one
    run = 1  # length of the run of equal values ending at t - 1
    i = first - 1
    while i > start and x[i] == x[i - 1]:
        run += 1
        i -= 1
    for t in range(first, stop):
        if t > start and x[t] == x[t - 1]:
            run += 1
        else:
            run = 1
        if run >= w:
            # A flat window: exact values; the sums are rebuilt on the next moving bar.
            _emit_moments(mode, t, x[t], x[t], 0.0, w, a, b, o1, o2, o3)
            since = w
            continue
        if since >= w or exact_each_bar:
            total = 0.0
            for i in range(t - w + 1, t + 1):
                total += x[i]
            k = total * inv_w
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
            s2 += (dn - do) * (dn + do)
            since += 1
        m2 = s2 - s1 * s1 * inv_w
        _emit_moments(mode, t, x[t], k + s1 * inv_w, m2 if m2 > 0.0 else 0.0, w, a, b, o1, o2, o3)


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
def _empty_matrix_nb(n, k):
    # [window, bar]; kernels return its transpose, [bar, window] with contiguous columns
    return np.empty((k, n))


@njit(cache=True, nogil=True)
def _check_out(out, n, k):
    if out.shape[0] != n or out.shape[1] != k:
        raise ValueError("out must have shape (n_bars, n_windows)")


@njit(cache=True, nogil=True)
def _three_outputs_nb(out, n, k):
    """Working [window, bar] matrices of a three-output kernel: fresh, or views of ``out``."""
    if out is None:
        return _empty_matrix_nb(n, k), _empty_matrix_nb(n, k), _empty_matrix_nb(n, k)
    _check_out(out[0], n, k)
    _check_out(out[1], n, k)
    _check_out(out[2], n, k)
    return out[0].T, out[1].T, out[2].T


# ----------------------------------------------------------------------------------------------
# moving averages


@njit(cache=True, nogil=True, parallel=True)
def sma_nb(close, windows, out=None):
    """Simple moving average; same as ``talib.SMA(close, w)`` and ``close.rolling(w).mean()``.

    Lookback ``w - 1``.
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        _sma_col_nb(close, start, stop, windows[j], buf[j])
    return buf.T


@njit(cache=True, nogil=True, parallel=True)
def ema_nb(close, windows, out=None):
    """Exponential moving average with ``k = 2 / (w + 1)``, seeded with the SMA of the first
    ``w`` bars; same as ``talib.EMA(close, w)``. Lookback ``w - 1``.

    (pandas' ``close.ewm(span=w, adjust=False).mean()`` seeds with the first bar instead.)
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        w = windows[j]
        first = start + w - 1
        if w < 1 or first >= stop:
            _nan_outside(buf[j], 0, 0)
            continue
        _nan_outside(buf[j], first, stop)
        _ema_seeded_nb(close, first, w, stop, buf[j])
    return buf.T


@njit(cache=True, nogil=True)
def ma_column_nb(x, start, stop, w, ema, out):
    """One moving-average column of ``x`` (valid on ``[start, stop)``) into ``out``: the SMA, or
    with ``ema`` the EMA, exactly as :func:`sma_nb` and :func:`ema_nb` compute each of theirs
    (so callers that need one column per series, such as the live loop's strategy panel, get
    the same bits)."""
    if not ema:
        _sma_col_nb(x, start, stop, w, out)
        return
    first = start + w - 1
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    _ema_seeded_nb(x, first, w, stop, out)


# A moving average's running state after its last bar (``ma_start_nb`` / ``ma_advance_nb``):
MA_VALUE = 0  # the last value
MA_REF = 1  # SMA: the block's reference (the window mean where the block began)
MA_SUM = 2  # SMA: the sum of (x - reference) over the window
MA_POS = 3  # SMA: bars since the block began
MA_STATE = 4


@njit(cache=True, nogil=True)
def ma_start_nb(x, start, stop, w, ema, need, state, out):
    """:func:`ma_column_nb` where only bars ``need`` and later are wanted (the same bits there,
    with less work), and ``state`` (``MA_*``) after the last bar: return True when
    :func:`ma_advance_nb` can continue from it (the average is valid up to the series' end).

    An SMA recomputes its window sum at the start of every block of
    ``max(w, _MIN_RECOMPUTE_BLOCK)`` bars from its first valid bar and slides it inside the
    block, so its values from ``need`` on come from the block holding ``need`` alone: it is
    computed from there (bars before it are NaN). An EMA is recursive: computed from the start.
    """
    first = start + w - 1
    if ema or w < 1 or first >= stop:
        ma_column_nb(x, start, stop, w, ema, out)
        if stop != x.shape[0] or first >= stop or w < 1:
            return False
        state[MA_VALUE] = out[stop - 1]
        return True
    block = max(w, _MIN_RECOMPUTE_BLOCK)
    at = first if need <= first else first + ((min(need, stop - 1) - first) // block) * block
    _nan_outside(out, at, stop)
    state[MA_POS] = block - 1  # so that bar `at` begins a block
    ma_advance_nb(x, at, stop, w, False, state, out)
    return stop == x.shape[0]


@njit(cache=True, nogil=True)
def ma_advance_nb(x, t0, stop, w, ema, state, out):
    """Continue a moving average from ``state`` (after bar ``t0 - 1``) over bars ``[t0, stop)``
    of ``x`` (which holds the ``w`` bars before ``t0``), writing them to ``out`` and updating
    ``state``: the very operations of :func:`ma_column_nb`, so the same bits as the whole
    column (the SMA's blocks stay anchored where :func:`ma_start_nb` found them)."""
    if ema:
        k = 2.0 / (w + 1)
        prev = state[MA_VALUE]
        for t in range(t0, stop):
            prev = (x[t] - prev) * k + prev
            out[t] = prev
        state[MA_VALUE] = prev
        return
    inv_w = 1.0 / w
    block = max(w, _MIN_RECOMPUTE_BLOCK)
    ref = state[MA_REF]
    s1 = state[MA_SUM]
    pos = int(state[MA_POS])
    for t in range(t0, stop):
        pos += 1
        if pos == block:  # a new block: recompute the window sum around its own mean
            total = 0.0
            for i in range(t - w + 1, t + 1):
                total += x[i]
            ref = total * inv_w
            s1 = 0.0
            for i in range(t - w + 1, t + 1):
                s1 += x[i] - ref
            pos = 0
        else:
            s1 += x[t] - x[t - w]
        out[t] = ref + s1 * inv_w
    state[MA_REF] = ref
    state[MA_SUM] = s1
    state[MA_POS] = pos
    if stop > t0:
        state[MA_VALUE] = out[stop - 1]


@njit(cache=True, nogil=True)
def _wma_col_nb(x, start, stop, w, out):
    first = start + w - 1
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    inv_divider = 1.0 / (w * (w + 1) / 2.0)
    t = first
    while t < stop:
        # WMA(x) = k + WMA(x - k) because the weights sum to the divider; recompute the sums
        # around k = x[t], then slide them for one block.
        k = x[t]
        num = 0.0  # sum of (w - j) * (x[t - j] - k), j = 0 .. w - 1
        s = 0.0  # sum of (x[t - j] - k)
        for j in range(w):
            y = x[t - j] - k
            num += (w - j) * y
            s += y
        out[t] = k + num * inv_divider
        end = min(t + max(w, _MIN_RECOMPUTE_BLOCK), stop)
        for u in range(t + 1, end):
            num += w * (x[u] - k) - s  # every older bar loses one unit of weight
            s += x[u] - x[u - w]
            out[u] = k + num * inv_divider
        t = end


@njit(cache=True, nogil=True, parallel=True)
def wma_nb(close, windows, out=None):
    """Linearly weighted moving average (weights ``1 .. w``, newest heaviest); same as
    ``talib.WMA(close, w)``. Lookback ``w - 1``.
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        _wma_col_nb(close, start, stop, windows[j], buf[j])
    return buf.T


# ----------------------------------------------------------------------------------------------
# dispersion


@njit(cache=True, nogil=True, parallel=True)
def rolling_std_nb(close, windows, ddof, out=None):
    """Rolling standard deviation with ``ddof`` delta degrees of freedom; same as
    ``close.rolling(w).std(ddof=ddof)`` and, for ``ddof=0``, ``talib.STDDEV(close, w, 1)``.

    Lookback ``w - 1``; NaN everywhere when ``w <= ddof``. Unlike TA-Lib, a variance below
    ``1e-8`` is not rounded to 0 (only an exactly flat window gives exactly 0), so the result
    scales with the prices.
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        w = windows[j]
        if w <= ddof:
            w = 0  # all NaN
        _moments_col_nb(close, start, stop, w, _STD, float(ddof), 0.0, buf[j], buf[j], buf[j])
    return buf.T


@njit(cache=True, nogil=True, parallel=True)
def zscore_nb(close, windows, out=None):
    """Rolling z-score ``(close - mean) / std`` over the window ending at each bar, population
    std (``ddof=0``); same as ``(close - close.rolling(w).mean()) / close.rolling(w).std(ddof=0)``.

    Lookback ``w - 1``. NaN where the window is flat (std 0: the z-score is undefined), which
    includes every bar when ``w == 1``.
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        _moments_col_nb(close, start, stop, windows[j], _ZSCORE, 0.0, 0.0, buf[j], buf[j], buf[j])
    return buf.T


@njit(cache=True, nogil=True, parallel=True)
def bbands_nb(close, windows, nbdev_up, nbdev_dn, out=None):
    """Bollinger Bands ``(upper, middle, lower)``: the SMA plus ``nbdev_up`` and minus
    ``nbdev_dn`` population standard deviations; same as
    ``talib.BBANDS(close, w, nbdev_up, nbdev_dn, matype=0)``. Lookback ``w - 1``.
    """
    start, stop = valid_span_nb(close)
    n = close.shape[0]
    k = windows.shape[0]
    upper, middle, lower = _three_outputs_nb(out, n, k)
    for j in prange(k):
        _moments_col_nb(
            close,
            start,
            stop,
            windows[j],
            _BANDS,
            nbdev_up,
            nbdev_dn,
            upper[j],
            middle[j],
            lower[j],
        )
    return upper.T, middle.T, lower.T


# ----------------------------------------------------------------------------------------------
# momentum


@njit(cache=True, nogil=True)
def _rsi_col_nb(x, start, stop, w, out):
    first = start + w
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    # Wilder's RSI exactly as TA-Lib computes it: the first average gain/loss is the plain mean
    # of the first w changes, then avg = (avg * (w - 1) + change) / w.
    gain = 0.0
    loss = 0.0
    for t in range(start + 1, first + 1):
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
    out[first] = 100.0 * (gain / total) if total != 0.0 else 0.0
    for t in range(first + 1, stop):
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
def rsi_nb(close, windows, out=None):
    """Wilder's relative strength index; same as ``talib.RSI(close, w)``. Lookback ``w``.

    0 where there was no price change over the whole smoothing memory (TA-Lib's value).
    """
    start, stop = valid_span_nb(close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        _rsi_col_nb(close, start, stop, windows[j], buf[j])
    return buf.T


@njit(cache=True, nogil=True)
def _macd_col_nb(x, start, stop, f, s, p, line, sig, hist):
    a = start + max(f, s) - 1  # first bar of the MACD line
    first = a + p - 1  # first bar of every output
    if f < 1 or s < 1 or p < 1 or first >= stop:
        first = stop = 0
    _nan_outside(line, first, stop)
    _nan_outside(sig, first, stop)
    _nan_outside(hist, first, stop)
    if first >= stop:
        return
    total_f = 0.0
    for i in range(a - f + 1, a + 1):
        total_f += x[i]
    total_s = 0.0
    for i in range(a - s + 1, a + 1):
        total_s += x[i]
    ef = total_f / f
    es = total_s / s
    kf = 2.0 / (f + 1)
    ks = 2.0 / (s + 1)
    line[a] = ef - es
    for t in range(a + 1, stop):
        ef = (x[t] - ef) * kf + ef
        es = (x[t] - es) * ks + es
        line[t] = ef - es
    _ema_seeded_nb(line, first, p, stop, sig)
    for t in range(a, first):
        line[t] = np.nan  # TA-Lib emits the line only once the signal exists
    for t in range(first, stop):
        hist[t] = line[t] - sig[t]


@njit(cache=True, nogil=True, parallel=True)
def macd_nb(close, fast, slow, signal, out=None):
    """MACD ``(macd, signal, hist)`` for each combination ``(fast[j], slow[j], signal[j])``;
    same as ``talib.MACD(close, fast, slow, signal)`` when ``fast <= slow``.

    TA-Lib's alignment: both EMAs are seeded on the same bar, ``L - 1`` with
    ``L = max(fast, slow)``, each with the SMA of its own last ``period`` bars (so the fast EMA
    is *not* seeded at bar ``fast - 1``); the signal EMA of the MACD line is seeded ``signal - 1``
    bars later. All three outputs start at lookback ``L - 1 + signal - 1``. When
    ``fast > slow`` the literal ``EMA(fast) - EMA(slow)`` is returned (TA-Lib swaps them).
    """
    start, stop = valid_span_nb(close)
    n = close.shape[0]
    k = fast.shape[0]
    line, sig, hist = _three_outputs_nb(out, n, k)
    for j in prange(k):
        _macd_col_nb(close, start, stop, fast[j], slow[j], signal[j], line[j], sig[j], hist[j])
    return line.T, sig.T, hist.T


# ----------------------------------------------------------------------------------------------
# range


@njit(cache=True, nogil=True)
def true_range_nb(high, low, close):
    """True range ``max(high - low, |high - prev close|, |low - prev close|)``; same as
    ``talib.TRANGE(high, low, close)``. NaN on bar 0 (no previous close).
    """
    n = close.shape[0]
    out = np.empty(n)
    if n > 0:
        out[0] = np.nan
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


@njit(cache=True, nogil=True)
def _atr_col_nb(tr, start, stop, w, out):
    first = start + w
    if w < 1 or first >= stop:
        _nan_outside(out, 0, 0)
        return
    _nan_outside(out, first, stop)
    total = 0.0
    for t in range(start + 1, first + 1):
        total += tr[t]
    prev = total / w
    out[first] = prev
    for t in range(first + 1, stop):
        prev *= w - 1
        prev += tr[t]
        prev /= w
        out[t] = prev


@njit(cache=True, nogil=True, parallel=True)
def atr_nb(high, low, close, windows, out=None):
    """Wilder's average true range; same as ``talib.ATR(high, low, close, w)``. Lookback ``w``.

    The first true range needs a previous close, so the first ATR (bar ``start + w``) is the
    plain mean of the true ranges of bars ``start + 1 .. start + w``; after that
    ``atr = (atr * (w - 1) + tr) / w``. ``w == 1`` gives the true range itself.
    """
    start, stop = valid_span_nb(high + low + close)
    tr = true_range_nb(high, low, close)
    if out is None:
        buf = _empty_matrix_nb(close.shape[0], windows.shape[0])
    else:
        _check_out(out, close.shape[0], windows.shape[0])
        buf = out.T  # [window, bar]
    for j in prange(windows.shape[0]):
        _atr_col_nb(tr, start, stop, windows[j], buf[j])
    return buf.T


@njit(cache=True, nogil=True)
def _block_suffix_nb(x, start, stop, w, is_max, scratch):
    # scratch[i] = max (or min) of x[i .. end of i's block], blocks of w bars from `start`
    b0 = start
    while b0 < stop:
        b1 = min(b0 + w, stop)
        acc = x[b1 - 1]
        scratch[b1 - 1] = acc
        for i in range(b1 - 2, b0 - 1, -1):
            v = x[i]
            if (v > acc) if is_max else (v < acc):
                acc = v
            scratch[i] = acc
        b0 = b1


@njit(cache=True, nogil=True)
def _block_extreme_nb(x, start, stop, w, first, is_max, scratch, out):
    # van Herk / Gil-Werman: the extreme of the window [t - w + 1, t] is the extreme of the
    # suffix of its first block (scratch) and the prefix of its last block: O(n), branch-light.
    _block_suffix_nb(x, start, stop, w, is_max, scratch)
    acc = 0.0
    pos = 0  # position of t in its block
    for t in range(start, stop):
        if pos == 0:
            acc = x[t]
        else:
            v = x[t]
            if (v > acc) if is_max else (v < acc):
                acc = v
        pos += 1
        if pos == w:
            pos = 0
        if t >= first:
            s = scratch[t - w + 1]
            out[t] = s if ((s > acc) if is_max else (s < acc)) else acc


@njit(cache=True, nogil=True)
def _donchian_col_nb(high, low, start, stop, w, up, mid, lo):
    first = start + w - 1
    if w < 1 or first >= stop:
        first = stop = 0
    _nan_outside(up, first, stop)
    _nan_outside(lo, first, stop)
    if first >= stop:
        _nan_outside(mid, 0, 0)
        return
    # `mid` serves as scratch for the block suffixes before it receives the midpoints.
    _block_extreme_nb(high, start, stop, w, first, True, mid, up)
    _block_extreme_nb(low, start, stop, w, first, False, mid, lo)
    _nan_outside(mid, first, stop)
    for t in range(first, stop):
        mid[t] = (up[t] + lo[t]) / 2.0


@njit(cache=True, nogil=True, parallel=True)
def donchian_nb(high, low, windows, out=None):
    """Donchian channel ``(upper, middle, lower)``: highest high and lowest low over the window
    and their midpoint; same as ``high.rolling(w).max()``, ``(upper + lower) / 2``,
    ``low.rolling(w).min()`` (and ``talib.MAX``, ``talib.MIDPRICE``, ``talib.MIN``).

    Lookback ``w - 1``. O(n) per window (van Herk / Gil-Werman block extremes).
    """
    start, stop = valid_span_nb(high + low)
    n = high.shape[0]
    k = windows.shape[0]
    upper, middle, lower = _three_outputs_nb(out, n, k)
    for j in prange(k):
        _donchian_col_nb(high, low, start, stop, windows[j], upper[j], middle[j], lower[j])
    return upper.T, middle.T, lower.T


# ----------------------------------------------------------------------------------------------
# trend strength


@njit(cache=True, nogil=True)
def _directional_move(high, low, close, t):
    # +DM, -DM and true range of the move from bar t - 1 to bar t (Wilder 1978, TA-Lib's rules:
    # only the larger of the two moves counts, and only when it is positive).
    up = high[t] - high[t - 1]
    down = low[t - 1] - low[t]
    plus_dm = 0.0
    minus_dm = 0.0
    if down > 0.0 and up < down:
        minus_dm = down
    elif up > 0.0 and up > down:
        plus_dm = up
    tr = high[t] - low[t]
    v = abs(high[t] - close[t - 1])
    if v > tr:
        tr = v
    v = abs(low[t] - close[t - 1])
    if v > tr:
        tr = v
    return plus_dm, minus_dm, tr


@njit(cache=True, nogil=True)
def _adx_col_nb(high, low, close, start, stop, w, adx, plus_di, minus_di):
    di_first = start + w  # the first DI needs w moves
    adx_first = start + 2 * w - 1  # the first ADX is the mean of w DX values
    if w < 2 or di_first >= stop:
        di_first = stop = 0
    _nan_outside(plus_di, di_first, stop)
    _nan_outside(minus_di, di_first, stop)
    if adx_first >= stop or di_first >= stop:
        _nan_outside(adx, 0, 0)
    else:
        _nan_outside(adx, adx_first, stop)
    if di_first >= stop:
        return
    # Wilder's smoothing, seeded TA-Lib's way: the sums of the first w - 1 moves, then
    # s = s - s / w + x for every later move.
    s_tr = 0.0
    s_p = 0.0
    s_m = 0.0
    for t in range(start + 1, di_first):
        p, m, tr = _directional_move(high, low, close, t)
        s_p += p
        s_m += m
        s_tr += tr
    p_di = 0.0
    m_di = 0.0
    total_dx = 0.0
    prev_adx = 0.0
    for t in range(di_first, stop):
        p, m, tr = _directional_move(high, low, close, t)
        s_p = s_p - s_p / w + p
        s_m = s_m - s_m / w + m
        s_tr = s_tr - s_tr / w + tr
        # No range over the smoothing memory: TA-Lib's DIs are 0 and its ADX keeps its previous
        # value (TA-Lib tests |x| < 1e-8; we test == 0 so the result does not depend on the
        # price scale).
        if s_tr != 0.0:
            p_di = 100.0 * (s_p / s_tr)
            m_di = 100.0 * (s_m / s_tr)
        else:
            p_di = 0.0
            m_di = 0.0
        plus_di[t] = p_di
        minus_di[t] = m_di
        di_sum = m_di + p_di
        has_dx = di_sum != 0.0
        dx = 100.0 * (abs(m_di - p_di) / di_sum) if has_dx else 0.0
        if t < adx_first:
            total_dx += dx
        elif t == adx_first:
            total_dx += dx
            prev_adx = total_dx / w
            adx[t] = prev_adx
        else:
            if has_dx:
                prev_adx = (prev_adx * (w - 1) + dx) / w
            adx[t] = prev_adx


@njit(cache=True, nogil=True, parallel=True)
def adx_nb(high, low, close, windows, out=None):
    """Wilder's average directional index ``(adx, plus_di, minus_di)``; same as
    ``talib.ADX``, ``talib.PLUS_DI`` and ``talib.MINUS_DI`` of ``(high, low, close, w)``.

    Lookback ``w`` for the DIs and ``2 w - 1`` for the ADX; a window below 2 gives all-NaN
    columns (TA-Lib's ADX needs ``w >= 2``). The directional movements and true ranges are
    summed over the first ``w - 1`` moves, then smoothed as ``s = s - s / w + x``;
    ``DX = 100 |+DI - -DI| / (+DI + -DI)``; the first ADX is the mean of the first ``w`` DX
    values, then ``adx = (adx (w - 1) + dx) / w``. Where the smoothed true range is exactly 0
    the DIs are 0, and where the DIs sum to 0 the ADX keeps its previous value, as in TA-Lib.
    """
    start, stop = valid_span_nb(high + low + close)
    n = close.shape[0]
    k = windows.shape[0]
    adx, plus_di, minus_di = _three_outputs_nb(out, n, k)
    for j in prange(k):
        _adx_col_nb(high, low, close, start, stop, windows[j], adx[j], plus_di[j], minus_di[j])
    return adx.T, plus_di.T, minus_di.T

"""Numba kernels that turn indicator matrices into entry/exit signal matrices.

Outputs are written column by column into Fortran-ordered bool arrays, so that each strategy
variant's signals are contiguous for the simulation kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# The indicators' own column kernel, so that a panel of symbols gets the series' exact values.
from celeris.indicators.nb import MA_VALUE, ma_advance_nb, ma_start_nb, valid_span_nb


@njit(cache=True, nogil=True, parallel=True)
def cross_signals_nb(a, a_idx, b, b_idx, entries, exits):
    """Entries where ``a`` crosses above ``b``, exits where it crosses below, per column k.

    Column k compares ``a[:, a_idx[k]]`` with ``b[:, b_idx[k]]``. A cross at bar t needs both
    values finite at t and t-1: ``a[t] > b[t] and a[t-1] <= b[t-1]`` (above) and the mirror
    (below); the first bar after a warm-up is never a cross. Same as
    ``(a > b) & (a.shift() <= b.shift())`` with NaN comparisons false.
    """
    n = a.shape[0]
    for k in prange(a_idx.shape[0]):
        ia = a_idx[k]
        ib = b_idx[k]
        entries[0, k] = False
        exits[0, k] = False
        pa = a[0, ia]
        pb = b[0, ib]
        for t in range(1, n):
            ca = a[t, ia]
            cb = b[t, ib]
            entries[t, k] = ca > cb and pa <= pb
            exits[t, k] = ca < cb and pa >= pb
            pa = ca
            pb = cb


@njit(cache=True, nogil=True, parallel=True)
def band_signals_nb(x, x_idx, lower, upper, entries, exits):
    """Entries where ``x`` crosses below ``lower[k]``, exits where it crosses above ``upper[k]``.

    Mean-reversion rule on an oscillator (e.g. RSI): ``x[t] < lower and x[t-1] >= lower`` enters,
    ``x[t] > upper and x[t-1] <= upper`` exits; NaN never crosses.
    """
    n = x.shape[0]
    for k in prange(x_idx.shape[0]):
        ix = x_idx[k]
        lo = lower[k]
        hi = upper[k]
        entries[0, k] = False
        exits[0, k] = False
        prev = x[0, ix]
        for t in range(1, n):
            cur = x[t, ix]
            entries[t, k] = cur < lo and prev >= lo
            exits[t, k] = cur > hi and prev <= hi
            prev = cur


class SignalBuffers:
    """Reusable Fortran-ordered bool matrices for signal chunks.

    A sweep asks for the same chunk width again and again; fresh 64 MB arrays per chunk cost a
    page fault per 4 KB on first touch (several seconds over a 1M-bar sweep), so the buffers are
    allocated once, at the widest chunk seen, and handed out as column-prefix views. A view is
    valid until the next :meth:`take`.
    """

    def __init__(self, n_bars: int) -> None:
        self.n_bars = n_bars
        self._pool: list[np.ndarray] = []

    def take(self, n_cols: int, count: int = 2) -> list[np.ndarray]:
        if len(self._pool) < count or self._pool[0].shape[1] < n_cols:
            width = max(n_cols, self._pool[0].shape[1] if self._pool else 0)
            self._pool = [
                np.empty((self.n_bars, width), dtype=np.bool_, order="F") for _ in range(count)
            ]
        return [buf[:, :n_cols] for buf in self._pool[:count]]


@njit(cache=True, nogil=True)
def ma_cross_panel_nb(close, fast, slow, ema, k, state, ready, entries, exits):
    """The last ``k`` bars of ``sma_cross``/``ema_cross`` (one parameter set) for many symbols
    at once: ``close`` is ``[n_symbols, n_bars]`` (rows contiguous), ``entries``/``exits``
    ``[k, n_symbols]``.

    Bit for bit what the strategies' ``prepare`` gives on each symbol's bars: the moving
    averages come from the column kernels of :mod:`celeris.indicators.nb` that ``sma_nb`` and
    ``ema_nb`` run, and the crosses follow :func:`cross_signals_nb`. ``state``
    (``[n_symbols, 2, MA_STATE]``: the fast and slow averages after bar ``n_bars - k - 1``) lets
    a symbol whose ``ready`` is True advance over the ``k`` new bars alone
    (:func:`ma_advance_nb`); the others start from the history (:func:`ma_start_nb`, computing
    only the recompute block the new bars need). Either way ``state`` and ``ready`` are left
    after the last bar. The live loop calls it every bar for every symbol (``Strategy.panel``).
    """
    n_sym, n = close.shape
    a = np.empty(n)
    b = np.empty(n)
    t0 = n - k
    need = max(t0 - 1, 0)  # the crosses of the last k bars read the bar before them
    for s in range(n_sym):
        x = close[s]
        go_on = ready[s] and t0 >= 1
        for t in range(t0, n):
            if np.isnan(x[t]):
                go_on = False
        if go_on:
            a[t0 - 1] = state[s, 0, MA_VALUE]
            b[t0 - 1] = state[s, 1, MA_VALUE]
            ma_advance_nb(x, t0, n, fast, ema, state[s, 0], a)
            ma_advance_nb(x, t0, n, slow, ema, state[s, 1], b)
        else:
            start, stop = valid_span_nb(x)
            ok_a = ma_start_nb(x, start, stop, fast, ema, need, state[s, 0], a)
            ok_b = ma_start_nb(x, start, stop, slow, ema, need, state[s, 1], b)
            ready[s] = ok_a and ok_b
        for j in range(k):
            t = n - k + j
            if t < 1:
                entries[j, s] = False
                exits[j, s] = False
                continue
            entries[j, s] = a[t] > b[t] and a[t - 1] <= b[t - 1]
            exits[j, s] = a[t] < b[t] and a[t - 1] >= b[t - 1]

"""Numba kernels of the data package: plain numpy arrays and scalars in, arrays out.

Imported lazily (numba takes a while to import), by :mod:`celeris.data.synthetic` and
:mod:`celeris.data.resample` inside the functions that need it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Status codes of check_ticks_nb: (code, first bad position).
TICKS_OK = 0
TICKS_UNSORTED = 1
TICKS_NAN_PRICE = 2
TICKS_BAD_PRICE = 3
TICKS_NAN_SIZE = 4
TICKS_BAD_SIZE = 5


@njit(cache=True, nogil=True)
def garch_variance_nb(z: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    """Return the GARCH(1,1) conditional variance path driven by standard normal shocks ``z``.

    ``h[t] = omega + alpha * eps[t-1]**2 + beta * h[t-1]`` with ``eps[t] = sqrt(h[t]) * z[t]``,
    started at the unconditional variance ``omega / (1 - alpha - beta)`` (Bollerslev 1986).
    Same as ``arch.univariate.GARCH`` simulation with the given shocks.
    """
    n = z.shape[0]
    h = np.empty(n, dtype=np.float64)
    if n == 0:
        return h
    h[0] = omega / (1.0 - alpha - beta)
    for t in range(1, n):
        h[t] = omega + (alpha * z[t - 1] * z[t - 1] + beta) * h[t - 1]
    return h


@njit(cache=True, nogil=True)
def check_ticks_nb(t: np.ndarray, price: np.ndarray, size: np.ndarray) -> tuple[int, int]:
    """Return ``(status, position)`` of the first bad tick, ``(TICKS_OK, -1)`` if all are good.

    Rules in order per tick: time not before the previous tick, price not NaN and > 0 (and
    finite), size not NaN and >= 0 (and finite).
    """
    n = t.shape[0]
    for i in range(n):
        if i > 0 and t[i] < t[i - 1]:
            return TICKS_UNSORTED, i
        p = price[i]
        if np.isnan(p):
            return TICKS_NAN_PRICE, i
        if not (p > 0.0) or np.isinf(p):
            return TICKS_BAD_PRICE, i
        s = size[i]
        if np.isnan(s):
            return TICKS_NAN_SIZE, i
        if not (s >= 0.0) or np.isinf(s):
            return TICKS_BAD_SIZE, i
    return TICKS_OK, -1


@njit(cache=True, nogil=True)
def bars_from_ticks_nb(
    t: np.ndarray, price: np.ndarray, size: np.ndarray, origin: int, width: int, max_bars: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate sorted ticks into OHLCV bars in one pass; empty bins produce no bar.

    ``t`` is int64 nanoseconds (sorted), bins are ``[origin + k*width, origin + (k+1)*width)``
    labelled by their start. Same as ``ticks.resample(width, origin=origin, closed="left",
    label="left").agg(open=first, high=max, low=min, close=last, volume=sum)`` with empty bins
    dropped. ``max_bars`` bounds the output size (number of distinct bins).
    """
    n = t.shape[0]
    label = np.empty(max_bars, dtype=np.int64)
    o = np.empty(max_bars, dtype=np.float64)
    h = np.empty(max_bars, dtype=np.float64)
    lo = np.empty(max_bars, dtype=np.float64)
    c = np.empty(max_bars, dtype=np.float64)
    v = np.empty(max_bars, dtype=np.float64)
    k = -1
    current = np.int64(0)
    for i in range(n):
        b = origin + ((t[i] - origin) // width) * width
        p = price[i]
        if k < 0 or b != current:
            k += 1
            current = b
            label[k] = b
            o[k] = p
            h[k] = p
            lo[k] = p
            c[k] = p
            v[k] = size[i]
        else:
            if p > h[k]:
                h[k] = p
            if p < lo[k]:
                lo[k] = p
            c[k] = p
            v[k] += size[i]
    m = k + 1
    return label[:m], o[:m], h[:m], lo[:m], c[:m], v[:m]

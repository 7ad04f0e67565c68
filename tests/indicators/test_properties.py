"""Property tests on the kernels: no look-ahead, warm-up length, price-scale behaviour."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeris.indicators import nb

from .helpers import assert_same_values, random_bars

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


def _w(w: int) -> np.ndarray:
    return np.array([w], dtype=np.int64)


def _macd(c: np.ndarray, w: int) -> tuple[np.ndarray, ...]:
    # fast = w, slow = w + 3, signal = max(1, w // 2): a combination that varies with w
    return nb.macd_nb(c, _w(w), _w(w + 3), _w(max(1, w // 2)))


# name -> (kernel on (high, low, close, window) giving a tuple of [n, 1] arrays, lookback(w))
Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, ...]]
KERNELS: dict[str, tuple[Kernel, Callable[[int], int]]] = {
    "sma": (lambda h, lo, c, w: (nb.sma_nb(c, _w(w)),), lambda w: w - 1),
    "ema": (lambda h, lo, c, w: (nb.ema_nb(c, _w(w)),), lambda w: w - 1),
    "wma": (lambda h, lo, c, w: (nb.wma_nb(c, _w(w)),), lambda w: w - 1),
    "rsi": (lambda h, lo, c, w: (nb.rsi_nb(c, _w(w)),), lambda w: w),
    "std": (lambda h, lo, c, w: (nb.rolling_std_nb(c, _w(w), 0),), lambda w: w - 1),
    "zscore": (lambda h, lo, c, w: (nb.zscore_nb(c, _w(w)),), lambda w: w - 1),
    "bbands": (lambda h, lo, c, w: nb.bbands_nb(c, _w(w), 2.0, 1.5), lambda w: w - 1),
    "atr": (lambda h, lo, c, w: (nb.atr_nb(h, lo, c, _w(w)),), lambda w: w),
    "donchian": (lambda h, lo, c, w: nb.donchian_nb(h, lo, _w(w)), lambda w: w - 1),
    "macd": (lambda h, lo, c, w: _macd(c, w), lambda w: (w + 3 - 1) + (max(1, w // 2) - 1)),
}
LINEAR = ["sma", "ema", "wma", "std", "bbands", "atr", "donchian", "macd"]
SCALE_FREE = ["rsi", "zscore"]

prices = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def ohlc_with_gaps(draw, min_size: int = 2, max_size: int = 80):
    """(high, low, close) from arbitrary floats, sorted per bar, with up to two missing bars."""
    n = draw(st.integers(min_size, max_size))
    raw = np.array(draw(st.lists(prices, min_size=3 * n, max_size=3 * n))).reshape(3, n)
    low, close, high = np.sort(raw, axis=0)
    for pos in draw(st.sets(st.integers(0, n - 1), max_size=2)):
        high[pos] = low[pos] = close[pos] = np.nan
    return high, low, close


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("name", sorted(KERNELS))
@PROPERTY_SETTINGS
@given(
    data=ohlc_with_gaps(), cut=st.floats(0, 1), window=st.integers(1, 20), seed=st.integers(0, 99)
)
def test_kernel_changed_future_bars_past_values_unchanged(name, data, cut, window, seed):
    high, low, close = data
    n = close.shape[0]
    t = int(cut * (n - 1))  # the last bar whose outputs must not move
    kernel = KERNELS[name][0]
    before = kernel(high, low, close, window)
    rng = np.random.default_rng(seed)
    future = rng.normal(0, 1e3, (3, n - t - 1))
    h2, l2, c2 = high.copy(), low.copy(), close.copy()
    l2[t + 1 :], c2[t + 1 :], h2[t + 1 :] = np.sort(future, axis=0)
    after = kernel(h2, l2, c2, window)
    prefix = kernel(high[: t + 1], low[: t + 1], close[: t + 1], window)
    for b, a, p in zip(before, after, prefix, strict=True):
        assert _bits_equal(b[: t + 1], a[: t + 1])
        assert _bits_equal(b[: t + 1], p)


@pytest.mark.parametrize("name", sorted(KERNELS))
@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 150),
    window=st.integers(1, 150),
    leading_nan=st.integers(0, 5),
)
def test_kernel_warm_up_nan_count_equals_lookback(name, seed, n, window, leading_nan):
    bars = random_bars(seed, n)
    high, low, close = (bars[c].to_numpy().copy() for c in ("high", "low", "close"))
    for column in (high, low, close):
        column[:leading_nan] = np.nan
    kernel, lookback = KERNELS[name]
    n_nan = min(n, leading_nan + lookback(window))
    for out in kernel(high, low, close, window):
        assert out.shape == (n, 1)
        column = out[:, 0]
        assert np.isnan(column[:n_nan]).all()
        if name == "zscore" and window == 1:
            assert np.isnan(column).all()  # a one-bar window is flat: z-score undefined
        else:
            assert np.isfinite(column[n_nan:]).all()


def _scaled_pair(name: str, seed: int, n: int, window: int, scale: float):
    bars = random_bars(seed, n)
    h, lo, c = (bars[col].to_numpy().copy() for col in ("high", "low", "close"))
    kernel = KERNELS[name][0]
    return kernel(h, lo, c, window), kernel(h * scale, lo * scale, c * scale, window), c


@pytest.mark.parametrize("name", LINEAR)
@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(30, 200),
    window=st.integers(1, 25),
    scale=st.floats(1e-4, 1e4),
)
def test_kernel_scaled_prices_scales_output(name, seed, n, window, scale):
    plain, scaled, close = _scaled_pair(name, seed, n, window, scale)
    for p, s in zip(plain, scaled, strict=True):
        # MACD and std can be ~0 where rounding of prices ~1e2 is absolute: atol tracks the scale
        assert_same_values(s, p * scale, rtol=1e-9, atol=1e-12 * scale * float(close.max()))


@pytest.mark.parametrize("name", SCALE_FREE)
@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(30, 200),
    window=st.integers(2, 25),
    scale=st.floats(1e-6, 1e6),
)
def test_kernel_scaled_prices_output_unchanged(name, seed, n, window, scale):
    plain, scaled, _ = _scaled_pair(name, seed, n, window, scale)
    for p, s in zip(plain, scaled, strict=True):
        assert_same_values(s, p)


@PROPERTY_SETTINGS
@given(data=ohlc_with_gaps(min_size=5), gap=st.floats(0, 1), window=st.integers(1, 6))
def test_kernel_gap_after_first_valid_bar_nan_from_gap_on(data, gap, window):
    high, low, close = (column.copy() for column in data)
    valid = np.flatnonzero(~np.isnan(close))
    if valid.size == 0 or valid[0] == close.shape[0] - 1:
        return  # no bar after the first valid one
    pos = int(valid[0] + 1 + gap * (close.shape[0] - 2 - valid[0]))
    close[pos] = np.nan  # a NaN close alone is a gap for every indicator that reads close
    high[pos] = low[pos] = np.nan
    for name, (kernel, _) in KERNELS.items():
        for out in kernel(high, low, close, window):
            assert np.isnan(out[pos:, 0]).all(), name

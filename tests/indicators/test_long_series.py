"""A 1,000,000-bar series: running sums must not drift.

The walk spans 27 to 1e16 (log-volatility 2% a bar), so rounding picked up while prices are
huge would dwarf the later small prices if a running sum carried it along. References are
brute force (each window summed on its own), since TA-Lib's and pandas' running sums drift here.
"""

from __future__ import annotations

import numpy as np
import pytest
import talib
from numba import njit

from celeris.indicators import nb

from .helpers import assert_same_values, exact_rolling_mean_std, random_walk

WINDOWS = np.array([2, 10, 50, 300], dtype=np.int64)


@pytest.fixture(scope="module")
def long_close() -> np.ndarray:
    return random_walk(5, 1_000_000, vol=0.02)


@njit
def _plain_running_mean(x, w):
    out = np.full(x.shape[0], np.nan)
    total = 0.0
    for t in range(x.shape[0]):
        total += x[t]
        if t >= w:
            total -= x[t - w]
        if t >= w - 1:
            out[t] = total / w
    return out


def _exact_wma(x: np.ndarray, w: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    weights = np.arange(1, w + 1, dtype=np.float64) / (w * (w + 1) / 2)
    return np.r_[np.full(w - 1, np.nan), sliding_window_view(x, w) @ weights]


def test_plain_running_sum_long_series_drifts_beyond_tolerance(long_close):
    # The data is hard enough: a plain running sum fails the tolerance the kernels must meet.
    mean, _ = exact_rolling_mean_std(long_close, 10)
    with pytest.raises(AssertionError):
        assert_same_values(_plain_running_mean(long_close, 10), mean)


def test_sma_std_bbands_long_series_no_drift(long_close):
    sma = nb.sma_nb(long_close, WINDOWS)
    std = nb.rolling_std_nb(long_close, WINDOWS, 0)
    upper, middle, lower = nb.bbands_nb(long_close, WINDOWS, 2.0, 1.0)
    for j, w in enumerate(WINDOWS):
        mean, sd = exact_rolling_mean_std(long_close, int(w))
        assert_same_values(sma[:, j], mean)
        assert_same_values(std[:, j], sd)
        assert_same_values(middle[:, j], mean)
        assert_same_values(upper[:, j], mean + 2.0 * sd)
        assert_same_values(lower[:, j], mean - sd)


def test_wma_long_series_no_drift(long_close):
    wma = nb.wma_nb(long_close, WINDOWS)
    for j, w in enumerate(WINDOWS):
        assert_same_values(wma[:, j], _exact_wma(long_close, int(w)))


def test_zscore_long_series_no_drift(long_close):
    z = nb.zscore_nb(long_close, WINDOWS[1:])
    for j, w in enumerate(WINDOWS[1:]):
        mean, sd = exact_rolling_mean_std(long_close, int(w))
        assert_same_values(z[:, j], (long_close - mean) / sd)


def test_recursive_indicators_long_series_match_talib(long_close):
    # EMA, RSI, ATR and MACD are recursions that forget errors, so TA-Lib is a fair reference.
    high, low = long_close * 1.01, long_close * 0.985
    ema = nb.ema_nb(long_close, WINDOWS)
    rsi = nb.rsi_nb(long_close, WINDOWS)
    atr = nb.atr_nb(high, low, long_close, WINDOWS)
    for j, w in enumerate(WINDOWS):
        assert_same_values(ema[:, j], talib.EMA(long_close, w))
        assert_same_values(rsi[:, j], talib.RSI(long_close, w))
        assert_same_values(atr[:, j], talib.ATR(high, low, long_close, w))
    ones = np.ones(1, dtype=np.int64)
    result = nb.macd_nb(long_close, 12 * ones, 26 * ones, 9 * ones)
    for got, want in zip(result, talib.MACD(long_close, 12, 26, 9), strict=True):
        assert_same_values(got[:, 0], want)


def _ma_column(seed: int, n: int, w: int, ema: bool):
    """A walk with a NaN lead, its valid span and its whole moving-average column."""
    x = random_walk(seed, n, vol=0.02)
    x[:5] = np.nan
    start, stop = nb.valid_span_nb(x)
    whole = np.empty_like(x)
    nb.ma_column_nb(x, start, stop, w, ema, whole)
    return x, start, stop, whole


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("w", [1, 7, 300, 700])
def test_ma_tail_from_any_bar_has_the_whole_columns_bits(ema, w):
    # The SMA's recompute blocks are anchored on its first valid bar: the tail computed from
    # the block holding `need` must give the same bits as the whole column (the live loop).
    x, start, stop, whole = _ma_column(11, 3_000, w, ema)
    for need in (0, 4, w + 3, 511, 512, 513 + w, 1536 + w, 2999):
        tail = np.empty_like(x)
        nb.ma_start_nb(x, start, stop, w, ema, need, np.empty(nb.MA_STATE), tail)
        np.testing.assert_array_equal(tail[need:], whole[need:], err_msg=f"need={need}")


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("w", [1, 7, 300, 700])
def test_ma_advanced_in_steps_has_the_whole_columns_bits(ema, w):
    # The live loop's moving averages: started on a history, then advanced a few bars at a time
    # from their running state, across the SMA's recompute blocks: the whole column's bits.
    x, start, _, whole = _ma_column(12, 4_000, w, ema)
    out = np.empty_like(x)
    state = np.zeros(nb.MA_STATE)
    end = 1_000
    assert nb.ma_start_nb(x[:end], start, end, w, ema, end - 1, state, out)
    np.testing.assert_array_equal(out[end - 1 : end], whole[end - 1 : end])
    for k in [1, 1, 2, 511, 1, 513, 700, 1, 3, 900, 1]:
        nb.ma_advance_nb(x, end, end + k, w, ema, state, out)
        np.testing.assert_array_equal(out[end : end + k], whole[end : end + k], err_msg=f"{end}")
        assert state[nb.MA_VALUE] == whole[end + k - 1]
        end += k

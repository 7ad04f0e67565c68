"""Parity with TA-Lib to 1e-9 (rtol and atol), NaN warm-up positions included.

Runs on the real daily S&P 500 bars and on random-walk bars, for windows from 1 and 2 up to
the whole series. TA-Lib rejects window 1 for RSI, STDDEV and BBANDS; those are checked against
their closed forms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

import celeris.indicators as ci

from .helpers import assert_same_values, random_walk

WINDOWS = [1, 2, 3, 14, 20, 200, 1000]
WINDOWS_FROM_2 = WINDOWS[1:]


def _windows(bars: pd.DataFrame, windows: list[int]) -> list[int]:
    return [*windows, len(bars) - 1, len(bars)]


def _check_columns(result: pd.DataFrame, windows: list[int], reference) -> None:
    assert list(result.columns) == windows
    for w in windows:
        assert_same_values(result[w], reference(w))


@pytest.mark.parametrize(
    ("name", "talib_func"),
    [("sma", talib.SMA), ("ema", talib.EMA), ("wma", talib.WMA)],
)
def test_moving_average_real_and_random_data_matches_talib(bars, name, talib_func):
    close = bars["close"]
    windows = _windows(bars, WINDOWS)
    result = getattr(ci, name)(close, windows)
    _check_columns(result, windows, lambda w: talib_func(close.to_numpy(), w))


def test_rsi_real_and_random_data_matches_talib(bars):
    close = bars["close"].to_numpy()
    windows = _windows(bars, WINDOWS_FROM_2)
    _check_columns(ci.rsi(bars["close"], windows), windows, lambda w: talib.RSI(close, w))


def test_rolling_std_real_and_random_data_matches_talib_stddev(bars):
    close = bars["close"].to_numpy()
    windows = _windows(bars, WINDOWS_FROM_2)
    result = ci.rolling_std(bars["close"], windows)
    _check_columns(result, windows, lambda w: talib.STDDEV(close, w, 1.0))


@pytest.mark.parametrize(("up", "dn"), [(2.0, 2.0), (1.0, 1.0), (2.5, 1.5), (0.0, 3.0)])
def test_bbands_real_and_random_data_matches_talib(bars, up, dn):
    close = bars["close"].to_numpy()
    windows = _windows(bars, WINDOWS_FROM_2)
    result = ci.bbands(bars["close"], windows, nbdev_up=up, nbdev_dn=dn)
    for w in windows:
        upper, middle, lower = talib.BBANDS(close, w, up, dn, 0)
        assert_same_values(result.upper[w], upper)
        assert_same_values(result.middle[w], middle)
        assert_same_values(result.lower[w], lower)


def test_atr_real_and_random_data_matches_talib(bars):
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    windows = _windows(bars, WINDOWS)
    _check_columns(ci.atr(bars, window=windows), windows, lambda w: talib.ATR(high, low, close, w))


def test_adx_real_and_random_data_matches_talib_adx_plus_di_minus_di(bars):
    high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
    windows = _windows(bars, WINDOWS_FROM_2)
    result = ci.adx(bars, window=windows)
    for w in windows:
        assert_same_values(result.adx[w], talib.ADX(high, low, close, w))
        assert_same_values(result.plus_di[w], talib.PLUS_DI(high, low, close, w))
        assert_same_values(result.minus_di[w], talib.MINUS_DI(high, low, close, w))


def test_adx_flat_stretch_matches_talib_zero_range_rules(sp500):
    # 40 bars without any range: TA-Lib's DIs are 0 there and its ADX holds its last value.
    frame = sp500.iloc[:300].copy()
    frame.iloc[100:140, :4] = frame.iloc[100, 3]
    high, low, close = (frame[c].to_numpy() for c in ("high", "low", "close"))
    result = ci.adx(frame, window=14)
    assert_same_values(result.adx, talib.ADX(high, low, close, 14))
    assert_same_values(result.plus_di, talib.PLUS_DI(high, low, close, 14))
    assert_same_values(result.minus_di, talib.MINUS_DI(high, low, close, 14))


@pytest.mark.parametrize(
    ("fast", "slow", "signal"),
    [(12, 26, 9), (2, 3, 2), (5, 35, 5), (12, 26, 1), (20, 20, 3), (3, 200, 50), (50, 1000, 9)],
)
def test_macd_real_and_random_data_matches_talib(bars, fast, slow, signal):
    close = bars["close"].to_numpy()
    result = ci.macd(bars["close"], fast, slow, signal)
    expected = talib.MACD(close, fast, slow, signal)
    for got, want in zip(result, expected, strict=True):
        assert_same_values(got, want)
    # TA-Lib's alignment: nothing before bar slow - 1 + signal - 1, even for the MACD line
    assert int(np.isnan(result.macd).sum()) == slow - 1 + signal - 1


def test_macd_grid_columns_match_single_calls(sp500):
    result = ci.macd(sp500, fast=[5, 12], slow=[26, 35], signal=[9, 3])
    assert result.macd.columns.names == ["fast", "slow", "signal"]
    assert len(result.macd.columns) == 8
    close = sp500["close"].to_numpy()
    for fast, slow, signal in result.macd.columns:
        expected = talib.MACD(close, fast, slow, signal)
        for got, want in zip(result, expected, strict=True):
            assert_same_values(got[(fast, slow, signal)], want)


def test_donchian_real_and_random_data_matches_talib_max_min_midprice(bars):
    high, low = bars["high"].to_numpy(), bars["low"].to_numpy()
    windows = _windows(bars, WINDOWS_FROM_2)
    result = ci.donchian(bars, window=windows)
    for w in windows:
        assert_same_values(result.upper[w], talib.MAX(high, w))
        assert_same_values(result.middle[w], talib.MIDPRICE(high, low, w))
        assert_same_values(result.lower[w], talib.MIN(low, w))


def test_window_one_closed_forms_hold(sp500):
    close = sp500["close"].to_numpy()
    change = np.diff(close)
    expected_rsi = np.r_[np.nan, np.where(change > 0, 100.0, 0.0)]
    assert_same_values(ci.rsi(close, 1), expected_rsi)
    assert_same_values(ci.rolling_std(close, 1), np.zeros_like(close))
    bands = ci.bbands(close, 1)
    for band in bands:
        assert_same_values(band, close)
    assert_same_values(ci.zscore(close, 1), np.full_like(close, np.nan))
    tr = talib.TRANGE(sp500["high"].to_numpy(), sp500["low"].to_numpy(), close)
    assert_same_values(ci.atr(sp500, window=1), tr)
    channel = ci.donchian(sp500, window=1)
    assert_same_values(channel.upper, sp500["high"])
    assert_same_values(channel.lower, sp500["low"])


# --- NaN: leading NaNs are skipped and a gap poisons the rest. TA-Lib does the same for SMA,
# EMA, BBANDS and MACD; after a gap its WMA and STDDEV resume some bars later and its RSI emits
# 0s, so for those only leading NaNs are compared here (the gap rule is tested in test_api). ---


def _gappy(seed: int) -> np.ndarray:
    close = random_walk(seed, 400)
    close[:7] = np.nan  # leading NaN: warm-up counts from bar 7
    close[250] = np.nan  # a gap: NaN from bar 250 on
    return close


@pytest.mark.parametrize(
    ("name", "talib_func"),
    [("sma", talib.SMA), ("ema", talib.EMA)],
)
@pytest.mark.parametrize("window", [2, 5, 30])
def test_nan_leading_and_gap_matches_talib(name, talib_func, window):
    close = _gappy(3)
    with pytest.warns(RuntimeWarning, match="bar 250"):
        result = getattr(ci, name)(close, window)
    expected = talib_func(close, window)
    assert_same_values(result, expected)
    assert np.isnan(result[250:]).all()
    assert np.isfinite(result[7 + window - 1 : 250]).all()


def test_nan_leading_and_gap_bbands_and_macd_match_talib():
    close = _gappy(4)
    with pytest.warns(RuntimeWarning):
        bands = ci.bbands(close, 10, 2.0, 1.0)
    for got, want in zip(bands, talib.BBANDS(close, 10, 2.0, 1.0, 0), strict=True):
        assert_same_values(got, want)
    with pytest.warns(RuntimeWarning):
        result = ci.macd(close, 5, 13, 4)
    for got, want in zip(result, talib.MACD(close, 5, 13, 4), strict=True):
        assert_same_values(got, want)


def test_nan_leading_rsi_wma_and_atr_match_talib(sp500):
    # Leading NaN only (after a gap they part, see above; TA-Lib's ATR also skips a NaN close).
    frame = sp500.iloc[:600].copy()
    frame.iloc[:5, :] = np.nan
    frame.iloc[5, 2] = np.nan  # low still missing on bar 5: ATR starts at bar 6
    high, low, close = (frame[c].to_numpy() for c in ("high", "low", "close"))
    assert_same_values(ci.rsi(close, 14), talib.RSI(close, 14))
    assert_same_values(ci.wma(close, 14), talib.WMA(close, 14))
    assert_same_values(ci.rolling_std(close, 14), talib.STDDEV(close, 14))
    result = ci.atr(frame, window=14)
    assert_same_values(result, talib.ATR(high, low, close, 14))
    assert int(result.isna().sum()) == 6 + 14
    trend = ci.adx(frame, window=14)
    assert_same_values(trend.adx, talib.ADX(high, low, close, 14))
    assert_same_values(trend.plus_di, talib.PLUS_DI(high, low, close, 14))
    assert int(trend.adx.isna().sum()) == 6 + 2 * 14 - 1

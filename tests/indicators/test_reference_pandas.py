"""Indicators without a TA-Lib twin, against pandas and a brute-force reference.

pandas' rolling ``std`` is itself off by more than 1e-9 on short windows of real prices (its
online update loses digits when a window is nearly flat), so z-score and ``ddof=1`` std are
checked against pandas on windows >= 20 and against a brute-force two-pass reference on all.
"""

from __future__ import annotations

import numpy as np
import pytest

import celeris.indicators as ci

from .helpers import assert_same_values, exact_rolling_mean_std

WINDOWS = [1, 2, 3, 14, 20, 200, 1000]


def test_donchian_real_and_random_data_matches_pandas_rolling(bars):
    windows = [*WINDOWS, len(bars)]
    result = ci.donchian(bars["high"], bars["low"], windows)
    for w in windows:
        upper = bars["high"].rolling(w).max()
        lower = bars["low"].rolling(w).min()
        assert_same_values(result.upper[w], upper)
        assert_same_values(result.middle[w], (upper + lower) / 2)
        assert_same_values(result.lower[w], lower)


@pytest.mark.parametrize("window", [20, 50, 200, 1000])
def test_zscore_real_and_random_data_matches_pandas(bars, window):
    close = bars["close"]
    rolling = close.rolling(window)
    expected = (close - rolling.mean()) / rolling.std(ddof=0)
    assert_same_values(ci.zscore(close, window), expected)


@pytest.mark.parametrize("window", [1, 2, 3, 5, 14, 20, 200, 1000])
def test_zscore_real_and_random_data_matches_two_pass_reference(bars, window):
    close = bars["close"].to_numpy()
    mean, std = exact_rolling_mean_std(close, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(std > 0, (close - mean) / std, np.nan)
    assert_same_values(ci.zscore(close, window), expected)


@pytest.mark.parametrize("window", [20, 200, 1000])
def test_rolling_std_ddof1_matches_pandas_std(bars, window):
    close = bars["close"]
    assert_same_values(ci.rolling_std(close, window, ddof=1), close.rolling(window).std())


@pytest.mark.parametrize("window", [2, 3, 5, 14, 20, 200])
@pytest.mark.parametrize("ddof", [0, 1])
def test_rolling_std_matches_two_pass_reference(bars, window, ddof):
    close = bars["close"].to_numpy()
    _, std = exact_rolling_mean_std(close, window, ddof)
    assert_same_values(ci.rolling_std(close, window, ddof=ddof), std)


def test_sma_matches_pandas_rolling_mean(bars):
    close = bars["close"]
    result = ci.sma(close, WINDOWS)
    for w in WINDOWS:
        assert_same_values(result[w], close.rolling(w).mean())

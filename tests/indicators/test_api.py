"""The pandas-facing wrappers: shapes, names, validation, NaN rules, import cost, golden values."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import celeris.indicators as ci
from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.indicators import api

from .helpers import assert_same_values, random_walk

SINGLE_INPUT = ["sma", "ema", "wma", "rsi", "rolling_std", "zscore"]


# --- output shapes and names ---


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_single_input_series_and_int_returns_named_series(sp500, name):
    result = getattr(ci, name)(sp500["close"], 20)
    assert isinstance(result, pd.Series)
    assert result.name == f"{name}_20"
    assert result.index.equals(sp500.index)


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_single_input_array_and_int_returns_array(sp500, name):
    close = sp500["close"].to_numpy()
    result = getattr(ci, name)(close, 20)
    assert isinstance(result, np.ndarray) and result.shape == close.shape
    assert_same_values(result, getattr(ci, name)(sp500["close"], 20))


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_single_input_window_list_returns_frame_with_window_columns(sp500, name):
    result = getattr(ci, name)(sp500["close"], [5, 20, 50])
    assert isinstance(result, pd.DataFrame)
    assert result.columns.name == "window"
    assert list(result.columns) == [5, 20, 50]
    assert result.index.equals(sp500.index)
    assert_same_values(result[20], getattr(ci, name)(sp500["close"], 20))


def test_array_with_window_list_returns_frame_with_range_index(sp500):
    result = ci.ema(sp500["close"].to_numpy(), (3, 9))
    assert isinstance(result, pd.DataFrame)
    assert isinstance(result.index, pd.RangeIndex) and len(result) == len(sp500)


@pytest.mark.parametrize("name", SINGLE_INPUT)
def test_single_input_bar_frame_uses_close_column(sp500, name):
    func = getattr(ci, name)
    assert_same_values(func(sp500, 14), func(sp500["close"], 14))
    capitalised = sp500.rename(columns=str.capitalize)  # 'Close' is found too
    assert_same_values(func(capitalised, 14), func(sp500["close"], 14))


def test_window_accepts_numpy_ints_and_ranges(walk):
    close = walk["close"]
    assert_same_values(ci.sma(close, np.int64(7)), ci.sma(close, 7))
    assert list(ci.sma(close, range(2, 5)).columns) == [2, 3, 4]
    assert list(ci.sma(close, np.array([4, 2])).columns) == [4, 2]


def test_bbands_returns_named_tuple_of_named_series(sp500):
    result = ci.bbands(sp500, 20)
    assert isinstance(result, ci.BBands)
    assert result._fields == ("upper", "middle", "lower")
    assert [s.name for s in result] == ["bbands_upper_20", "bbands_middle_20", "bbands_lower_20"]
    upper, middle, lower = (band.iloc[19:] for band in result)  # after the warm-up
    assert (upper >= middle).all() and (middle >= lower).all() and (upper > lower).all()
    assert_same_values(result.middle, ci.sma(sp500, 20))


def test_macd_returns_named_tuple_and_grid_multiindex(sp500):
    single = ci.macd(sp500["close"])
    assert isinstance(single, ci.MACD)
    assert [s.name for s in single] == ["macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9"]
    grid = ci.macd(sp500["close"], fast=[5, 12], slow=26, signal=[9, 4])
    assert list(grid.macd.columns) == [(5, 26, 9), (5, 26, 4), (12, 26, 9), (12, 26, 4)]
    assert grid.macd.columns.names == ["fast", "slow", "signal"]
    assert_same_values(grid.signal[(12, 26, 9)], single.signal)
    assert_same_values(grid.hist, grid.macd - grid.signal)


def test_macd_fast_above_slow_is_literal_negated_line(sp500):
    forward = ci.macd(sp500, 12, 26, 9)
    backward = ci.macd(sp500, 26, 12, 9)
    for f, b in zip(forward, backward, strict=True):
        assert_same_values(b, -f)


def test_atr_and_donchian_accept_frame_or_columns(sp500):
    h, lo, c = sp500["high"], sp500["low"], sp500["close"]
    assert_same_values(ci.atr(sp500, window=14), ci.atr(h, lo, c, 14))
    assert ci.atr(sp500, window=14).name == "atr_14"
    frame_result = ci.donchian(sp500, window=10)
    for a, b in zip(frame_result, ci.donchian(h, lo, 10), strict=True):
        assert_same_values(a, b)
    assert [s.name for s in frame_result] == [
        "donchian_upper_10",
        "donchian_middle_10",
        "donchian_lower_10",
    ]


# --- golden values on real data (last bar, 2018-12-31), also equal to TA-Lib's ---


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda b: ci.sma(b, 20), 2576.95051265),
        (lambda b: ci.ema(b, 20), 2551.034114546617),
        (lambda b: ci.wma(b, 20), 2521.0162539095236),
        (lambda b: ci.rsi(b, 14), 41.709268004721295),
        (lambda b: ci.atr(b, window=14), 61.617546444820036),
        (lambda b: ci.macd(b).macd, -65.6348287890969),
        (lambda b: ci.macd(b).signal, -61.91898750120432),
        (lambda b: ci.bbands(b).upper, 2804.4364010345616),
        (lambda b: ci.bbands(b).lower, 2349.464624265438),
        (lambda b: ci.donchian(b).middle, 2573.380005),
        (lambda b: ci.zscore(b, 20), -0.6163056104077649),
        (lambda b: ci.rolling_std(b, 20), 113.74294419228079),
    ],
)
def test_sp500_last_bar_matches_golden_value(sp500, call, expected):
    result = call(sp500)
    assert result.index[-1] == pd.Timestamp("2018-12-31")
    np.testing.assert_allclose(result.iloc[-1], expected, rtol=1e-10)
    # a rerun gives the same bits
    assert np.array_equal(result.to_numpy(), call(sp500).to_numpy(), equal_nan=True)


# --- validation at the boundary ---


def test_empty_input_raises_data_error():
    with pytest.raises(DataError, match="close is empty"):
        ci.sma(np.array([]), 1)
    with pytest.raises(DataError, match="high is empty"):
        ci.atr(pd.DataFrame({"high": [], "low": [], "close": []}, dtype=float), window=1)


@pytest.mark.parametrize(
    ("close", "message"),
    [
        # 2-D is time x assets since the 2-D input change; three dimensions are refused
        (np.ones((5, 2, 2)), r"close must be 1-D \(one series\) or 2-D \(time x assets\)"),
        (pd.Series(["a", "b", "c"]), "close must be numeric"),
        (pd.Series([True, False, True]), "close must be numeric"),
        (np.array(["1", "2"]), "close must be numeric"),
        (pd.DataFrame({"open": [1.0], "clos": [1.0]}), "no 'close' column.*did you mean 'clos'"),
    ],
)
def test_bad_close_raises_config_error_naming_it(close, message):
    with pytest.raises(ConfigError, match=message):
        ci.sma(close, 1)


def test_close_as_list_raises_type_error():
    with pytest.raises(CelerisTypeError, match="close must be a pandas Series"):
        ci.sma([1.0, 2.0, 3.0], 2)


@pytest.mark.parametrize("window", [0, -3, 11, [2, 0], [5, 11]])
def test_window_out_of_range_raises_config_error(window):
    with pytest.raises(ConfigError, match=r"window=-?\d+ is out of range"):
        ci.ema(np.arange(10.0), window)


@pytest.mark.parametrize("window", [2.0, "20", True, None, [2, 3.5], {"a": 1}])
def test_window_not_int_raises_type_error(window):
    with pytest.raises(CelerisTypeError, match="window must be an int"):
        ci.sma(np.arange(10.0), window)


@pytest.mark.parametrize(("window", "message"), [([], "empty sequence"), ([3, 4, 3], "repeats")])
def test_window_sequence_bad_raises_config_error(window, message):
    with pytest.raises(ConfigError, match=message):
        ci.wma(np.arange(10.0), window)


@pytest.mark.parametrize("param", ["fast", "slow", "signal"])
def test_macd_bad_period_raises_config_error_naming_it(param):
    with pytest.raises(ConfigError, match=f"{param}=0 is out of range"):
        ci.macd(np.arange(50.0), **{param: 0})


@pytest.mark.parametrize("param", ["nbdev_up", "nbdev_dn"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bbands_bad_nbdev_raises_config_error(param, value):
    with pytest.raises(ConfigError, match=param):
        ci.bbands(np.arange(50.0), 5, **{param: value})


def test_bbands_nbdev_not_number_raises_type_error():
    with pytest.raises(CelerisTypeError, match="nbdev_up"):
        ci.bbands(np.arange(50.0), 5, nbdev_up="2")


def test_rolling_std_window_not_above_ddof_raises_config_error():
    with pytest.raises(ConfigError, match="exceed ddof=1"):
        ci.rolling_std(np.arange(10.0), [3, 1], ddof=1)
    with pytest.raises(ConfigError, match="ddof must be >= 0, got -1"):
        ci.rolling_std(np.arange(10.0), 3, ddof=-1)
    with pytest.raises(CelerisTypeError, match="ddof"):
        ci.rolling_std(np.arange(10.0), 3, ddof=0.5)


def test_infinite_value_raises_data_error_naming_timestamp(walk):
    close = walk["close"].copy()
    close.iloc[17] = np.inf
    with pytest.raises(DataError, match=r"close is infinite at Timestamp\('2020-01-01 17:00"):
        ci.sma(close, 5)


def test_atr_mismatched_inputs_raise_data_error(walk):
    with pytest.raises(DataError, match="low has 99 bars but high has 100"):
        ci.atr(walk["high"][:100], walk["low"][:99], walk["close"][:100], 5)
    shifted = walk["low"][:100].set_axis(walk.index[1:101])
    with pytest.raises(DataError, match="different indexes"):
        ci.atr(walk["high"][:100], shifted, walk["close"][:100], 5)


def test_atr_frame_with_positional_window_raises_type_error(walk):
    with pytest.raises(CelerisTypeError, match="by keyword"):
        ci.atr(walk, 14)
    with pytest.raises(CelerisTypeError, match="by keyword"):
        ci.donchian(walk, [10, 20])


def test_atr_missing_input_raises_type_error(walk):
    with pytest.raises(CelerisTypeError, match="close is missing"):
        ci.atr(walk["high"], walk["low"], window=14)


# --- NaN rules ---


def test_leading_nan_warm_up_counts_from_first_valid_bar_without_warning():
    close = np.r_[np.full(3, np.nan), random_walk(1, 50)]
    result = ci.sma(close, 5)  # warnings are errors in this suite
    assert int(np.isnan(result).sum()) == 3 + 4
    assert_same_values(result[3:], ci.sma(close[3:], 5))


@pytest.mark.parametrize("name", [*SINGLE_INPUT, "bbands", "macd"])
def test_gap_after_first_valid_bar_warns_and_poisons_rest(walk, name):
    close = walk["close"].copy()
    close.iloc[500] = np.nan
    with pytest.warns(RuntimeWarning, match=r"close has NaN at Timestamp.*\(bar 500\)"):
        result = getattr(ci, name)(close, 5) if name != "macd" else ci.macd(close)
    outputs = result if isinstance(result, tuple) else (result,)
    clean = getattr(ci, name)(walk["close"], 5) if name != "macd" else ci.macd(walk["close"])
    clean_outputs = clean if isinstance(clean, tuple) else (clean,)
    for got, before in zip(outputs, clean_outputs, strict=True):
        assert got.iloc[500:].isna().all()
        assert_same_values(got.iloc[:500], before.iloc[:500])


@pytest.mark.parametrize("column", ["high", "low", "close"])
def test_atr_nan_in_any_input_poisons_rest(walk, column):
    # TA-Lib's ATR would skip a NaN close; a missing bar is a gap here, whichever field is NaN
    bars = walk.copy()
    bars.iloc[300, bars.columns.get_loc(column)] = np.nan
    with pytest.warns(RuntimeWarning, match="high / low / close has NaN"):
        result = ci.atr(bars, window=14)
    assert result.iloc[300:].isna().all() and result.iloc[14:300].notna().all()


def test_donchian_nan_poisons_rest(walk):
    bars = walk.copy()
    bars.iloc[300, bars.columns.get_loc("low")] = np.nan
    with pytest.warns(RuntimeWarning, match="high / low has NaN"):
        channel = ci.donchian(bars, window=10)
    for band in channel:
        assert band.iloc[300:].isna().all() and band.iloc[9:300].notna().all()


def test_all_nan_input_returns_all_nan():
    result = ci.rsi(np.full(30, np.nan), 5)
    assert np.isnan(result).all() and result.shape == (30,)


def test_flat_window_zscore_nan_and_std_zero():
    close = np.r_[np.arange(1.0, 6.0), np.full(6, 0.1)]
    assert_same_values(ci.rolling_std(close, 3)[-4:], np.zeros(4))
    assert np.isnan(ci.zscore(close, 3)[-4:]).all()
    assert np.isfinite(ci.zscore(close, 3)[2:5]).all()
    assert_same_values(ci.sma(close, 3)[-4:], np.full(4, 0.1))


def test_rsi_no_movement_returns_zero_like_talib():
    close = np.r_[np.full(10, 5.0), 6.0]
    result = ci.rsi(close, 3)
    assert_same_values(result, np.r_[np.full(3, np.nan), np.zeros(7), 100.0])


# --- packaging ---


def test_import_indicators_imports_neither_numba_nor_talib():
    code = "import sys, celeris.indicators; print('numba' in sys.modules, 'talib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_api_docstring_examples_run():
    result = doctest.testmod(api, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4
    assert result.failed == 0


# --- ADX ---


def test_adx_returns_named_tuple_of_named_series_from_frame_or_columns(sp500):
    h, lo, c = sp500["high"], sp500["low"], sp500["close"]
    result = ci.adx(sp500, window=14)
    assert isinstance(result, ci.ADX)
    assert [s.name for s in result] == ["adx_14", "plus_di_14", "minus_di_14"]
    for a, b in zip(result, ci.adx(h, lo, c, 14), strict=True):
        assert_same_values(a, b)
    assert int(result.adx.isna().sum()) == 2 * 14 - 1
    assert int(result.plus_di.isna().sum()) == 14


def test_adx_window_one_raises_config_error_naming_floor(sp500):
    with pytest.raises(ConfigError, match=r"window=1 is out of range: it must be between 2"):
        ci.adx(sp500, window=1)


@pytest.mark.parametrize("column", ["high", "low", "close"])
def test_adx_nan_in_any_input_warns_and_poisons_rest(walk, column):
    bars = walk.copy()
    bars.iloc[300, bars.columns.get_loc(column)] = np.nan
    with pytest.warns(RuntimeWarning, match="high / low / close has NaN"):
        result = ci.adx(bars, window=14)
    for line in result:
        assert line.iloc[300:].isna().all()
    assert result.adx.iloc[27:300].notna().all()

"""Time x assets (2-D) input: every indicator, per-column TA-Lib parity to 1e-9, output labels.

The assets are real daily S&P 500 and NASDAQ bars plus a random walk "listed" 300 bars later
(leading NaN), so each column has its own warm-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

import celeris.indicators as ci
from celeris.errors import ConfigError, DataError

from .helpers import assert_same_values, random_bars

WINDOWS = [2, 14, 200]
LATE = 300  # bars of NaN before the random walk starts


@pytest.fixture(scope="module")
def book() -> dict[str, pd.DataFrame]:
    """``{field: time x assets frame}`` for open, high, low, close; assets named ``symbol``."""
    from arch.data import nasdaq, sp500

    frames = {
        "SPX": sp500.load(),
        "NDX": nasdaq.load(),
    }
    index = frames["SPX"].index
    walk = random_bars(5, len(index))
    walk.index = index
    walk.iloc[:LATE] = np.nan
    out = {}
    for field in ("open", "high", "low", "close"):
        columns = {name: f[field.capitalize()].astype("float64") for name, f in frames.items()}
        columns["WALK"] = walk[field]
        frame = pd.DataFrame(columns, index=index)
        frame.columns.name = "symbol"
        out[field] = frame
    return out


def _talib_columns(book, fields, func, *args):
    """TA-Lib on each asset column: ``{asset: output or tuple of outputs}``."""
    return {
        asset: func(*(book[f][asset].to_numpy() for f in fields), *args)
        for asset in book["close"].columns
    }


SINGLE = [
    ("sma", talib.SMA, ()),
    ("ema", talib.EMA, ()),
    ("wma", talib.WMA, ()),
    ("rsi", talib.RSI, ()),
    ("rolling_std", lambda x, w: talib.STDDEV(x, w, 1.0), ()),
]


@pytest.mark.parametrize(("name", "talib_func", "extra"), SINGLE)
def test_single_input_frame_of_closes_matches_talib_per_column(book, name, talib_func, extra):
    closes = book["close"]
    result = getattr(ci, name)(closes, WINDOWS)
    assert result.shape == (len(closes), len(WINDOWS) * 3)
    assert result.columns.names == ["window", "symbol"]
    assert list(result.columns[:3]) == [(2, "SPX"), (2, "NDX"), (2, "WALK")]
    for w in WINDOWS:
        for asset in closes.columns:
            assert_same_values(result[(w, asset)], talib_func(closes[asset].to_numpy(), w))
    # the random walk's warm-up counts from its own first bar
    assert int(result[(14, "WALK")].isna().sum()) == LATE + (14 if name == "rsi" else 13)


@pytest.mark.parametrize(("name", "talib_func", "extra"), SINGLE)
def test_single_input_frame_and_int_returns_time_x_assets_frame(book, name, talib_func, extra):
    closes = book["close"]
    result = getattr(ci, name)(closes, 20)
    assert isinstance(result, pd.DataFrame)
    assert result.index.equals(closes.index) and result.columns.equals(closes.columns)
    for asset in closes.columns:
        assert_same_values(result[asset], talib_func(closes[asset].to_numpy(), 20))
        # one column at a time, 1-D, gives the same numbers
        assert_same_values(result[asset], getattr(ci, name)(closes[asset], 20))


def test_zscore_frame_matches_pandas_per_column(book):
    closes = book["close"]
    result = ci.zscore(closes, 20)
    expected = (closes - closes.rolling(20).mean()) / closes.rolling(20).std(ddof=0)
    assert_same_values(result, expected)


def test_bbands_frame_matches_talib_per_column(book):
    closes = book["close"]
    result = ci.bbands(closes, WINDOWS, 2.0, 1.5)
    for w in WINDOWS:
        for asset in closes.columns:
            want = talib.BBANDS(closes[asset].to_numpy(), w, 2.0, 1.5, 0)
            for got, band in zip(result, want, strict=True):
                assert_same_values(got[(w, asset)], band)


def test_macd_frame_grid_matches_talib_per_column(book):
    closes = book["close"]
    result = ci.macd(closes, fast=[5, 12], slow=26, signal=[9, 3])
    assert result.macd.columns.names == ["fast", "slow", "signal", "symbol"]
    assert len(result.macd.columns) == 4 * 3
    for fast, slow, signal, asset in result.macd.columns:
        want = talib.MACD(closes[asset].to_numpy(), fast, slow, signal)
        for got, line in zip(result, want, strict=True):
            assert_same_values(got[(fast, slow, signal, asset)], line)


def test_atr_donchian_adx_frames_match_talib_per_column(book):
    high, low, close = book["high"], book["low"], book["close"]
    atr = ci.atr(high, low, close, WINDOWS)
    channel = ci.donchian(high, low, WINDOWS)
    trend = ci.adx(high, low, close, WINDOWS)
    for w in WINDOWS:
        for asset in close.columns:
            h, lo, c = high[asset].to_numpy(), low[asset].to_numpy(), close[asset].to_numpy()
            assert_same_values(atr[(w, asset)], talib.ATR(h, lo, c, w))
            assert_same_values(channel.upper[(w, asset)], talib.MAX(h, w))
            assert_same_values(channel.middle[(w, asset)], talib.MIDPRICE(h, lo, w))
            assert_same_values(channel.lower[(w, asset)], talib.MIN(lo, w))
            assert_same_values(trend.adx[(w, asset)], talib.ADX(h, lo, c, w))
            assert_same_values(trend.plus_di[(w, asset)], talib.PLUS_DI(h, lo, c, w))
            assert_same_values(trend.minus_di[(w, asset)], talib.MINUS_DI(h, lo, c, w))


def test_multiasset_bar_frame_equals_separate_field_frames(book):
    bars = pd.concat(book, axis=1).swaplevel(axis=1).sort_index(axis=1)  # (symbol, field)
    assert bars.columns.nlevels == 2
    by_frame = ci.adx(bars, window=14)
    by_fields = ci.adx(book["high"], book["low"], book["close"], 14)
    for got, want in zip(by_frame, by_fields, strict=True):
        assert list(got.columns) == sorted(book["close"].columns)
        assert_same_values(got, want[got.columns])
    assert_same_values(ci.sma(bars, 20), ci.sma(book["close"], 20)[sorted(book["close"].columns)])


def test_numpy_2d_int_returns_2d_array_equal_to_frame(book):
    closes = book["close"]
    result = ci.ema(closes.to_numpy(), 30)
    assert isinstance(result, np.ndarray) and result.shape == closes.shape
    assert_same_values(result, ci.ema(closes, 30))
    h, lo, c = (book[f].to_numpy() for f in ("high", "low", "close"))
    assert_same_values(ci.atr(h, lo, c, 14), ci.atr(book["high"], book["low"], book["close"], 14))


def test_numpy_2d_window_list_returns_frame_with_position_level():
    closes = np.column_stack([np.arange(1.0, 11.0), np.arange(10.0, 0.0, -1.0)])
    result = ci.sma(closes, [2, 3])
    assert list(result.columns) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert result.columns.names == ["window", None]
    assert isinstance(result.index, pd.RangeIndex)
    assert result[(3, 1)].iloc[-1] == 2.0


def test_one_column_frame_is_one_asset_not_a_series(book):
    closes = book["close"][["SPX"]]
    result = ci.rsi(closes, 14)
    assert isinstance(result, pd.DataFrame) and list(result.columns) == ["SPX"]
    assert_same_values(result["SPX"], ci.rsi(book["close"]["SPX"], 14))


def test_gap_in_one_column_warns_naming_it_and_poisons_only_it(book):
    closes = book["close"].copy()
    closes.iloc[1000, 1] = np.nan
    with pytest.warns(RuntimeWarning, match=r"close column 'NDX' has NaN at .*\(bar 1000\)"):
        result = ci.sma(closes, 5)
    assert result["NDX"].iloc[1000:].isna().all()
    assert_same_values(result["SPX"], ci.sma(book["close"]["SPX"], 5))


def test_infinite_value_names_column_and_bar(book):
    closes = book["close"].copy()
    closes.iloc[7, 2] = np.inf
    with pytest.raises(DataError, match=r"close\['WALK'\] is infinite at .*\(bar 7\)"):
        ci.sma(closes, 5)


def test_frame_of_closes_alone_for_hlc_indicator_raises_config_error(book):
    for func in (ci.atr, ci.adx, ci.donchian):
        with pytest.raises(ConfigError, match="the frame has no 'high' column"):
            func(book["close"], window=14)


def test_mismatched_assets_raise_data_error(book):
    with pytest.raises(DataError, match="low and high have different asset columns"):
        ci.atr(book["high"], book["low"][["NDX", "SPX", "WALK"]], book["close"], 14)
    with pytest.raises(DataError, match="low has 2 asset columns but high has 3"):
        ci.donchian(book["high"], book["low"][["SPX", "NDX"]], 14)


def test_mixing_one_series_and_time_x_assets_raises_data_error(book):
    with pytest.raises(DataError, match="low is 1-D but high is 2-D"):
        ci.donchian(book["high"], book["low"]["SPX"], 14)


def test_non_numeric_asset_column_raises_config_error_naming_it(book):
    closes = book["close"].assign(TXT="x")
    with pytest.raises(ConfigError, match="close column 'TXT' must be numeric"):
        ci.sma(closes, 5)


def test_frame_without_columns_raises_data_error(book):
    with pytest.raises(DataError, match="close has no columns"):
        ci.sma(book["close"].iloc[:, :0], 5)


def test_field_symbol_frame_equals_symbol_field_frame(book):
    by_field = pd.concat(book, axis=1)  # (field, symbol), as yfinance downloads
    by_symbol = by_field.swaplevel(axis=1)
    for got, want in zip(ci.adx(by_field, window=14), ci.adx(by_symbol, window=14), strict=True):
        assert list(got.columns) == ["SPX", "NDX", "WALK"]
        assert_same_values(got, want[got.columns])


def test_multiindex_frame_without_the_field_raises_config_error(book):
    frame = pd.concat({"o": book["open"]}, axis=1)
    with pytest.raises(ConfigError, match="MultiIndex columns must have two levels"):
        ci.sma(frame, 5)


def test_multiindex_frame_with_fields_in_both_levels_raises_config_error(book):
    # symbols that are also field names: which level holds the fields cannot be told
    frame = pd.concat({"open": book["close"][["SPX"]], "close": book["open"][["SPX"]]}, axis=1)
    frame.columns = pd.MultiIndex.from_tuples([("open", "close"), ("close", "open")])
    with pytest.raises(ConfigError, match=r"both levels name bar fields .* ambiguous"):
        ci.sma(frame, 5)


def test_multiindex_frame_missing_the_field_names_the_field_level(book):
    by_symbol = pd.concat({"close": book["close"]}, axis=1).swaplevel(axis=1)  # (symbol, field)
    with pytest.raises(ConfigError, match=r"high: the frame's field level has no 'high' field"):
        ci.atr(by_symbol, window=14)


def test_panel_fields_give_the_multiasset_frame_indicators(book):
    from celeris.data import to_panel

    frame = pd.concat(book, axis=1).swaplevel(axis=1).tz_localize("UTC")  # (symbol, field)
    panel = to_panel(frame)  # WALK is listed LATE bars after the others
    assert panel.layout == "(symbol, field)"
    assert int(panel.listed["WALK"].sum()) == len(frame) - LATE
    for got, want in zip(
        ci.adx(panel.high, panel.low, panel.close, 14), ci.adx(frame, window=14), strict=True
    ):
        assert list(got.columns) == list(want.columns) == ["SPX", "NDX", "WALK"]
        assert_same_values(got, want)
    assert_same_values(ci.sma(panel.close, [5, 20]), ci.sma(book["close"], [5, 20]))

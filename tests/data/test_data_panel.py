"""Multi-asset input: :func:`celeris.data.to_panel` and the layout detection it owns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import celeris.data as cd
from celeris.data.panel import Panel, field_level, to_panel
from celeris.errors import CelerisTypeError, ConfigError, DataError

from .conftest import make_bars

N = 30


@pytest.fixture
def staggered() -> dict[str, pd.DataFrame]:
    """Three assets over 30 minutes: FULL all of it, LATE from minute 10, GONE until minute 19."""
    full = make_bars(N, seed=1)
    return {
        "FULL": full,
        "LATE": make_bars(N - 10, start="2024-01-01 00:10", seed=2),
        "GONE": make_bars(20, seed=3),
    }


def _as_multiindex(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, axis=1)  # (symbol, field), NaN where an asset has no bar


def _assert_same_panel(a: Panel, b: Panel) -> None:
    assert a.index.equals(b.index)
    assert a.symbols.equals(b.symbols)
    assert a.fields == b.fields
    for name in a.fields:
        pd.testing.assert_frame_equal(a.field(name), b.field(name), check_exact=True)
    pd.testing.assert_frame_equal(a.listed, b.listed)
    pd.testing.assert_series_equal(a.first_valid, b.first_valid)
    pd.testing.assert_series_equal(a.last_valid, b.last_valid)


# --- alignment and listing ---


def test_to_panel_staggered_listings_mark_listed_span_and_nan_outside(staggered):
    panel = to_panel(staggered)
    assert len(panel) == N and list(panel.symbols) == ["FULL", "LATE", "GONE"]
    assert panel.fields == cd.BAR_COLUMNS
    listed = panel.listed
    assert listed.dtypes.eq(bool).all()
    assert listed["FULL"].all()
    assert not listed["LATE"].iloc[:10].any() and listed["LATE"].iloc[10:].all()
    assert listed["GONE"].iloc[:20].all() and not listed["GONE"].iloc[20:].any()
    for name in panel.fields:
        frame = panel.field(name)
        assert frame.dtypes.eq(np.float64).all()
        assert frame.isna().equals(~listed)  # NaN exactly where not listed
        for sym, bars in staggered.items():
            np.testing.assert_array_equal(frame.loc[bars.index, sym], bars[name])
    assert panel.first_valid["LATE"] == staggered["LATE"].index[0]
    assert panel.last_valid["GONE"] == staggered["GONE"].index[-1]
    assert panel.last_valid["FULL"] == panel.index[-1]


def test_to_panel_index_is_union_of_timestamps_utc_named_time():
    a = make_bars(5, start="2024-01-01 00:00", freq="2min")  # even minutes 0..8
    b = make_bars(5, start="2024-01-01 00:09", freq="1min")  # 9..13
    panel = to_panel({"A": a, "B": b})
    assert panel.index.equals(a.index.append(b.index))
    assert panel.index.name == "time" and str(panel.index.tz) == "UTC"
    assert panel.index.dtype == "datetime64[ns, UTC]"


def test_to_panel_nan_inside_listed_span_raises_naming_symbol_field_timestamp(staggered):
    staggered["LATE"].iloc[4, 3] = np.nan  # close at minute 14
    with pytest.raises(
        DataError, match=r"symbol 'LATE': .*column 'close' is NaN at 2024-01-01 00:14:00\+00:00"
    ):
        to_panel(staggered)


def test_to_panel_nan_inside_span_of_multiindex_input_raises_too(staggered):
    frame = _as_multiindex(staggered)
    frame.loc[frame.index[12], ("FULL", "volume")] = np.nan
    with pytest.raises(
        DataError, match=r"symbol 'FULL': .*column 'volume' is NaN at 2024-01-01 00:12:00"
    ):
        to_panel(frame)


def test_to_panel_missing_timestamp_inside_span_raises_naming_symbol_and_timestamp(staggered):
    staggered["FULL"] = staggered["FULL"].drop(staggered["FULL"].index[7])
    with pytest.raises(
        DataError,
        match=r"symbol 'FULL' has no bar at 2024-01-01 00:07:00\+00:00, a timestamp of another",
    ):
        to_panel(staggered)


def test_to_panel_ffill_policy_carries_the_previous_bar(staggered):
    staggered["FULL"] = staggered["FULL"].drop(staggered["FULL"].index[7])
    staggered["GONE"].iloc[5, :] = np.nan
    panel = to_panel(staggered, nan_policy="ffill")
    close = panel.close
    assert close["FULL"].iloc[7] == close["FULL"].iloc[6]
    assert close["GONE"].iloc[5] == close["GONE"].iloc[4]
    assert panel.listed["FULL"].all()
    assert not close.isna().to_numpy()[panel.listed.to_numpy()].any()  # no NaN left in a span


def test_to_panel_drop_policy_leaves_nan_inside_listed_span(staggered):
    staggered["GONE"].iloc[5, 3] = np.nan
    panel = to_panel(staggered, nan_policy="drop")
    gone = panel.field("open")["GONE"]
    assert np.isnan(gone.iloc[5]) and gone.iloc[:5].notna().all() and gone.iloc[6:20].notna().all()
    assert panel.listed["GONE"].iloc[:20].all()  # still listed there, with no bar


def test_to_panel_asset_with_no_valid_bar_raises_naming_it(staggered):
    frame = _as_multiindex(staggered)
    for name in cd.BAR_COLUMNS:
        frame[("EMPTY", name)] = np.nan
    with pytest.raises(DataError, match=r"symbol 'EMPTY' has no valid bar"):
        to_panel(frame)


def test_to_panel_schema_rule_broken_inside_span_names_symbol_and_rule(staggered):
    bad = staggered["LATE"].copy()
    bad.iloc[2, bad.columns.get_loc("high")] = bad["low"].iloc[2] / 2
    staggered["LATE"] = bad
    with pytest.raises(DataError, match=r"symbol 'LATE': bar rule 'high >= low' broken"):
        to_panel(staggered)


def test_to_panel_tz_naive_index_raises_naming_the_symbol(staggered):
    staggered["GONE"] = staggered["GONE"].tz_localize(None)
    with pytest.raises(DataError, match=r"bars\['GONE'\] index is tz-naive"):
        to_panel(staggered)


# --- layouts ---


def test_to_panel_dict_and_multiindex_input_give_identical_panels(staggered):
    by_dict = to_panel(staggered)
    by_frame = to_panel(_as_multiindex(staggered))
    assert (by_dict.layout, by_frame.layout) == ("dict", "(symbol, field)")
    _assert_same_panel(by_dict, by_frame)


def test_to_panel_field_symbol_orientation_is_detected(staggered):
    frame = _as_multiindex(staggered).swaplevel(axis=1)  # (field, symbol), as yfinance gives
    panel = to_panel(frame)
    assert panel.layout == "(field, symbol)"
    _assert_same_panel(panel, to_panel(staggered))


def test_to_panel_yfinance_capitalised_fields_are_read_as_lower_case(staggered):
    frame = _as_multiindex(staggered).swaplevel(axis=1)
    frame.columns = frame.columns.set_levels(
        [f.capitalize() for f in frame.columns.levels[0]], level=0
    )  # ("Close", "AAPL") as yfinance downloads it
    assert ("Close", "FULL") in frame.columns
    panel = to_panel(frame)
    assert panel.layout == "(field, symbol)"
    _assert_same_panel(panel, to_panel(staggered))
    # (symbol, field) with capitals too; a stray "Adj Close" is left out with fields=
    sym_field = _as_multiindex(staggered)
    sym_field.columns = sym_field.columns.set_levels(
        [f.upper() for f in sym_field.columns.levels[1]], level=1
    )
    _assert_same_panel(to_panel(sym_field), to_panel(staggered))
    adj = frame[["Close"]].rename(columns={"Close": "Adj Close"}, level=0)
    with_adj = pd.concat([frame, adj], axis=1)
    panel = to_panel(with_adj, fields=["close"])
    _assert_same_panel(panel, to_panel(staggered, fields=["close"]))


def test_to_panel_one_bar_frame_is_one_asset(staggered):
    panel = to_panel(staggered["FULL"], symbol="BTC/USDT")
    assert panel.layout == "bar frame" and list(panel.symbols) == ["BTC/USDT"]
    np.testing.assert_array_equal(panel.close["BTC/USDT"], staggered["FULL"]["close"])


def test_to_panel_fields_argument_keeps_only_those_fields(staggered):
    staggered["FULL"] = staggered["FULL"].assign(trades=1.0)
    panel = to_panel(staggered, fields=["volume", "close"])
    assert panel.fields == ("close", "volume")
    with pytest.raises(ConfigError, match=r"the panel has no 'open' field; it has close, volume"):
        _ = panel.open


def test_to_panel_close_only_input_makes_a_close_panel(staggered):
    closes = {s: f[["close"]] for s, f in staggered.items()}
    panel = to_panel(closes)
    assert panel.fields == ("close",)
    _assert_same_panel(panel, to_panel(staggered, fields=["close"]))


def test_to_panel_ambiguous_layout_raises_config_error():
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    columns = pd.MultiIndex.from_tuples([("open", "close"), ("close", "open")])
    with pytest.raises(ConfigError, match=r"both levels name bar fields .* ambiguous"):
        to_panel(pd.DataFrame(1.0, index=index, columns=columns))


def test_to_panel_no_field_level_raises_config_error():
    index = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    columns = pd.MultiIndex.from_tuples([("A", "x"), ("B", "y")], names=["symbol", "what"])
    with pytest.raises(ConfigError, match=r"must have two levels.*neither level names a bar"):
        to_panel(pd.DataFrame(1.0, index=index, columns=columns))


def test_field_level_three_levels_raises_config_error():
    columns = pd.MultiIndex.from_tuples([("A", "close", 1)], names=["s", "f", "k"])
    with pytest.raises(ConfigError, match=r"must have two levels.*got 3 level\(s\)"):
        field_level(columns)


def test_field_level_partial_field_level_counts_when_the_other_has_none():
    columns = pd.MultiIndex.from_tuples([("SPX", "Close"), ("SPX", "Adj Close")])
    assert field_level(columns) == 1
    assert field_level(columns.swaplevel()) == 0


# --- bad input ---


def test_to_panel_unknown_field_raises_with_did_you_mean(staggered):
    staggered["GONE"] = staggered["GONE"].rename(columns={"close": "Close"})
    with pytest.raises(
        ConfigError, match=r"bars\['GONE'\] has the column 'Close', not a bar field \(did you mean"
    ):
        to_panel(staggered)


def test_to_panel_unknown_fields_argument_raises_with_did_you_mean(staggered):
    with pytest.raises(ConfigError, match=r"fields: 'closed' is not a bar field \(did you mean"):
        to_panel(staggered, fields=["closed"])


def test_to_panel_frame_of_closes_per_asset_gets_a_hint(staggered):
    closes = pd.DataFrame({s: f["close"] for s, f in staggered.items()})
    with pytest.raises(ConfigError, match=r"pd.concat\(\{'close': closes\}, axis=1\)"):
        to_panel(closes)
    panel = to_panel(pd.concat({"close": closes}, axis=1))  # the hint works
    assert panel.layout == "(field, symbol)" and panel.fields == ("close",)


def test_to_panel_symbol_missing_a_field_raises_naming_it(staggered):
    staggered["LATE"] = staggered["LATE"].drop(columns="volume")
    with pytest.raises(DataError, match=r"bars\['LATE'\] has no 'volume' field"):
        to_panel(staggered)


def test_to_panel_duplicate_symbol_field_column_raises_data_error(staggered):
    frame = _as_multiindex(staggered)
    frame = pd.concat([frame, frame[["LATE"]]], axis=1)
    with pytest.raises(DataError, match=r"\('LATE', 'open'\) more than once"):
        to_panel(frame)


def test_to_panel_non_string_symbol_raises_type_error(staggered):
    with pytest.raises(CelerisTypeError, match=r"symbols must be strings.*7 \(int\)"):
        to_panel({7: staggered["FULL"]})
    frame = _as_multiindex({"A": staggered["FULL"]}).rename(columns={"A": 3}, level=0)
    with pytest.raises(CelerisTypeError, match=r"symbols must be strings"):
        to_panel(frame)


def test_to_panel_wrong_input_type_raises_type_error(staggered):
    with pytest.raises(CelerisTypeError, match=r"bars is a list"):
        to_panel([staggered["FULL"]])  # type: ignore[arg-type]
    with pytest.raises(CelerisTypeError, match=r"bars\['A'\] is a Series"):
        to_panel({"A": staggered["FULL"]["close"]})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"empty dict"):
        to_panel({})


def test_to_panel_unknown_nan_policy_raises_config_error(staggered):
    with pytest.raises(ConfigError, match=r"unknown nan_policy 'fill' \(did you mean 'ffill'"):
        to_panel(staggered, nan_policy="fill")  # type: ignore[arg-type]


def test_panel_is_immutable(staggered):
    panel = to_panel(staggered)
    with pytest.raises(dataclasses.FrozenInstanceError):
        panel.fields = ("close",)  # type: ignore[misc]
    close = panel.close
    with pytest.raises(ValueError, match="read-only"):
        close.iloc[0, 0] = 1.0
    edited = close.copy()
    edited.iloc[0, 0] = 1.0  # a copy is the caller's to edit
    assert panel.close.equals(to_panel(staggered).close)


# --- property ---


@st.composite
def _staggered_panels(draw):
    n_bars = draw(st.integers(1, 40))
    n_assets = draw(st.integers(1, 4))
    grid = pd.date_range("2024-01-01", periods=n_bars, freq="h", tz="UTC", name="time")
    frames = {}
    for a in range(n_assets):
        first = draw(st.integers(0, n_bars - 1))
        last = draw(st.integers(first, n_bars - 1))
        size = last - first + 1
        price = np.array(draw(st.lists(st.floats(0.01, 1e6), min_size=size, max_size=size)))
        volume = np.array(draw(st.lists(st.floats(0.0, 1e9), min_size=size, max_size=size)))
        frames[f"S{a}"] = pd.DataFrame(
            {
                "open": price,
                "high": price * 1.5,
                "low": price / 2,
                "close": price,
                "volume": volume,
            },
            index=grid[first : last + 1],
        )
    return frames, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(_staggered_panels())
def test_to_panel_random_staggered_panels_keep_values_and_listed_span(case):
    frames, as_multiindex = case
    panel = to_panel(_as_multiindex(frames) if as_multiindex else frames)
    for sym, bars in frames.items():
        first, last = bars.index[0], bars.index[-1]
        assert panel.first_valid[sym] == first and panel.last_valid[sym] == last
        expected = (panel.index >= first) & (panel.index <= last)
        np.testing.assert_array_equal(panel.listed[sym].to_numpy(), expected)
        for name in cd.BAR_COLUMNS:
            column = panel.field(name)[sym]
            np.testing.assert_array_equal(column[expected].to_numpy(), bars[name].to_numpy())
            assert column[~expected].isna().all()


# --- real data ---


def test_to_panel_real_sp500_and_late_listed_nasdaq():
    spx = cd.load("sample:sp500")
    ndx = cd.load("sample:nasdaq").iloc[1500:]  # fakes a listing in 2004
    panel = to_panel({"SPX": spx, "NDX": ndx})
    assert panel.index.equals(spx.index)
    assert panel.first_valid["NDX"] == ndx.index[0] == pd.Timestamp("2004-12-21", tz="UTC")
    assert int(panel.listed["NDX"].sum()) == len(ndx) == len(spx) - 1500
    assert panel.close["NDX"].iloc[:1500].isna().all()
    pd.testing.assert_frame_equal(
        pd.DataFrame({f: panel.field(f)["NDX"].iloc[1500:] for f in cd.BAR_COLUMNS}),
        ndx,
        check_names=False,
        check_freq=False,
    )
    pd.testing.assert_series_equal(panel.volume["SPX"], spx["volume"], check_names=False)
    same = to_panel(_as_multiindex({"SPX": spx, "NDX": ndx}).swaplevel(axis=1))
    _assert_same_panel(panel, same)


def test_to_panel_of_a_panel_returns_it_or_selects_fields(staggered):
    panel = to_panel(staggered)
    assert to_panel(panel) is panel
    closes = to_panel(panel, fields=["close"])
    assert closes.fields == ("close",) and closes.close.equals(panel.close)
    assert closes.listed.equals(panel.listed)
    with pytest.raises(ConfigError, match=r"the panel has no 'open' field; it has close"):
        to_panel(closes, fields=["open"])

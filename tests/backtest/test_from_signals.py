"""Unit tests of from_signals: hand-computed fills, broadcasting, validation, golden values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris import CelerisTypeError, ConfigError, DataError
from celeris.backtest import STRATEGIES, from_signals
from tests.helpers import assert_values_close

IDX = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC", name="time")
CLOSE = pd.Series([10.0, 11.0, 12.0, 9.0, 10.0, 12.0], index=IDX)
ENTRIES = pd.Series([True, False, False, False, True, False], index=IDX)
EXITS = pd.Series([False, False, True, False, False, False], index=IDX)


def test_from_signals_all_in_long_fills_at_close_with_fees_and_slippage():
    pf = from_signals(
        CLOSE, ENTRIES, EXITS, init_cash=1000.0, fees=0.01, slippage=0.02, execution="close"
    )
    orders = pf.orders
    # Buy at 10 * 1.02 with all cash after 1% fees; sell at 12 * 0.98.
    buy_price = 10.0 * 1.02
    size = 1000.0 / 1.01 / buy_price
    assert_values_close(orders["price"].iloc[:2], [buy_price, 12.0 * 0.98], rtol=1e-15)
    assert_values_close(orders["size"].iloc[:2], [size, size], rtol=1e-12)
    cash_after = size * 12.0 * 0.98 * (1 - 0.01)
    trades = pf.trades
    assert trades["status"].tolist() == ["closed", "open"]
    assert_values_close(trades["pnl"].iloc[0], cash_after - 1000.0, rtol=1e-12)
    assert_values_close(pf.equity.iloc[3, 0], cash_after, rtol=1e-12)


def test_from_signals_entry_while_in_position_is_ignored_without_accumulate():
    entries = pd.Series([True, True, True, False, False, False], index=IDX)
    pf = from_signals(CLOSE, entries, None, init_cash=100.0, execution="close")
    assert len(pf.orders) == 1
    assert pf.stats()["exposure"].iloc[0] == 1.0


def test_from_signals_accumulate_adds_to_position():
    entries = pd.Series([True, True, True, False, False, False], index=IDX)
    pf = from_signals(
        CLOSE, entries, None, size=1.0, accumulate=True, init_cash=100.0, execution="close"
    )
    assert len(pf.orders) == 3
    assert_values_close(pf.equity.iloc[-1, 0], 100.0 - 33.0 + 3 * 12.0, rtol=1e-12)


def test_from_signals_next_open_fills_at_next_bar_open():
    open_ = CLOSE.shift(1).fillna(10.0) + 0.5
    pf = from_signals(CLOSE, ENTRIES, EXITS, open=open_, execution="next_open", init_cash=1000.0)
    orders = pf.orders
    assert orders["bar"].tolist() == [1, 3, 5]
    assert_values_close(orders["price"], open_.iloc[[1, 3, 5]], rtol=0)


def test_from_signals_next_open_last_bar_signal_is_not_executed():
    entries = pd.Series([False] * 5 + [True], index=IDX)
    pf = from_signals(CLOSE, entries, None, open=CLOSE, execution="next_open")
    assert len(pf.orders) == 0


def test_from_signals_stop_loss_gap_fills_at_open():
    close = pd.Series([100.0, 100.0, 80.0, 80.0], index=IDX[:4])
    open_ = pd.Series([100.0, 100.0, 85.0, 80.0], index=IDX[:4])
    low = pd.Series([100.0, 99.0, 79.0, 79.0], index=IDX[:4])
    high = pd.Series([100.0, 101.0, 86.0, 81.0], index=IDX[:4])
    entries = pd.Series([True, False, False, False], index=IDX[:4])
    pf = from_signals(
        close,
        entries,
        None,
        open=open_,
        high=high,
        low=low,
        sl_stop=0.1,
        init_cash=100.0,
        execution="close",
    )
    orders = pf.orders
    assert orders["stop"].tolist() == [False, True]
    assert orders["price"].iloc[1] == 85.0  # gapped through 90: filled at the open


def test_from_signals_trailing_stop_follows_high():
    close = pd.Series([100.0, 110.0, 120.0, 105.0], index=IDX[:4])
    entries = pd.Series([True, False, False, False], index=IDX[:4])
    pf = from_signals(
        close, entries, None, high=close, low=close, open=close, tsl_stop=0.1, execution="close"
    )
    # Peak 120 -> trail level 108; the close of 105 is below it, and the bar's open (105) gaps it.
    assert pf.orders["price"].iloc[1] == 105.0
    assert pf.orders["stop"].iloc[1]


def test_from_signals_sl_and_tsl_together_tighter_level_fires():
    close = pd.Series([100.0, 120.0, 111.0, 90.0], index=IDX[:4])
    low = pd.Series([100.0, 119.0, 100.0, 89.0], index=IDX[:4])
    entries = pd.Series([True, False, False, False], index=IDX[:4])
    pf = from_signals(
        close,
        entries,
        None,
        open=close,
        high=close,
        low=low,
        sl_stop=0.2,
        tsl_stop=0.1,
        execution="close",
    )
    # After the 120 peak the trailing level is 108 (tighter than the fixed 80): bar 2 exits at 108.
    assert pf.orders["bar"].tolist() == [0, 2]
    assert_values_close(pf.orders["price"].iloc[1], 108.0, rtol=1e-12)


def test_from_signals_parameter_list_makes_named_columns():
    pf = from_signals(CLOSE, ENTRIES, EXITS, fees=[0.0, 0.001, 0.01], execution="close")
    assert list(pf.columns) == [0.0, 0.001, 0.01]
    assert pf.columns.name == "fees"
    ev = pf.stats()["end_value"].to_numpy()
    assert ev[0] > ev[1] > ev[2]


def test_from_signals_signal_frame_columns_are_kept():
    cols = pd.MultiIndex.from_tuples([(5, 20), (10, 50)], names=["fast", "slow"])
    entries = pd.DataFrame(np.tile(ENTRIES.to_numpy()[:, None], 2), index=IDX, columns=cols)
    pf = from_signals(CLOSE, entries, EXITS, execution="close")
    assert pf.stats().index.names == ["fast", "slow"]
    assert len(pf[(10, 50)]) == 1
    with pytest.raises(KeyError, match="no column"):
        pf[(1, 2)]


def test_from_signals_does_not_modify_caller_arrays():
    close = CLOSE.to_numpy().copy()
    entries = ENTRIES.to_numpy().copy()
    from_signals(close, entries, EXITS.to_numpy(), execution="close")
    assert close.flags.writeable and entries.flags.writeable
    assert_values_close(close, CLOSE.to_numpy(), rtol=0)


BAD_INPUTS = [
    (dict(close=CLOSE.where(CLOSE != 12.0)), DataError, "NaN at 2024-01-03"),
    (dict(close=-CLOSE), DataError, "close must be finite and > 0"),
    (dict(close=CLOSE.iloc[[1, 0, 2, 3, 4, 5]]), DataError, "not sorted"),
    (
        dict(close=pd.Series(CLOSE.to_numpy(), index=IDX[[0, 0, 1, 2, 3, 4]])),
        DataError,
        "duplicate",
    ),
    (dict(close=CLOSE.iloc[:0], entries=ENTRIES.iloc[:0]), DataError, "empty"),
    (dict(entries=ENTRIES.iloc[:4]), DataError, "entries has 4 bars but close has 6"),
    (dict(entries=ENTRIES.astype(float).replace(1.0, 2.0)), DataError, "boolean"),
    (dict(entries=ENTRIES.astype(str)), CelerisTypeError, "boolean"),
    (dict(entries=ENTRIES.set_axis(IDX + pd.Timedelta("1h"))), DataError, "index does not match"),
    (dict(fees=-0.1), ConfigError, "fees must be in"),
    (dict(sl_stop=1.5), ConfigError, "sl_stop"),
    (dict(size=0.0), ConfigError, "size must be in"),
    (dict(size_type="percnt"), ConfigError, "did you mean 'percent'"),
    (dict(direction="long"), ConfigError, "unknown direction"),
    (dict(size_type="percent", size=2.0), ConfigError, "0 < size <= 1"),
    (dict(size_type="percent", size=0.5, direction="both"), ConfigError, "cannot reverse"),
    (dict(execution="next_open"), ConfigError, "needs open prices"),
    (dict(slipage=0.001), ConfigError, "did you mean 'slippage'"),
    (dict(fees=[0.1, 0.2], slippage=[0.0, 0.1, 0.2]), DataError, "cannot broadcast"),
    (dict(init_cash=np.inf), ConfigError, "init_cash must be finite"),
    (dict(freq="fortnight-ish"), ConfigError, "freq"),
    (dict(device="tpu"), ConfigError, "unknown device"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_INPUTS)
def test_from_signals_bad_input_raises_clear_error(overrides, error, message):
    kwargs = dict(close=CLOSE, entries=ENTRIES, exits=EXITS, execution="close") | overrides
    with pytest.raises(error, match=message):
        from_signals(**kwargs)


def test_from_signals_nat_in_close_index_raises_naming_its_position():
    close = CLOSE.set_axis(pd.DatetimeIndex([IDX[0], pd.NaT, *IDX[2:]], name="time"))
    with pytest.raises(DataError, match="close index has NaT at position 1"):
        from_signals(close, ENTRIES.to_numpy(), EXITS.to_numpy(), execution="close")


def test_from_signals_tz_naive_and_local_close_index_accepted():
    for index in (IDX.tz_localize(None), IDX.tz_convert("America/New_York")):
        pf = from_signals(
            CLOSE.set_axis(index), ENTRIES.set_axis(index), EXITS.set_axis(index), execution="close"
        )
        assert pf.index.equals(index)


def test_from_signals_golden_values_sp500(sp500: pd.DataFrame):
    """Pinned results of a fixed strategy on real data (guards against silent drift)."""
    close = sp500["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
    above = fast > slow
    entries = above & ~above.shift(1, fill_value=False)
    exits = ~above & above.shift(1, fill_value=False)
    pf = from_signals(
        sp500,
        entries,
        exits,
        fees=0.001,
        slippage=0.0005,
        sl_stop=0.08,
        year_days=252,
        execution="close",
    )
    s = pf.stats().iloc[0]
    golden = GOLDEN_SP500
    for name, value in golden.items():
        assert_values_close(s[name], value, rtol=1e-9, label=name)
    # Determinism: a second run is identical to the bit.
    again = from_signals(
        sp500,
        entries,
        exits,
        fees=0.001,
        slippage=0.0005,
        sl_stop=0.08,
        year_days=252,
        execution="close",
    )
    assert np.array_equal(again.equity.to_numpy(), pf.equity.to_numpy())


# Computed once by Celeris and cross-checked against vectorbt 1.2 (numba engine) with the same
# inputs (the parity suite covers this option set); a change here is a behaviour change.
GOLDEN_SP500: dict[str, float] = {
    "end_value": 107366.01669490794,
    "total_return": 0.07366016694907943,
    "cagr": 0.003566378044302043,
    "sharpe": 0.08685517862058835,
    "sortino": 0.11813349272858831,
    "calmar": 0.009261667790868745,
    "max_drawdown": 0.3850686641792748,
    "win_rate": 0.36764705882352944,
    "profit_factor": 1.0751410648684592,
    "expectancy": 108.32377492511591,
    "best_trade": 0.1320550080130349,
    "worst_trade": -0.08237931034482746,
    "trades": 68.0,
    "total_fees": 11592.168707805882,
}


def test_from_signals_multi_asset_columns_equal_single_asset_runs(sp500: pd.DataFrame):
    from arch.data import nasdaq

    raw = nasdaq.load()
    nq = pd.Series(raw["Close"].to_numpy(dtype=float), index=sp500.index)
    close = pd.DataFrame({"SPX": sp500["close"], "NDX": nq})
    fast, slow = close.rolling(10).mean(), close.rolling(40).mean()
    above = fast > slow
    entries = above & ~above.shift(1, fill_value=False)
    exits = ~above & above.shift(1, fill_value=False)
    pf = from_signals(
        close, entries, exits, fees=0.001, sl_stop=0.1, year_days=252, execution="close"
    )
    assert list(pf.columns) == ["SPX", "NDX"]
    for asset in close.columns:
        alone = from_signals(
            close[asset],
            entries[asset],
            exits[asset],
            fees=0.001,
            sl_stop=0.1,
            year_days=252,
            execution="close",
        )
        assert np.array_equal(pf[asset].equity.to_numpy(), alone.equity.to_numpy())
        assert pf[asset].trades.drop(columns="column").equals(alone.trades.drop(columns="column"))


def test_stats_without_bar_spacing_warns_and_gives_nan_annualised_metrics():
    from celeris.errors import CelerisWarning

    pf = from_signals(CLOSE.to_numpy(), ENTRIES.to_numpy(), EXITS.to_numpy(), execution="close")
    with pytest.warns(CelerisWarning, match="freq="):
        stats = pf.stats()
    assert np.isnan(stats["sharpe"].iloc[0]) and np.isfinite(stats["total_return"].iloc[0])
    assert np.isfinite(
        from_signals(
            CLOSE.to_numpy(), ENTRIES.to_numpy(), EXITS.to_numpy(), freq="1D", execution="close"
        )
        .stats()["sharpe"]
        .iloc[0]
    )


def test_from_signals_open_without_high_low_uses_open_close_range_for_stops():
    """Reviewer's case: close falls through the stop on bar 2; vectorbt sells there at 98."""
    idx = IDX[:4]
    close = pd.Series([100.0, 100.0, 97.5, 97.0], index=idx)
    open_ = pd.Series([100.0, 99.0, 99.0, 97.0], index=idx)
    entries = pd.Series([False, True, False, False], index=idx)
    pf = from_signals(close, entries, None, open=open_, sl_stop=0.02, execution="close")
    assert pf.orders["bar"].tolist() == [1, 2]
    assert_values_close(pf.orders["price"].iloc[1], 98.0, rtol=1e-12)


def test_from_signals_later_changes_to_caller_arrays_do_not_change_results():
    close = CLOSE.to_numpy().copy()
    entries = ENTRIES.to_numpy().copy()
    exits = EXITS.to_numpy().copy()
    pf = from_signals(close, entries, exits, freq="1D", execution="close")
    end_value = pf.stats()["end_value"].iloc[0]
    entries[:] = False
    close[:] = 10.0
    assert pf.equity.iloc[-1, 0] == end_value and len(pf.orders) == 3


def test_portfolio_iloc_boolean_mask_and_bounds():
    pf = from_signals(CLOSE, ENTRIES, EXITS, init_cash=[1000.0, 2000.0, 3000.0], execution="close")
    assert list(pf.iloc([True, False, True]).init_cash) == [1000.0, 3000.0]
    assert list(pf.iloc(-1).init_cash) == [3000.0]
    with pytest.raises(ConfigError, match="out of range"):
        pf.iloc(3)
    with pytest.raises(ConfigError, match="one entry per column"):
        pf.iloc([True, False])


MORE_BAD_INPUTS = [
    (dict(direction=None), CelerisTypeError, "direction must be one of"),
    (dict(size_type=5), CelerisTypeError, "size_type must be one of"),
    (dict(year_days="252"), CelerisTypeError, "year_days must be a real number > 0, got str"),
    (dict(year_days=float("nan")), ConfigError, "year_days must be finite"),
    (dict(fees=[[0.1, 0.2]]), ConfigError, "1-D"),
    (dict(accumulate=2), ConfigError, "accumulate must be True or False"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), MORE_BAD_INPUTS)
def test_from_signals_more_bad_input_raises_celeris_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        from_signals(CLOSE, ENTRIES, EXITS, **overrides, execution="close")


def test_from_signals_percent_check_is_per_column_and_labels_include_choices():
    pf = from_signals(
        CLOSE,
        ENTRIES,
        EXITS,
        size_type=["amount", "percent"],
        size=[np.inf, 0.5],
        execution="close",
    )
    assert list(pf.columns.get_level_values("size_type")) == ["amount", "percent"]
    assert pf.orders.groupby("column").size().tolist() == [3, 3]


@pytest.mark.parametrize(("freq", "days"), [("B", 1.0), ("W", 7.0), ("1h", 1 / 24)])
def test_from_signals_calendar_frequencies_annualise(freq, days):
    pf = from_signals(CLOSE, ENTRIES, EXITS, freq=freq, year_days=252, execution="close")
    assert_values_close(pf.ann_factor, 252 / days, rtol=1e-12)


def _bars_of(close: pd.Series) -> pd.DataFrame:
    open_ = close.shift(1).fillna(close.iloc[0]) + 0.5
    return pd.DataFrame(
        {"open": open_, "high": np.maximum(open_, close) + 1, "low": np.minimum(open_, close) - 1}
        | {"close": close, "volume": 1.0}
    )


def test_from_signals_default_execution_fills_at_next_open():
    bars = _bars_of(CLOSE)
    pf = from_signals(bars, ENTRIES, EXITS, init_cash=1000.0)
    assert pf.execution == "next_open"
    assert pf.orders["bar"].tolist() == [1, 3, 5]
    assert_values_close(pf.orders["price"], bars["open"].iloc[[1, 3, 5]], rtol=0)


def test_from_signals_default_execution_without_open_prices_raises_with_hint():
    with pytest.raises(ConfigError, match=r"the default.*execution='close'"):
        from_signals(CLOSE, ENTRIES, EXITS)


def test_from_signals_default_year_days_is_the_one_inferred_rule():
    weekdays = pd.bdate_range("2024-01-01", periods=30, tz="UTC", name="time")
    every_day = pd.date_range("2024-01-01", periods=30, tz="UTC", name="time")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 30)))
    entries = np.zeros(30, dtype=bool)
    entries[2] = True
    for index, days, source in ((weekdays, 252, "no weekend bars"), (every_day, 365, "weekend")):
        pf = from_signals(pd.Series(close, index=index), entries, execution="close")
        assert pf.year_days == days
        assert source in pf.annualisation.source
        assert f"annualisation: {days} days/year (inferred" in pf.describe()
        assert pf.stats()["year_days"].iloc[0] == days
    given = from_signals(
        pd.Series(close, index=every_day), entries, year_days=252, execution="close"
    )
    assert given.year_days == 252 and "(given)" in given.describe()
    assert given.stats().attrs["setup"] == given.describe()
    assert "close (fills at the signal bar's close)" in given.describe()


def test_stats_include_buy_and_hold_of_the_same_bars(sp500: pd.DataFrame):
    from celeris.backtest.returns import returns_metrics

    entries, exits = STRATEGIES["sma_cross"].signals(sp500, {"fast": 10, "slow": 50})
    pf = from_signals(sp500, entries, exits, fees=0.001)
    s = pf.stats().iloc[0]
    close = sp500["close"].to_numpy()
    assert_values_close(s["benchmark_return"], close[-1] / close[0] - 1.0, rtol=1e-12)
    rets = np.concatenate([[0.0], close[1:] / close[:-1] - 1.0])
    ref = returns_metrics(rets, 252.0)
    assert_values_close(s["benchmark_sharpe"], ref["sharpe"], rtol=1e-12)
    peak = np.maximum.accumulate(close)
    assert_values_close(s["benchmark_max_drawdown"], np.max(1 - close / peak), rtol=1e-12)
    assert s["total_return"] != s["benchmark_return"]

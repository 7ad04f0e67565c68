"""Walk-forward test windows: the position carried in, the final partial window, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeris.backtest import STRATEGIES, from_signals, walk_forward
from celeris.backtest.walk_forward import backtest_window, held_position, window_plan
from celeris.errors import CelerisTypeError, ConfigError
from tests.helpers import assert_values_close

SMA = STRATEGIES["sma_cross"]


def _window_of(bars: pd.DataFrame, first: str, last: str) -> tuple[int, int]:
    idx = bars.index
    return int(idx.searchsorted(pd.Timestamp(first, tz="UTC"))), int(
        idx.searchsorted(pd.Timestamp(last, tz="UTC"), side="right")
    )


@pytest.mark.parametrize("execution", ["next_open", "close"])
def test_backtest_window_long_throughout_starts_long_and_tracks_buy_and_hold(sp500, execution):
    """Issue A3: 2013, fast 5 / slow 200 was long all year but the window made 0 trades."""
    start, end = _window_of(sp500, "2013-01-24", "2014-01-24")
    params = {"fast": 5, "slow": 200}
    entries, exits = SMA.signals(sp500.iloc[:end], params)
    assert not (entries.iloc[start:end] | exits.iloc[start:end]).any()  # no cross all window
    assert held_position(sp500, entries, exits, start, execution=execution) == 1
    pf = backtest_window(sp500, SMA, params, start, end, execution=execution, year_days=252)
    stats = pf.stats().iloc[0]
    assert stats["trades"] == 1 and stats["exposure"] == 1.0
    close = sp500["close"]
    first_fill = sp500["open"].iloc[start] if execution == "next_open" else close.iloc[start]
    assert_values_close(pf.orders["price"].iloc[0], first_fill, rtol=0)
    assert_values_close(
        stats["total_return"], close.iloc[end - 1] / first_fill - 1.0, rtol=1e-9
    )  # all in at the first fill, no costs
    assert stats["benchmark_return"] > 0.19


def test_walk_forward_tests_the_final_partial_window_by_default(sp500):
    """Issue A3: the last partial window was dropped (test ended 2018-07-16, data 2018-12-31)."""
    grid = {"fast": [5, 10], "slow": [50, 100]}
    wf = walk_forward(sp500, "sma_cross", grid, train="730D", test="180D", progress=False)
    last = wf.windows.iloc[-1]
    assert last["test_end"] == sp500.index[-1]
    assert wf.oos_returns.index[-1] == sp500.index[-1]
    assert last["test_bars"] < wf.windows["test_bars"].iloc[0]
    full = walk_forward(
        sp500, "sma_cross", grid, train="730D", test="180D", partial=False, progress=False
    )
    assert len(full.windows) == len(wf.windows) - 1
    assert (full.windows["test_bars"] == full.windows["test_bars"].iloc[0]).all()


def test_walk_forward_windows_flat_only_when_the_parameters_are(sp500):
    """A window without a trade is one whose parameters held no position and never crossed."""
    grid = {"fast": [5, 10, 20], "slow": [50, 100, 200]}
    wf = walk_forward(sp500, "sma_cross", grid, train="730D", test="180D", progress=False)
    idx = sp500.index
    for _, row in wf.windows[wf.windows["oos_trades"] == 0].iterrows():
        start, end = idx.get_loc(row["test_start"]), idx.get_loc(row["test_end"]) + 1
        params = {"fast": row["fast"], "slow": row["slow"]}
        entries, exits = SMA.signals(sp500.iloc[:end], params)
        assert held_position(sp500, entries, exits, start) == 0
        assert not entries.iloc[start - 1 : end - 1].any()
    assert (wf.windows["oos_trades"] == 0).sum() <= 2


@pytest.mark.parametrize(
    ("direction", "first", "last"),
    [
        # both: the last cross before mid-2008 was down, and an exit opens a short.
        ("both", "2008-06-02", "2008-08-29"),
        # shortonly: entries open shorts; 5/200 crossed up before 2013 and stayed up.
        ("shortonly", "2013-01-24", "2014-01-24"),
    ],
)
def test_backtest_window_carries_a_short_position(sp500, direction, first, last):
    start, end = _window_of(sp500, first, last)
    params = {"fast": 5, "slow": 200}
    entries, exits = SMA.signals(sp500.iloc[:end], params)
    assert held_position(sp500, entries, exits, start, direction=direction) == -1
    pf = backtest_window(sp500, SMA, params, start, end, direction=direction)
    opened = pf.trades.iloc[0]
    assert opened["entry_bar"] == 0 and opened["direction"] == "short"
    assert_values_close(opened["entry_price"], sp500["open"].iloc[start], rtol=0)


def test_backtest_window_outside_the_data_raises(sp500):
    with pytest.raises(ConfigError, match="not inside the data"):
        backtest_window(sp500, SMA, {}, 100, len(sp500) + 1)


# ---- properties ---------------------------------------------------------------------------
@st.composite
def _bars(draw, min_bars: int = 40, max_bars: int = 120):
    n = draw(st.integers(min_bars, max_bars))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.005, n))
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="time")
    bars = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1.0,
        },
        index=index,
    )
    return bars, rng


WINDOW_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@WINDOW_SETTINGS
@given(
    _bars(),
    st.sampled_from(["next_open", "close"]),
    st.sampled_from(["longonly", "both", "shortonly"]),
    st.sampled_from([None, 0.03]),
    st.data(),
)
def test_backtest_window_never_depends_on_bars_after_it(mkt, execution, direction, sl, data):
    bars, rng = mkt
    n = len(bars)
    fast = data.draw(st.integers(2, 6), label="fast")
    slow = data.draw(st.integers(fast + 1, 15), label="slow")
    start = data.draw(st.integers(1, n - 10), label="start")
    end = data.draw(st.integers(start + 2, n - 1), label="end")
    opts = dict(execution=execution, direction=direction, sl_stop=sl, fees=0.001)
    base = backtest_window(bars, SMA, {"fast": fast, "slow": slow}, start, end, **opts)
    future = bars.copy()
    future.iloc[end:, :4] *= rng.uniform(0.5, 1.5, (n - end, 1))  # a different future
    future["high"] = future[["open", "high", "close"]].max(axis=1)
    future["low"] = future[["open", "low", "close"]].min(axis=1)
    moved = backtest_window(future, SMA, {"fast": fast, "slow": slow}, start, end, **opts)
    np.testing.assert_array_equal(base.equity.to_numpy(), moved.equity.to_numpy())
    pd.testing.assert_frame_equal(base.orders, moved.orders)


@WINDOW_SETTINGS
@given(_bars(), st.sampled_from(["next_open", "close"]), st.data())
def test_backtest_window_starts_in_the_position_of_the_continuous_run(mkt, execution, data):
    """After the window's first fill it holds what one account run over all bars holds."""
    bars, _ = mkt
    n = len(bars)
    fast = data.draw(st.integers(2, 6), label="fast")
    slow = data.draw(st.integers(fast + 1, 15), label="slow")
    start = data.draw(st.integers(1, n - 10), label="start")
    end = data.draw(st.integers(start + 2, n), label="end")
    params = {"fast": fast, "slow": slow}
    entries, exits = SMA.signals(bars, params)
    whole = from_signals(bars, entries, exits, execution=execution, direction="both")
    window = backtest_window(bars, SMA, params, start, end, execution=execution, direction="both")

    def side(pf, bar: int) -> int:
        trades = pf.trades
        live = trades[
            (trades["entry_bar"] <= bar)
            & ((trades["status"] == "open") | (trades["exit_bar"] > bar))
        ]
        if live.empty:
            return 0
        return 1 if live["direction"].iloc[-1] == "long" else -1

    assert side(window, 0) == side(whole, start)


@pytest.mark.parametrize(
    ("train", "error", "match"),
    [
        (2.5, CelerisTypeError, r"train must be an int >= 2, got float 2\.5"),
        (True, CelerisTypeError, "train must be an int >= 2, got bool"),
        (1, ConfigError, "train must be >= 2, got 1"),
        (np.int64(10**9), ConfigError, r"exceed the data"),
    ],
)
def test_window_plan_bar_count_of_wrong_type_raises_type_error(sp500, train, error, match):
    # Unified (celeris.checks): a float or bool bar count is a CelerisTypeError; a float used to
    # be read as a duration of nanoseconds and a bool as 1 bar, both ConfigErrors.
    with pytest.raises(error, match=match):
        window_plan(sp500.index, train, 50, partial=True)


def test_window_plan_durations_and_numpy_counts_agree(sp500):
    by_count = window_plan(sp500.index, np.int32(200), 50, partial=True)
    assert by_count[:2] == (200, 50)
    assert window_plan(sp500.index, "365D", pd.Timedelta("30D"), partial=True)[0] > 2

"""``rebalance``: weights frames traded on one cash-sharing account.

Hand-computed cash, equality with ``from_orders`` given the equivalent target-percent frame,
vectorbt 1.2 parity on the two real ``arch`` samples, the drift threshold, and every error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

import celeris
from celeris.backtest import from_orders, rebalance
from celeris.backtest.rebalance import rebalance_targets
from celeris.data.panel import to_panel
from celeris.errors import CelerisTypeError, ConfigError, DataError
from tests.helpers import assert_frame_close, assert_values_close


def _arch_bars(module) -> pd.DataFrame:
    raw = module.load()
    bars = raw[["Open", "High", "Low", "Close", "Volume"]].astype("float64")
    bars.columns = ["open", "high", "low", "close", "volume"]
    bars.index = pd.DatetimeIndex(raw.index, name="time").tz_localize("UTC")
    return bars


@pytest.fixture(scope="module")
def real_bars() -> dict[str, pd.DataFrame]:
    """Real daily S&P 500 and NASDAQ bars (1999-2018) shipped by the arch package."""
    from arch.data import nasdaq, sp500

    return {"SPX": _arch_bars(sp500), "NDX": _arch_bars(nasdaq)}


IDX = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC", name="time")


def _bars(opens: list[float], closes: list[float]) -> pd.DataFrame:
    o, c = np.array(opens), np.array(closes)
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c),
            "low": np.minimum(o, c),
            "close": c,
            "volume": 1.0,
        },
        index=IDX,
    )


def _two_assets() -> dict[str, pd.DataFrame]:
    # "b" comes first so that only call_seq="auto" (sells first) lets the bar-2 buy of b use
    # the cash released by selling a.
    return {
        "b": _bars([50, 50, 50, 40], [50, 50, 40, 50]),
        "a": _bars([100, 100, 110, 120], [100, 110, 120, 90]),
    }


def _weights(rows: dict[str, list[float]], dates: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=pd.DatetimeIndex(dates, tz="UTC", name="time"))


# ---- hand-computed ----


@pytest.mark.parametrize("execution", ["close", "next_open"])
def test_rebalance_two_assets_hand_computed_cash_and_fees(execution: str):
    # Bar 0: all in a at 100 for half the account: 5 units, fee 1% = 5 -> cash 495.
    # Bar 2 (a at 120, b at 40; value 495 + 600 = 1095): sell 5 a for 600, fee 6 -> cash 1089;
    # buy b for half of 1095 = 547.5 -> 13.6875 units, fee 5.475 -> cash 536.025.
    # Bar 3: b at 50 -> value 536.025 + 684.375 = 1220.4. Under next_open the fills are the
    # opens of bars 1 and 3, which equal those closes.
    weights = _weights({"a": [0.5, 0.0], "b": [0.0, 0.5]}, ["2024-01-01", "2024-01-03"])
    book = rebalance(
        _two_assets(), weights, fees=0.01, init_cash=1000.0, execution=execution, freq="1D"
    )
    equity = book.equity["group"].to_numpy()
    if execution == "close":  # marked after the fills: the fees are paid; b is at 40 on bar 2
        expected = [995.0, 1045.0, 536.025 + 13.6875 * 40, 1220.4]
    else:  # marked before the next open's fills
        expected = [1000.0, 1045.0, 1095.0, 1220.4]
    assert_values_close(equity, expected, rtol=1e-12)
    assert_values_close(book.cash["group"].to_numpy()[-1], 536.025, rtol=1e-12)
    orders = book.orders
    assert orders["asset"].tolist() == ["a", "a", "b"]  # the sell of a before the buy of b
    assert_values_close(orders["fees"].to_numpy(), [5.0, 6.0, 5.475], rtol=1e-12)
    assert_values_close(book.stats().loc["group", "total_fees"], 16.475, rtol=1e-12)
    assert_values_close(book.positions.iloc[-1].to_numpy(), [13.6875, 0.0], rtol=1e-12)
    fill_bar = 0 if execution == "close" else 1
    assert orders["time"].iloc[0] == IDX[fill_bar]


def test_rebalance_threshold_skips_a_rebalance_whose_drift_is_smaller():
    # 50/50 at bar 0 (a 100, b 50). At bar 2 a is 102, b 50: a's weight is 510 / 1010
    # = 0.50495, 0.00495 off its target. threshold 0.01 skips that rebalance; 0.004 trades it.
    bars = {
        "a": _bars([100, 100, 100, 100], [100, 101, 102, 103]),
        "b": _bars([50, 50, 50, 50], [50, 50, 50, 50]),
    }
    weights = _weights({"a": [0.5, 0.5], "b": [0.5, 0.5]}, ["2024-01-01", "2024-01-03"])
    kw = {"init_cash": 1000.0, "execution": "close", "freq": "1D"}
    skipped = rebalance(bars, weights, threshold=0.01, **kw)
    assert len(skipped.orders) == 2
    assert_values_close(skipped.positions.iloc[-1].to_numpy(), [5.0, 10.0], rtol=1e-12)
    assert_values_close(skipped.equity["group"].iloc[-1], 1015.0, rtol=1e-12)
    traded = rebalance(bars, weights, threshold=0.004, **kw)
    assert len(traded.orders) == 4
    # Back to 505 each: a 505 / 102 units, b 10.1 units.
    assert_values_close(traded.positions.iloc[-1].to_numpy(), [505 / 102, 10.1], rtol=1e-12)
    assert_frame_close(traded.equity, rebalance(bars, weights, **kw).equity, rtol=0)


def test_rebalance_threshold_drift_measured_at_the_fill_bar_next_open():
    # Under next_open the bar-2 decision fills at bar 3's open (a 110 against b 50): a's weight
    # there is 550 / 1050 = 0.5238, 0.0238 off; threshold 0.02 trades, 0.03 skips.
    bars = {
        "a": _bars([100, 100, 100, 110], [100, 100, 100, 110]),
        "b": _bars([50, 50, 50, 50], [50, 50, 50, 50]),
    }
    weights = _weights({"a": [0.5, 0.5], "b": [0.5, 0.5]}, ["2024-01-01", "2024-01-03"])
    assert len(rebalance(bars, weights, threshold=0.02, init_cash=1000.0).orders) == 4
    assert len(rebalance(bars, weights, threshold=0.03, init_cash=1000.0).orders) == 2


# ---- the equivalent from_orders call ----


def test_rebalance_equals_from_orders_with_the_equivalent_target_frame(real_bars):
    idx = real_bars["SPX"].index
    # Saturdays and other off-bar dates apply at the next bar; NDX is absent from the frame.
    dates = pd.DatetimeIndex(["1999-01-09", "2003-05-17", "2010-07-04"], tz="UTC")
    weights = pd.DataFrame({"SPX": [0.3, 0.9, -0.2]}, index=dates)
    book = rebalance(real_bars, weights, fees=0.001, fixed_fees=1.0, slippage=0.0005)
    expected = pd.DataFrame(np.nan, index=idx, columns=to_panel(real_bars).symbols)
    for d, w in zip(dates, [0.3, 0.9, -0.2], strict=True):
        expected.loc[idx[idx >= d][0]] = [w, 0.0]
    direct = from_orders(
        real_bars,
        expected,
        size_type="targetpercent",
        cash_sharing=True,
        call_seq="auto",
        fees=0.001,
        fixed_fees=1.0,
        slippage=0.0005,
    )
    assert_frame_close(book.equity, direct.equity, rtol=0)
    pd.testing.assert_frame_equal(book.orders, direct.orders)
    assert book.orders["time"].iloc[0] == pd.Timestamp("1999-01-12", tz="UTC")  # next open


def test_rebalance_every_period_uses_the_latest_weights_known_by_each_bar(real_bars):
    idx = real_bars["SPX"].index
    weights = pd.DataFrame(
        {"SPX": [0.2, 0.7, 0.4], "NDX": [0.8, 0.3, 0.6]},
        index=pd.DatetimeIndex(["2000-01-03", "2000-01-05", "2000-02-01"], tz="UTC"),
    )
    targets = rebalance_targets(real_bars, weights, every="14D")
    start = pd.Timestamp("2000-01-03", tz="UTC")
    bars = sorted({idx[idx >= start + k * pd.Timedelta("14D")][0] for k in range(600) if
                   start + k * pd.Timedelta("14D") <= idx[-1]})  # fmt: skip
    expected = pd.DataFrame(np.nan, index=idx, columns=["SPX", "NDX"])
    for b in bars:
        known = weights.loc[weights.index <= b]
        expected.loc[b] = known.iloc[-1].to_numpy()
    assert_frame_close(targets, expected, rtol=0)
    assert str(bars[1].date()) == "2000-01-18"  # 01-17 is a holiday: the next bar
    assert expected.loc[bars[1], "SPX"].item() == 0.7  # the 2000-01-05 row, the latest
    book = rebalance(real_bars, weights, every="14D", execution="close")
    direct = from_orders(
        real_bars, targets, size_type="targetpercent", cash_sharing=True, call_seq="auto",
        execution="close",
    )  # fmt: skip
    assert_frame_close(book.equity, direct.equity, rtol=0)


def test_rebalance_every_dates_apply_at_their_first_bar(real_bars):
    weights = _weights({"SPX": [0.5, 0.1], "NDX": [0.5, 0.9]}, ["1999-01-04", "2005-01-03"])
    dates = ["2001-06-02", "2005-01-02", "2010-12-25"]  # a Saturday, a Sunday, a holiday
    targets = rebalance_targets(real_bars, weights, every=dates)
    rows = targets.dropna()
    assert len(rows) == 3
    assert list(rows.index.strftime("%Y-%m-%d")) == ["2001-06-04", "2005-01-03", "2010-12-27"]
    assert rows["NDX"].tolist() == [0.5, 0.9, 0.9]


def test_rebalance_panel_input_and_multiindex_frame_give_one_book(real_bars):
    weights = _weights({"SPX": [0.6], "NDX": [0.4]}, ["1999-01-04"])
    from_dict = rebalance(real_bars, weights, every="30D")
    frame = pd.concat(real_bars, axis=1)
    from_frame = rebalance(frame, weights, every="30D")
    from_panel = rebalance(to_panel(real_bars), weights, every="30D")
    assert_frame_close(from_frame.equity, from_dict.equity, rtol=0)
    assert_frame_close(from_panel.equity, from_dict.equity, rtol=0)
    assert isinstance(from_dict, celeris.backtest.Book)


# ---- vectorbt ----


def _random_weights(index: pd.DatetimeIndex, seed: int, short: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = index[::7]
    w = rng.dirichlet([1.0, 1.0], size=len(rows))
    if short:  # long 0.3 to 1, short 0.05 to 0.45: gross <= 1.45, net <= 0.95
        w = np.column_stack([0.3 + 0.7 * w[:, 0], -(0.05 + 0.4 * w[:, 1])])
    return pd.DataFrame(w, index=rows, columns=["SPX", "NDX"])


@pytest.mark.parametrize(
    ("short", "fees", "fixed_fees", "slippage"),
    [(False, 0.001, 0.0, 0.0), (False, 0.0005, 2.0, 0.001), (True, 0.001, 1.0, 0.0005)],
)
def test_rebalance_equity_matches_vectorbt_targetpercent_on_real_data(
    real_bars, short: bool, fees: float, fixed_fees: float, slippage: float
):
    close = pd.DataFrame({s: b["close"] for s, b in real_bars.items()})
    weights = _random_weights(close.index, seed=7 + short, short=short)
    book = rebalance(
        real_bars,
        weights,
        fees=fees,
        fixed_fees=fixed_fees,
        slippage=slippage,
        execution="close",
        leverage=1.45,
    )
    size = weights.reindex(close.index)
    pf = vbt.Portfolio.from_orders(
        close,
        size=size,
        size_type="targetpercent",
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        fees=fees,
        fixed_fees=fixed_fees,
        slippage=slippage,
        init_cash=100_000.0,
        freq="1D",
    )
    assert_values_close(book.equity["group"].to_numpy(), pf.value().to_numpy(), rtol=1e-9)
    assert len(book.orders) == len(pf.orders.records)
    assert_values_close(
        book.stats().loc["group", "total_fees"], pf.orders.records["fees"].sum(), rtol=1e-9
    )


# ---- listings ----


def _staggered() -> dict[str, pd.DataFrame]:
    idx = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC", name="time")
    full = pd.DataFrame(
        {"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 1.0}, index=idx
    )
    return {"old": full, "new": full.iloc[2:], "gone": full.iloc[:4]}


def test_rebalance_weight_before_listing_or_at_delisting_refused_naming_symbol():
    bars = _staggered()
    early = _weights({"old": [0.5], "new": [0.5]}, ["2024-01-01"])
    with pytest.raises(DataError, match=r"'new' 0.5 at the rebalance bar 2024-01-01.*fill at "
                       r"2024-01-02.*trades only from 2024-01-03"):  # fmt: skip
        rebalance(bars, early)
    # next_open: a decision on 01-02 fills on 01-03, new's first bar: fine.
    ok = _weights({"old": [0.5], "new": [0.5]}, ["2024-01-02"])
    assert len(rebalance(bars, ok).orders) == 2
    # gone is delisted on 01-04 (settled there): an order may fill up to 01-03 only.
    late = _weights({"gone": [0.5]}, ["2024-01-03"])
    with pytest.raises(DataError, match=r"'gone'.*trades only from 2024-01-01.*to 2024-01-03"):
        rebalance(bars, late)
    assert len(rebalance(bars, late, execution="close").orders) == 2  # the buy and the settlement


def test_rebalance_zero_weight_of_an_unlisted_symbol_is_accepted():
    bars = _staggered()
    weights = _weights({"old": [1.0], "new": [0.0], "gone": [0.0]}, ["2024-01-01"])
    book = rebalance(bars, weights)
    assert book.orders["asset"].tolist() == ["old"]


# ---- errors ----


def _small() -> dict[str, pd.DataFrame]:
    return _two_assets()


@pytest.mark.parametrize(
    ("weights", "kwargs", "error", "message"),
    [
        (
            _weights({"c": [0.5]}, ["2024-01-01"]),
            {},
            ConfigError,
            r"weights column 'c' is not a symbol of the bars.*have b, a",
        ),
        (_weights({"aa": [0.5]}, ["2024-01-01"]), {}, ConfigError, "did you mean 'a'"),
        (
            _weights({"a": [np.nan], "b": [0.2]}, ["2024-01-02"]),
            {},
            DataError,
            r"weights of 'a' at 2024-01-02 00:00:00\+00:00 is nan",
        ),
        (
            _weights({"a": [np.inf]}, ["2024-01-02"]),
            {},
            DataError,
            "weights of 'a' at 2024-01-02.*is inf",
        ),
        (
            _weights({"a": [0.7], "b": [-0.5]}, ["2024-01-02"]),
            {},
            DataError,
            r"gross exposure.*of 1.2, above leverage=1",
        ),
        (
            _weights({"a": [0.7], "b": [-0.5]}, ["2024-01-02"]),
            {"leverage": 1.1},
            DataError,
            "above leverage=1.1",
        ),
        (
            _weights({"a": [1.2], "b": [-0.1]}, ["2024-01-02"]),
            {"leverage": 2.0},
            DataError,
            r"sum to 1.1 net.*above the budget of 1",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-05"]),
            {},
            DataError,
            r"weights row 2024-01-05.*after the last bar \(2024-01-04",
        ),
        (
            _weights({"a": [0.5, 0.2]}, ["2024-01-02 06:00", "2024-01-02 12:00"]),
            {},
            DataError,
            r"both apply at the bar 2024-01-03",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"leverage": 0.5},
            ConfigError,
            "leverage must be a finite number >= 1",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"leverage": "2"},
            CelerisTypeError,
            "leverage must be a number",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"threshold": -0.1},
            ConfigError,
            "threshold must be a finite weight distance >= 0",
        ),
        (_weights({"a": [0.5]}, ["2024-01-01"]), {"every": "-7D"}, ConfigError, "positive period"),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"every": "weekly"},
            ConfigError,
            "every must be a period like '7D'",
        ),
        (_weights({"a": [0.5]}, ["2024-01-01"]), {"every": 7}, ConfigError, "period with a unit"),
        (_weights({"a": [0.5]}, ["2024-01-01"]), {"every": []}, ConfigError, "empty list of dates"),
        (
            _weights({"a": [0.5]}, ["2024-01-02"]),
            {"every": ["2024-01-01"]},
            DataError,
            r"rebalance date 2024-01-01.*before the first weights row",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"every": ["2024-01-09"]},
            DataError,
            "rebalance date 2024-01-09.*after the last bar",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"every": ["2024-01-03", "2024-01-02"]},
            DataError,
            "every \\(rebalance dates\\)",
        ),
        (
            _weights({"a": [0.5]}, ["2024-01-01"]),
            {"every": ["2024-01-02 01:00", "2024-01-02 02:00"]},
            DataError,
            "rebalance dates .* both apply at the bar 2024-01-03",
        ),
        (_weights({"a": [0.5]}, ["2024-01-01"]), {"execution": "open"}, ConfigError, "execution"),
        (
            pd.DataFrame({"a": [0.5]}, index=pd.DatetimeIndex(["2024-01-01"])),
            {},
            DataError,
            "weights index",
        ),
        (
            pd.DataFrame(
                {"a": [0.5, 0.4]}, index=pd.DatetimeIndex(["2024-01-03", "2024-01-02"], tz="UTC")
            ),
            {},
            DataError,
            "weights index.*sorted",
        ),
        (
            pd.DataFrame({"a": ["x"]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC")),
            {},
            CelerisTypeError,
            "weights column 'a' must be numeric",
        ),
        (pd.DataFrame(columns=["a"], dtype=float), {}, DataError, "weights is empty"),
        (
            pd.Series([0.5], index=pd.DatetimeIndex(["2024-01-01"], tz="UTC")),
            {},
            CelerisTypeError,
            "weights must be a DataFrame",
        ),
    ],
)
def test_rebalance_bad_input_raises_naming_the_problem(weights, kwargs, error, message):
    with pytest.raises(error, match=message):
        rebalance(_small(), weights, **kwargs)


def test_rebalance_duplicate_weights_column_refused():
    weights = pd.DataFrame(
        [[0.2, 0.3]], columns=["a", "a"], index=pd.DatetimeIndex(["2024-01-01"], tz="UTC")
    )
    with pytest.raises(DataError, match="column 'a' twice"):
        rebalance(_small(), weights)


def test_rebalance_budget_tolerance_accepts_rounding():
    weights = _weights({"a": [0.5 + 5e-10], "b": [0.5]}, ["2024-01-01"])
    assert len(rebalance(_small(), weights).orders) == 2

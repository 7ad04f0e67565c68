"""The grouped, cash-sharing simulation: hand-computed books, listings, errors and invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeris import CelerisTypeError, ConfigError, DataError
from celeris.backtest import Book, from_orders, from_signals
from celeris.data.panel import to_panel

IDX = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC", name="time")


def _close(**columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame(columns, index=IDX[: len(next(iter(columns.values())))], dtype=float)


def test_from_orders_target_percent_book_hand_computed():
    close = _close(BTC=[100, 110, 120, 110], ETH=[10, 10, 12, 12])
    weights = _close(BTC=[0.5, np.nan, 0.2, np.nan], ETH=[0.5, np.nan, 0.8, np.nan])
    book = from_orders(
        close, weights, size_type="targetpercent", cash_sharing=True, call_seq="auto",
        execution="close",
    )  # fmt: skip
    # Bar 0: 500 BTC and 5,000 ETH. Bar 2: value 120,000; BTC to 24,000 (200), ETH to 96,000
    # (8,000): the sale of 300 BTC (36,000) pays for 3,000 ETH. Bar 3: 200 x 110 + 8,000 x 12.
    assert book.positions.iloc[-1].tolist() == [200.0, 8_000.0]
    assert book.equity.iloc[:, 0].tolist() == [100_000.0, 105_000.0, 120_000.0, 118_000.0]
    orders = book.orders
    assert orders["side"].tolist() == ["buy", "buy", "sell", "buy"]  # auto: the sale first
    assert book.cash.iloc[-1, 0] == pytest.approx(0.0, abs=1e-9)
    contribution = book.contribution["pnl"]
    assert contribution.sum() == pytest.approx(18_000.0)
    assert contribution["BTC"] == pytest.approx(-50_000 + 36_000 + 22_000)


def test_from_orders_auto_call_seq_sells_first_where_default_runs_short_of_cash():
    close = _close(A=[10, 10], B=[10, 10])
    # All in B, then rotate to A: column order buys A before selling B (no cash: rejected).
    size = _close(A=[0.0, 1.0], B=[1.0, 0.0])
    common = dict(size_type="targetpercent", cash_sharing=True, execution="close")
    default = from_orders(close, size, call_seq="default", **common)
    auto = from_orders(close, size, call_seq="auto", **common)
    assert default.positions.iloc[-1].tolist() == [0.0, 0.0]  # A found no cash, then B sold
    assert auto.positions.iloc[-1].tolist() == [10_000.0, 0.0]
    reversed_ = from_orders(close, size, call_seq="reversed", **common)
    assert reversed_.positions.iloc[-1].tolist() == [10_000.0, 0.0]


def test_from_orders_threshold_skips_rebalance_until_weights_drift():
    close = _close(A=[10, 10.5, 13, 13], B=[10, 10, 10, 10])
    weights = _close(A=[0.5, 0.5, 0.5, 0.5], B=[0.5, 0.5, 0.5, 0.5])
    book = from_orders(
        close, weights, size_type="targetpercent", cash_sharing=True, call_seq="auto",
        execution="close", _threshold=0.05,
    )  # fmt: skip
    # Bar 1: A's weight 5,250 / 10,250 = 0.512 (drift 0.012 < 0.05): no trade. Bar 2: A is
    # 6,500 / 11,500 = 0.565 (drift 0.065): rebalanced to 50/50.
    assert sorted(set(book.orders["bar"])) == [0, 2]
    assert book.weights.iloc[2].tolist() == pytest.approx([0.5, 0.5])


def _bars(close: list[float], start: int, n: int = 8) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC", name="time")
    c = np.asarray(close, dtype=float)
    frame = pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c})
    frame.index = idx[start : start + len(c)]
    return frame


def test_delisted_asset_is_settled_at_its_last_close_without_costs():
    panel = to_panel({"A": _bars([10, 11, 12, 13, 14], 0), "B": _bars([20] * 8, 0)})
    entries = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    entries.iloc[1, 0] = True
    book = from_signals(
        panel, entries, entries & False, size=100.0, fees=0.01, slippage=0.01,
        cash_sharing=True, execution="close",
    )  # fmt: skip
    orders = book.orders
    assert orders["kind"].tolist() == ["order", "delisting"]
    settle = orders.iloc[1]
    assert (settle["asset"], settle["bar"], settle["price"], settle["fees"]) == ("A", 4, 14.0, 0.0)
    assert book.positions.iloc[4:, 0].eq(0.0).all()
    # Cash after the buy: 100,000 - 100 x 11.11 x 1.01; after settlement + 1,400.
    cash = 100_000 - 100 * 11.11 * 1.01 + 1_400
    assert book.equity.iloc[-1, 0] == pytest.approx(cash)
    assert book.trades["status"].tolist() == ["closed"]


def test_signals_before_listing_are_not_traded():
    panel = to_panel({"A": _bars([10] * 8, 0), "B": _bars([20] * 5, 3)})
    entries = pd.DataFrame(True, index=panel.index, columns=panel.symbols)
    book = from_signals(
        panel, entries, entries & False, size=1.0, cash_sharing=True, execution="close"
    )
    first_b = book.orders.loc[book.orders["asset"] == "B", "bar"].min()
    assert first_b == 3


def test_nan_inside_listed_span_is_a_data_error_naming_column_and_time():
    close = _close(A=[10, np.nan, 12, 13], B=[10, 10, 10, 10])
    with pytest.raises(DataError, match=r"inside the listed span of column 'A' at 2024-01-02"):
        from_orders(close, 1.0, cash_sharing=True, execution="close")


def test_parameter_sets_times_assets_are_one_book_per_set():
    panel = to_panel(
        {s: _bars(list(np.linspace(10, 20, 8) * (k + 1)), 0) for k, s in enumerate("ABC")}
    )
    rng = np.random.default_rng(0)
    entries = rng.random((8, 6)) < 0.4
    exits = rng.random((8, 6)) < 0.4
    both = from_signals(
        panel, entries, exits, size=0.3, size_type="percent", cash_sharing=True,
        execution="close",
    )  # fmt: skip
    assert len(both) == 2
    for k in range(2):
        alone = from_signals(
            panel, entries[:, 3 * k : 3 * k + 3], exits[:, 3 * k : 3 * k + 3], size=0.3,
            size_type="percent", cash_sharing=True, execution="close",
        )  # fmt: skip
        np.testing.assert_array_equal(alone.equity.iloc[:, 0], both.equity.iloc[:, k])


def test_group_by_level_name_groups_columns():
    panel = to_panel({s: _bars([10, 11, 12, 11, 12, 13, 12, 14], 0) for s in "AB"})
    columns = pd.MultiIndex.from_product([["x", "y"], ["A", "B"]], names=["variant", "symbol"])
    entries = pd.DataFrame(False, index=panel.index, columns=columns)
    entries.iloc[0] = True
    book = from_signals(
        panel, entries, entries & False, size=1.0, cash_sharing=True, group_by="variant",
        execution="close",
    )  # fmt: skip
    assert list(book.groups) == ["x", "y"]
    with pytest.raises(ConfigError, match="group_by names level 'strategy'"):
        from_signals(
            panel, entries, entries & False, cash_sharing=True, group_by="strategy",
            execution="close",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(call_seq="sorted"), ConfigError, "call_seq"),
        (dict(cash_sharing="yes"), CelerisTypeError, "cash_sharing must be True or False"),
        (dict(group_by=True), ConfigError, "group_by without cash_sharing=True"),
        (dict(cash_sharing=True, init_cash=[1.0, 2.0]), ConfigError, "init_cash"),
        (dict(cash_sharing=True, size_type="weights"), ConfigError, "size_type"),
    ],
)
def test_from_orders_bad_arguments_are_refused(kwargs, error, match):
    close = _close(A=[10, 11, 12, 13], B=[10, 10, 10, 10])
    with pytest.raises(error, match=match):
        from_orders(close, 1.0, execution="close", **kwargs)


def test_from_orders_size_misaligned_or_misshaped_is_a_data_error():
    close = _close(A=[10, 11, 12, 13], B=[10, 10, 10, 10])
    with pytest.raises(DataError, match="size's index"):
        from_orders(close, close.iloc[:3], cash_sharing=True, execution="close")
    with pytest.raises(DataError, match="size has shape"):
        from_orders(close, np.ones(3), cash_sharing=True, execution="close")
    with pytest.raises(DataError, match="cannot map 3 signal/order columns"):
        from_orders(close, np.ones((4, 3)), cash_sharing=True, execution="close")


def test_from_signals_init_cash_must_agree_within_a_group():
    panel = to_panel({s: _bars([10] * 8, 0) for s in "AB"})
    entries = np.ones((8, 2), dtype=bool)
    with pytest.raises(ConfigError, match="init_cash differs between the columns of group 0"):
        from_signals(panel, entries, ~entries, init_cash=[1e5, 2e5], cash_sharing=True)


def test_next_open_needs_opens():
    close = _close(A=[10, 11, 12, 13], B=[10, 10, 10, 10])
    with pytest.raises(ConfigError, match="needs open"):
        from_orders(close, 1.0, cash_sharing=True)


@st.composite
def books(draw):
    n = draw(st.integers(5, 30))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.05, (n, k)), axis=0))
    size_type = draw(st.sampled_from(["targetpercent", "value", "amount"]))
    scale = {"targetpercent": 1.0 / k, "value": 20_000.0, "amount": 50.0}[size_type]
    sizes = np.where(rng.random((n, k)) < 0.3, rng.uniform(0, 1, (n, k)) * scale, np.nan)
    if size_type != "targetpercent":
        sizes = np.where(rng.random((n, k)) < 0.5, sizes, -sizes)
    call_seq = draw(st.sampled_from(["default", "reversed", "auto"]))
    fees = draw(st.sampled_from([0.0, 0.001, 0.01]))
    return close, sizes, size_type, call_seq, fees


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books())
def test_book_accounting_invariants(case):
    close, sizes, size_type, call_seq, fees = case
    idx = pd.date_range("2024-01-01", periods=len(close), freq="D", tz="UTC")
    book = from_orders(
        pd.DataFrame(close, index=idx), pd.DataFrame(sizes, index=idx), size_type=size_type,
        call_seq=call_seq, fees=fees, cash_sharing=True, execution="close", direction="longonly",
    )  # fmt: skip
    equity = book.equity.iloc[:, 0].to_numpy()
    # Value = cash + positions at the close; contributions add up to the P&L; no negative cash.
    cash = book.cash.iloc[:, 0].to_numpy()
    np.testing.assert_allclose(cash + book.asset_value.sum(axis=1), equity, rtol=1e-9)
    assert book.contribution["pnl"].sum() == pytest.approx(equity[-1] - 100_000.0, abs=1e-6)
    assert (cash > -1e-6).all()
    np.testing.assert_allclose(book.weights.sum(axis=1) + cash / equity, 1.0, rtol=1e-9, atol=1e-12)
    assert book.stats()["orders"].iloc[0] == len(book.orders)
    assert book.stats()["total_fees"].iloc[0] == pytest.approx(book.orders["fees"].sum())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), st.data())
def test_book_has_no_look_ahead(case, data):
    """Changing prices and orders after bar t changes nothing up to bar t."""
    close, sizes, size_type, call_seq, fees = case
    n = len(close)
    t = data.draw(st.integers(0, n - 2))
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    later = close.copy()
    later[t + 1 :] *= 1.5
    other = sizes.copy()
    other[t + 1 :] = np.nan

    def run(c: np.ndarray, s: np.ndarray) -> Book:
        return from_orders(
            pd.DataFrame(c, index=idx), pd.DataFrame(s, index=idx), size_type=size_type,
            call_seq=call_seq, fees=fees, cash_sharing=True, execution="close",
        )  # fmt: skip

    a, b = run(close, sizes), run(later, other)
    np.testing.assert_array_equal(a.equity.to_numpy()[: t + 1], b.equity.to_numpy()[: t + 1])
    early = a.orders[a.orders["bar"] <= t].reset_index(drop=True)
    pd.testing.assert_frame_equal(early, b.orders)


def test_book_stats_exposure_and_turnover_from_the_kernel_equal_the_curves():
    """stats() reads the kernel's accumulators (no records); they equal the curves' figures."""
    panel = to_panel(
        {s: _bars(list(np.linspace(10, 20, 8) * (k + 1)), 0) for k, s in enumerate("ABC")}
    )
    rng = np.random.default_rng(3)
    entries, exits = rng.random((8, 3)) < 0.5, rng.random((8, 3)) < 0.3
    book = from_signals(panel, entries, exits, size=0.3, size_type="percent", fees=0.001,
                        cash_sharing=True, execution="close")  # fmt: skip
    stats = book.stats().iloc[0]
    assert stats["mean_gross_exposure"] == pytest.approx(book.gross_exposure.iloc[:, 0].mean())
    assert stats["mean_net_exposure"] == pytest.approx(book.net_exposure.iloc[:, 0].mean())
    traded = book.traded_value.iloc[:, 0].sum()
    assert stats["turnover"] == pytest.approx(traded / book.equity.iloc[:, 0].mean())

    fresh = from_signals(panel, entries, exits, size=0.3, size_type="percent", fees=0.001,
                         cash_sharing=True, execution="close")  # fmt: skip
    fresh.stats()
    assert "_full" not in vars(fresh)  # no second kernel run for curves and records


def test_threshold_is_not_forced_by_an_asset_that_is_not_listed_yet():
    """A column outside its listing has no order; it must not count as drifted."""
    idx = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC", name="time")
    close = pd.DataFrame({"A": [10, 10.1, 10.2, 10.1], "B": [10, 10, 10, 10],
                          "C": [np.nan, np.nan, 10, 10]}, index=idx)  # fmt: skip
    weights = pd.DataFrame({"A": 0.5, "B": 0.5, "C": np.nan}, index=idx)
    book = from_orders(close, weights, size_type="targetpercent", cash_sharing=True,
                       execution="close", _threshold=0.3)  # fmt: skip
    assert sorted(set(book.orders["bar"])) == [0]  # drifts of 0.5% never reach 30%

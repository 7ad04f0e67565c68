"""Perpetual futures in the grouped kernel, against hand-computed cases (docs/perpetuals.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris import CelerisTypeError, ConfigError, DataError
from celeris.backtest import from_orders, from_signals
from celeris.data.panel import to_panel

IDX = pd.date_range("2024-01-01", periods=4, freq="8h", tz="UTC", name="time")


def _bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=IDX[: len(rows)])
    frame["volume"] = 1.0
    return frame


def test_isolated_long_opens_on_margin_and_closes_with_realised_pnl():
    bars = _bars([(20_000, 20_000, 20_000, 20_000), (20_500, 21_200, 20_400, 21_000),
                  (21_000, 21_000, 21_000, 21_000)])  # fmt: skip
    size = pd.Series([1.0, np.nan, -1.0], index=bars.index)
    book = from_orders(
        bars, size, instrument="perp", leverage=10, fees=0.0005, init_cash=10_000.0,
        execution="close",
    )  # fmt: skip
    # Bar 0: margin 2,000 and a 10 fee: value 9,990. Bar 1: + 1 x (21,000 - 20,000).
    # Bar 2: realised 1,000, fee 10.5: 10,979.5.
    assert book.equity.iloc[:, 0].tolist() == pytest.approx([9_990.0, 10_990.0, 10_979.5])
    stats = book.stats().iloc[0]
    assert stats["max_margin_usage"] == pytest.approx(2_000 / 9_990)
    assert stats["max_leverage"] == pytest.approx(20_000 / 9_990)  # at bar 0
    assert stats["liquidations"] == 0
    assert book.trades["pnl"].iloc[0] == pytest.approx(1_000 - 10 - 10.5)


def test_long_and_short_liquidated_on_the_bar_of_a_funding_payment():
    """The worked example of docs/perpetuals.md: final wallet 6,100.063."""
    bar0 = (20_000, 20_000, 20_000, 20_000)
    bar1 = (20_000, 22_000, 18_000, 20_000)
    panel = to_panel({"LONG": _bars([bar0, bar1]), "SHORT": _bars([bar0, bar1])})
    size = pd.DataFrame({"LONG": [1.0, np.nan], "SHORT": [-1.0, np.nan]}, index=panel.index)
    funding = pd.DataFrame({"LONG": [0.0, 0.001], "SHORT": [0.0, 0.001]}, index=panel.index)
    book = from_orders(
        panel, size, instrument="perp", leverage=10, fees=0.0005, maintenance_margin=0.005,
        liquidation_fee=0.002, funding_rate=funding, cash_sharing=True, init_cash=10_000.0,
        execution="close",
    )  # fmt: skip
    assert book.equity.iloc[-1, 0] == pytest.approx(6_100.0630016, abs=1e-6)
    orders = book.orders
    liq = orders[orders["kind"] == "liquidation"].set_index("asset")
    assert liq.loc["LONG", "price"] == pytest.approx(18_020 / 0.995)  # (1,980 - 20,000) / -0.995
    assert liq.loc["SHORT", "price"] == pytest.approx(22_020 / 1.005)
    assert liq.loc["LONG", "fees"] == pytest.approx(0.002 * 18_020 / 0.995)
    stats = book.stats().iloc[0]
    assert (stats["liquidations"], stats["funding_paid"], stats["funding_received"]) == (2, 20, 20)
    assert book.funding.tolist() == [20.0, -20.0]
    assert book.positions.iloc[-1].tolist() == [0.0, 0.0]


def test_isolated_gap_through_the_liquidation_price_fills_at_the_open_and_loses_only_the_margin():
    bars = _bars([(100, 100, 100, 100), (80, 85, 75, 82)])
    size = pd.Series([10.0, np.nan], index=bars.index)
    book = from_orders(
        bars, size, instrument="perp", leverage=10, maintenance_margin=0.005,
        liquidation_fee=0.01, init_cash=1_000.0, execution="close",
    )  # fmt: skip
    # Margin 100 (10 x 100 / 10); the bar opens at 80, far below the LP of 90.45: the fill is
    # at the open and the balance there is 100 + 10 x (80 - 100) < 0: nothing comes back.
    liq = book.orders.iloc[-1]
    assert (liq["kind"], liq["price"]) == ("liquidation", 80.0)
    assert book.equity.iloc[-1, 0] == pytest.approx(900.0)


def test_cross_position_uses_the_whole_wallet_as_margin():
    bars = _bars([(100, 100, 100, 100), (100, 100, 60, 70)])
    size = pd.Series([100.0, np.nan], index=bars.index)
    common = dict(instrument="perp", leverage=10, maintenance_margin=0.005, init_cash=5_000.0,
                  execution="close")  # fmt: skip
    isolated = from_orders(bars, size, **common)
    cross = from_orders(bars, size, margin_mode="cross", **common)
    # Isolated: margin 1,000, LP (1,000 - 10,000) / (0.5 - 100) = 90.45: liquidated.
    assert isolated.orders["kind"].tolist() == ["order", "liquidation"]
    assert isolated.orders["price"].iloc[-1] == pytest.approx(9_000 / 99.5)
    # Cross: the wallet of 5,000 backs it: LP (5,000 - 10,000) / -99.5 = 50.25, not reached.
    assert cross.orders["kind"].tolist() == ["order"]
    assert cross.equity.iloc[-1, 0] == pytest.approx(5_000 + 100 * (70 - 100))


def test_signals_with_all_free_margin_buy_leverage_times_the_margin():
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100), (110, 110, 110, 110)])
    entries = pd.Series([True, False, False], index=bars.index)
    book = from_signals(
        bars, entries, ~entries, instrument="perp", leverage=3, fees=0.001, init_cash=10_000.0,
        execution="close",
    )  # fmt: skip
    units = 10_000 / (100 * (1 / 3 + 0.001))
    assert book.orders["size"].iloc[0] == pytest.approx(units)
    assert book.stats()["max_leverage"].iloc[0] == pytest.approx(
        units * 100 / (10_000 - units * 0.1)
    )


def test_stop_loss_still_exits_a_perp_position_before_liquidation_would():
    bars = _bars([(100, 100, 100, 100), (99, 99, 94, 95), (95, 95, 95, 95)])
    entries = pd.Series([True, False, False], index=bars.index)
    book = from_signals(
        bars, entries, entries & False, instrument="perp", leverage=5, size=10.0, sl_stop=0.05,
        init_cash=10_000.0, execution="close",
    )  # fmt: skip
    assert book.orders["kind"].tolist() == ["order", "stop"]
    assert book.orders["price"].iloc[-1] == pytest.approx(95.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(instrument="perp", leverage=0.5),
            ConfigError,
            "leverage must be a finite number >= 1",
        ),
        (dict(leverage=3), ConfigError, "leverage applies to perpetual futures"),
        (dict(instrument="future"), ConfigError, "instrument"),
        (dict(instrument="perp", margin_mode="portfolio"), ConfigError, "margin_mode"),
        (dict(funding_rate=0.0001), ConfigError, "funding_rate and mark_price apply"),
        (dict(instrument="perp", liquidation_fee=2.0), ConfigError, "liquidation_fee"),
        (dict(instrument="perp", maintenance_margin=1.5), ConfigError, "maintenance_margin"),
        (
            dict(instrument="perp", funding_rate="0.01%"),
            CelerisTypeError,
            "funding_rate must be numeric",
        ),
    ],
)
def test_perp_options_are_validated(kwargs, error, match):
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100)])
    with pytest.raises(error, match=match):
        from_orders(bars, 1.0, execution="close", **kwargs)


def test_misaligned_or_unbounded_funding_is_a_data_error_naming_the_place():
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100)])
    funding = pd.Series([0.0, 0.001], index=bars.index[:2])
    with pytest.raises(
        DataError, match=r"funding_rate is not aligned to the bars.*2024-01-01 16:00"
    ):
        from_orders(bars, 1.0, instrument="perp", funding_rate=funding, execution="close")
    big = pd.Series([0.0, 0.5, 0.0], index=bars.index)
    with pytest.raises(DataError, match=r"funding_rate at 2024-01-01 08:00:00\+00:00"):
        from_orders(bars, 1.0, instrument="perp", funding_rate=big, execution="close")


def test_a_cash_sharing_group_cannot_mix_spot_and_perp_columns():
    panel = to_panel({s: _bars([(100, 100, 100, 100)] * 2) for s in "AB"})
    with pytest.raises(ConfigError, match="group 0 mixes spot and perpetual columns"):
        from_orders(panel, 1.0, instrument=["spot", "perp"], cash_sharing=True, execution="close")


# ---- limit orders ----

LIMIT_IDX = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC", name="time")


def _limit_bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["open", "high", "low", "close"], index=LIMIT_IDX[: len(rows)]
    )
    return frame


def _entry_at(bars: pd.DataFrame, *bars_idx: int) -> pd.Series:
    entries = pd.Series(False, index=bars.index)
    entries.iloc[list(bars_idx)] = True
    return entries


LIMIT_ROWS = [(100, 100, 100, 100), (99, 100, 97, 98), (97, 98, 94, 96), (96, 97, 95, 96)]


def test_limit_buy_rests_until_a_bar_trades_through_it_and_pays_the_maker_fee():
    bars = _limit_bars(LIMIT_ROWS)
    limit = pd.Series([95.0, np.nan, np.nan, np.nan], index=bars.index)
    book = from_signals(
        bars, _entry_at(bars, 0), _entry_at(bars) , size=10.0, order_type="limit",
        limit_price=limit, fees=0.001, maker_fee=0.0002, execution="close",
    )  # fmt: skip
    order = book.orders.iloc[0]
    assert (order["kind"], order["bar"], order["price"]) == ("limit", 2, 95.0)
    assert order["fees"] == pytest.approx(10 * 95 * 0.0002)


def test_limit_order_gapped_through_fills_at_its_price_and_expires_after_its_bars():
    bars = _limit_bars([(100, 100, 100, 100), (93, 94, 92, 93), (90, 91, 89, 90)])
    limit = pd.Series([95.0, np.nan, np.nan], index=bars.index)
    book = from_signals(bars, _entry_at(bars, 0), _entry_at(bars), size=1.0, order_type="limit",
                        limit_price=limit, execution="close")  # fmt: skip
    assert book.orders["price"].tolist() == [95.0]  # no price improvement at the gap's open
    late = _limit_bars(LIMIT_ROWS)
    once = from_signals(late, _entry_at(late, 0), _entry_at(late), size=1.0, order_type="limit",
                        limit_price=pd.Series(95.0, index=late.index), limit_expiry=1,
                        execution="close")  # fmt: skip
    assert once.orders.empty  # only bar 1 could fill it, and its low was 97


def test_limit_orders_under_next_open_rest_from_the_bar_after_the_signal():
    bars = _limit_bars(LIMIT_ROWS)
    limit = pd.Series([97.5, np.nan, np.nan, np.nan], index=bars.index)
    book = from_signals(bars, _entry_at(bars, 0), _entry_at(bars), size=1.0, order_type="limit",
                        limit_price=limit)  # fmt: skip
    assert (book.orders["bar"].iloc[0], book.orders["price"].iloc[0]) == (1, 97.5)


def test_a_stop_cancels_the_resting_exit_and_nan_limit_means_market():
    bars = _limit_bars([(100, 100, 100, 100), (100, 101, 99, 100), (99, 99, 90, 92),
                        (92, 115, 92, 112)])  # fmt: skip
    limit = pd.Series([np.nan, 110.0, np.nan, np.nan], index=bars.index)
    book = from_signals(
        bars, _entry_at(bars, 0), _entry_at(bars, 1), size=1.0, sl_stop=0.05,
        order_type="limit", limit_price=limit, execution="close",
    )  # fmt: skip
    # Bar 0: NaN limit, a market buy at 100. Bar 1: the exit rests at 110. Bar 2: the stop
    # sells at 95 and cancels it, so bar 3's high of 115 fills nothing.
    assert book.orders["kind"].tolist() == ["order", "stop"]
    assert book.orders["price"].tolist() == [100.0, 95.0]


def test_perp_limit_fill_pays_the_maker_fee_on_margin():
    bars = _limit_bars(LIMIT_ROWS)
    limit = pd.Series([95.0, np.nan, np.nan, np.nan], index=bars.index)
    book = from_signals(
        bars, _entry_at(bars, 0), _entry_at(bars), size=10.0, order_type="limit",
        limit_price=limit, instrument="perp", leverage=5, fees=0.0005, maker_fee=0.0002,
        init_cash=1_000.0, execution="close",
    )  # fmt: skip
    # Wallet 1,000 - 0.19 fee; at bar 3's close 96: + 10 x (96 - 95).
    assert book.equity.iloc[-1, 0] == pytest.approx(1_000 - 10 * 95 * 0.0002 + 10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(order_type="limit"), "order_type='limit' needs limit_price"),
        (dict(limit_price=95.0 * np.ones(4)), "limit_price applies to order_type='limit'"),
        (dict(order_type="limit", limit_price=np.ones(4), limit_expiry=0), "limit_expiry"),
        (dict(order_type="stop"), "order_type"),
    ],
)
def test_limit_options_are_validated(kwargs, match):
    bars = _limit_bars(LIMIT_ROWS)
    with pytest.raises(ConfigError, match=match):
        from_signals(bars, _entry_at(bars, 0), _entry_at(bars), execution="close", **kwargs)

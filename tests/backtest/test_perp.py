"""Perpetual-futures formulas (celeris.backtest.perp) against hand-computed and published cases.

Every expected number is worked out in the comments beside it. "Binance" cases use the values
Binance USDⓈ-M publishes (docs/perpetuals.md cites the pages).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from celeris import CelerisTypeError, ConfigError, DataError
from celeris.backtest import perp
from celeris.backtest.perp import (
    LIMIT_GAP,
    LIMIT_HIT,
    LIMIT_NONE,
    LIQ_GAP,
    LIQ_HIT,
    LIQ_NONE,
    TIER_CUM,
    TIER_RATE,
    funding_payment,
    initial_margin,
    isolated_bar,
    limit_fill,
    liquidation_fill,
    liquidation_price_cross,
    liquidation_price_isolated,
    maintenance_margin,
    maintenance_tiers,
)

ROOT = Path(__file__).resolve().parents[2]

# BTCUSDT 125x leverage and margin tiers, Binance announcement of 2021-03-18 (cap, rate).
BTCUSDT_2021 = [
    (50_000, 0.004),
    (250_000, 0.005),
    (1_000_000, 0.01),
    (10_000_000, 0.025),
    (20_000_000, 0.05),
    (50_000_000, 0.10),
    (100_000_000, 0.125),
    (200_000_000, 0.15),
    (300_000_000, 0.25),
    (500_000_000, 0.50),
]
# cum by continuity, cum_k = cum_{k-1} + cap_{k-1} x (rate_k - rate_{k-1}):
# 0; 0 + 50k x 0.001 = 50; 50 + 250k x 0.005 = 1,300; 1,300 + 1M x 0.015 = 16,300;
# 16,300 + 10M x 0.025 = 266,300; + 20M x 0.05 = 1,266,300; + 50M x 0.025 = 2,516,300;
# + 100M x 0.025 = 5,016,300; + 200M x 0.10 = 25,016,300; + 300M x 0.25 = 100,016,300.
BTCUSDT_2021_CUM = [
    0.0,
    50.0,
    1_300.0,
    16_300.0,
    266_300.0,
    1_266_300.0,
    2_516_300.0,
    5_016_300.0,
    25_016_300.0,
    100_016_300.0,
]


# --- tier tables ------------------------------------------------------------------------------


def test_maintenance_tiers_derived_cum_matches_binance_published_amounts():
    tiers = maintenance_tiers(BTCUSDT_2021)
    assert tiers.shape == (10, 3) and tiers.dtype == np.float64
    assert tiers[:, TIER_CUM].tolist() == pytest.approx(BTCUSDT_2021_CUM, rel=1e-12)
    assert not tiers.flags.writeable


def test_maintenance_tiers_given_cum_rows_accepted():
    rows = [(c, r, m) for (c, r), m in zip(BTCUSDT_2021, BTCUSDT_2021_CUM, strict=True)]
    given, derived = maintenance_tiers(rows), maintenance_tiers(BTCUSDT_2021)
    # the published cums are exact; the derived ones carry float rounding (50.00000000000001)
    assert given[:, TIER_CUM].tolist() == BTCUSDT_2021_CUM
    np.testing.assert_allclose(derived, given, rtol=1e-12, atol=0)


def test_maintenance_tiers_binance_bracket_mappings_accepted():
    # The shape of Binance's leverageBracket answer: floor, cap, ratio, cum.
    brackets = [
        {"notionalFloor": 0, "notionalCap": 50_000, "maintMarginRatio": 0.004, "cum": 0.0},
        {"notionalFloor": 50_000, "notionalCap": 250_000, "maintMarginRatio": 0.005, "cum": 50.0},
    ]
    expected = np.array([[50_000.0, 0.004, 0.0], [250_000.0, 0.005, 50.0]])
    assert np.array_equal(maintenance_tiers(brackets), expected)


def test_maintenance_tiers_frame_accepted():
    frame = pd.DataFrame({"notional_cap": [50_000.0, np.inf], "rate": [0.004, 0.005]})
    # cum_1 = 0 + 50,000 x (0.005 - 0.004) = 50
    assert maintenance_tiers(frame).tolist() == [[50_000.0, 0.004, 0.0], [np.inf, 0.005, 50.0]]


def test_maintenance_tiers_flat_rate_is_one_uncapped_tier():
    assert maintenance_tiers(0.005).tolist() == [[math.inf, 0.005, 0.0]]


def test_maintenance_tiers_broken_continuity_names_tier_and_expected_cum():
    rows = [(50_000, 0.004, 0.0), (250_000, 0.005, 50.0), (1_000_000, 0.01, 1_250.0)]
    with pytest.raises(ConfigError, match=r"tier 2: cum 1250.0 breaks continuity.*expected 1300"):
        maintenance_tiers(rows)


def test_maintenance_tiers_first_cum_not_zero_raises():
    with pytest.raises(ConfigError, match=r"tier 0: cum 5.0 breaks the first tier's cum must be 0"):
        maintenance_tiers([(50_000, 0.004, 5.0)])


def test_maintenance_tiers_caps_not_increasing_raise():
    with pytest.raises(ConfigError, match=r"tier 1: notional caps must increase"):
        maintenance_tiers([(50_000, 0.004), (50_000, 0.005)])


def test_maintenance_tiers_uncapped_tier_not_last_raises():
    with pytest.raises(ConfigError, match=r"tier 1: follows a tier with no cap"):
        maintenance_tiers([(np.inf, 0.004), (1e9, 0.005)])


@pytest.mark.parametrize("rate", [1.0, -0.001, math.nan])
def test_maintenance_tiers_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ConfigError, match=r"tier 1 rate must be"):
        maintenance_tiers([(50_000, 0.004), (250_000, rate)])


def test_maintenance_tiers_flat_rate_of_one_raises():
    with pytest.raises(ConfigError, match=r"maintenance_margin must be in \[0, 1\)"):
        maintenance_tiers(1.0)


def test_maintenance_tiers_floor_not_previous_cap_raises():
    brackets = [
        {"notionalCap": 50_000, "maintMarginRatio": 0.004},
        {"notionalFloor": 40_000, "notionalCap": 250_000, "maintMarginRatio": 0.005},
    ]
    with pytest.raises(
        ConfigError, match=r"tier 1: notional floor 40000.0 is not the previous cap"
    ):
        maintenance_tiers(brackets)


@pytest.mark.parametrize(
    ("table", "error", "match"),
    [
        ([], ConfigError, "has no tier"),
        (np.zeros((2, 4)), ConfigError, "got shape"),
        ("0.004", CelerisTypeError, "got str"),
        ([(50_000,)], ConfigError, r"tier 0: expected \(cap, rate\[, cum\]\)"),
        ([{"cap": 1, "mmr": 0.1}], ConfigError, "a mapping needs"),
        ([(-5, 0.004)], ConfigError, "tier 0 notional cap must be > 0"),
        ([("big", 0.004)], CelerisTypeError, "tier 0 notional cap must be a real"),
        (True, CelerisTypeError, "got bool"),
    ],
)
def test_maintenance_tiers_bad_table_raises(table, error, match):
    with pytest.raises(error, match=match):
        maintenance_tiers(table)


# --- margins ----------------------------------------------------------------------------------


def test_initial_margin_is_notional_over_leverage():
    # |-2| x 30,000 / 20 = 3,000
    assert initial_margin(-2.0, 30_000.0, 20) == 3_000.0


@pytest.mark.parametrize("leverage", [0.5, 0.0, -3.0])
def test_initial_margin_leverage_below_one_raises(leverage):
    with pytest.raises(ConfigError, match=r"leverage must be >= 1"):
        initial_margin(1.0, 100.0, leverage)


def test_maintenance_margin_binance_published_examples():
    tiers = maintenance_tiers(BTCUSDT_2021)
    # Binance: a 264,000 USDT BTCUSDT position is in the 1% tier; 500,000 has cum 1,300.
    assert perp.tier_of_nb(tiers, 264_000.0) == 2
    assert tiers[perp.tier_of_nb(tiers, 500_000.0), TIER_CUM] == 1_300.0
    # Binance's cross example: MM of BTCUSDT = 3,500,032.458 x 2.50% - 16,300 = 71,200.81145
    # (published truncated as 71,200.81144).
    mm = maintenance_margin(1.0, 3_500_032.458, tiers)
    assert mm == pytest.approx(71_200.81145, abs=1e-6)
    assert abs(mm - 71_200.81144) < 2e-5


def test_maintenance_margin_continuous_at_tier_caps():
    tiers = maintenance_tiers(BTCUSDT_2021)
    for k in range(len(BTCUSDT_2021) - 1):
        cap = float(BTCUSDT_2021[k][0])
        # tier k at its cap vs tier k+1's formula at the same notional
        upper = cap * tiers[k + 1, TIER_RATE] - tiers[k + 1, TIER_CUM]
        assert perp.maintenance_margin_nb(tiers, cap) == pytest.approx(upper, rel=1e-12)


def test_maintenance_margin_flat_rate():
    # 0.5 x 30,000 x 0.004 = 60
    assert maintenance_margin(-0.5, 30_000.0, 0.004) == pytest.approx(60.0, rel=1e-15)


# --- liquidation price --------------------------------------------------------------------------


def test_liquidation_price_isolated_long_flat_rate():
    # 1 BTC long at 10,000, 50x: margin 10,000 / 50 = 200, MMR 0.5%, cum 0.
    # LP = (WB + cum - side x size x EP) / (size x MMR - side x size)
    #    = (200 + 0 - 10,000) / (0.005 - 1) = 9,800 / 0.995 = 9,849.2462311...
    lp = liquidation_price_isolated(1.0, 10_000.0, 0.005, leverage=50)
    assert lp == pytest.approx(9_800.0 / 0.995, rel=1e-14)


def test_liquidation_price_isolated_short_flat_rate():
    # 1 BTC short at 10,000, 50x: LP = (200 + 0 + 10,000) / (0.005 + 1) = 10,149.2537313...
    lp = liquidation_price_isolated(-1.0, 10_000.0, 0.005, leverage=50)
    assert lp == pytest.approx(10_200.0 / 1.005, rel=1e-14)


def test_liquidation_price_isolated_margin_equals_leverage_form():
    by_leverage = liquidation_price_isolated(3.0, 2_000.0, 0.01, leverage=10)
    # margin = 3 x 2,000 / 10 = 600
    assert liquidation_price_isolated(3.0, 2_000.0, 0.01, margin=600.0) == by_leverage


def test_liquidation_price_long_uses_tier_at_liquidation_not_at_entry():
    tiers = maintenance_tiers(BTCUSDT_2021)
    # 30 BTC long at 10,000: notional 300,000 is in tier 2 (1%, cum 1,300); margin 60,000 (5x).
    # Tier 2: LP = (60,000 + 1,300 - 300,000) / (30 x 0.01 - 30) = 8,037.037 -> notional
    #   241,111 <= 250,000: not in tier 2, inconsistent.
    # Tier 1: LP = (60,000 + 50 - 300,000) / (30 x 0.005 - 30) = 239,950 / 29.85 = 8,038.526
    #   -> notional 241,155.8 in (50,000, 250,000]: consistent, the answer.
    lp = liquidation_price_isolated(30.0, 10_000.0, tiers, margin=60_000.0)
    assert lp == pytest.approx(239_950.0 / 29.85, rel=1e-14)
    assert 50_000 < 30 * lp <= 250_000


def test_liquidation_price_short_moves_up_a_tier():
    tiers = maintenance_tiers(BTCUSDT_2021)
    # 20 BTC short at 10,000: notional 200,000 (tier 1: 0.5%, cum 50), margin 70,000.
    # Tier 1: LP = (70,000 + 50 + 200,000) / (20 x 0.005 + 20) = 13,435.32 -> notional
    #   268,706 > 250,000: inconsistent.
    # Tier 2: LP = (70,000 + 1,300 + 200,000) / (20 x 0.01 + 20) = 271,300 / 20.2 = 13,430.69
    #   -> notional 268,614 in (250,000, 1,000,000]: the answer.
    lp = liquidation_price_isolated(-20.0, 10_000.0, tiers, margin=70_000.0)
    assert lp == pytest.approx(271_300.0 / 20.2, rel=1e-14)


def test_liquidation_price_long_at_one_x_is_none():
    # 1x long: margin = notional, LP = (N + 0 - N) / (size x (MMR - 1)) = 0 -> no liquidation.
    assert liquidation_price_isolated(2.0, 500.0, 0.01, leverage=1) == 0.0


def test_liquidation_price_cross_with_other_positions():
    # Wallet 10,000; other cross positions: MM 500, unrealised PnL -1,500; 1 BTC long at
    # 20,000, MMR 0.4%.
    # LP = (10,000 - 500 + (-1,500) + 0 - 20,000) / (0.004 - 1) = 12,000 / 0.996 = 12,048.19...
    # Check: margin balance 10,000 - 1,500 + (12,048.19 - 20,000) = 548.19
    #        = MM 500 + 12,048.19 x 0.004 = 548.19.
    lp = liquidation_price_cross(
        1.0,
        20_000.0,
        0.004,
        wallet=10_000.0,
        other_maintenance=500.0,
        other_unrealised_pnl=-1_500.0,
    )
    assert lp == pytest.approx(12_000.0 / 0.996, rel=1e-14)


def test_liquidation_price_cross_single_position_equals_isolated_with_wallet():
    tiers = maintenance_tiers(BTCUSDT_2021)
    for size in (25.0, -25.0):
        cross = liquidation_price_cross(size, 10_000.0, tiers, wallet=40_000.0)
        assert cross == liquidation_price_isolated(size, 10_000.0, tiers, margin=40_000.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": 0.0, "leverage": 10}, ConfigError, "size must be non-zero"),
        ({"size": 1.0, "leverage": 0.5}, ConfigError, "leverage must be >= 1"),
        ({"size": 1.0}, ConfigError, "exactly one of leverage= or margin="),
        ({"size": 1.0, "leverage": 2, "margin": 5.0}, ConfigError, "exactly one"),
        ({"size": 1.0, "margin": -5.0}, ConfigError, "margin must be >= 0"),
        ({"size": "1", "leverage": 2}, CelerisTypeError, "size must be a real number"),
        ({"size": math.inf, "leverage": 2}, ConfigError, "size must be finite"),
    ],
)
def test_liquidation_price_isolated_bad_input_raises(kwargs, error, match):
    size = kwargs.pop("size")
    with pytest.raises(error, match=match):
        liquidation_price_isolated(size, 100.0, 0.01, **kwargs)


def test_liquidation_price_nonpositive_entry_raises():
    with pytest.raises(ConfigError, match=r"entry_price must be > 0"):
        liquidation_price_isolated(1.0, 0.0, 0.01, leverage=2)


# --- funding ----------------------------------------------------------------------------------


def test_funding_payment_long_pays_short_receives():
    # notional 2 x 30,000 = 60,000; x 0.01% = 6
    assert funding_payment(2.0, 30_000.0, 0.0001) == pytest.approx(6.0, rel=1e-15)
    assert funding_payment(-2.0, 30_000.0, 0.0001) == pytest.approx(-6.0, rel=1e-15)


def test_funding_payment_negative_rate_reverses():
    assert funding_payment(2.0, 30_000.0, -0.0001) == pytest.approx(-6.0, rel=1e-15)
    assert funding_payment(-2.0, 30_000.0, -0.0001) == pytest.approx(6.0, rel=1e-15)


def test_funding_payment_rate_beyond_data_bound_raises():
    with pytest.raises(ConfigError, match=r"rate must be in \[-0.1, 0.1\]"):
        funding_payment(1.0, 100.0, 0.5)


def test_isolated_bar_zero_rate_charges_no_funding():
    out = isolated_bar(1.0, 100.0, 50.0, 0.01, open=100.0, high=101.0, low=99.0)
    assert out.funding == 0.0 and out.margin == 50.0 and out.status == LIQ_NONE


# --- liquidation within a bar --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "bar", "expected"),
    [
        (1.0, (100.0, 101.0, 94.0), (LIQ_HIT, 95.0)),  # long: low 94 <= 95
        (1.0, (94.0, 96.0, 93.0), (LIQ_GAP, 94.0)),  # long: opens at 94 below 95, fills at 94
        (1.0, (100.0, 101.0, 96.0), (LIQ_NONE, math.nan)),  # long: low 96 > 95
        (-1.0, (100.0, 106.0, 99.0), (LIQ_HIT, 105.0)),  # short: high 106 >= 105
        (-1.0, (107.0, 108.0, 104.0), (LIQ_GAP, 107.0)),  # short: opens at 107 above 105
        (-1.0, (100.0, 104.0, 99.0), (LIQ_NONE, math.nan)),  # short: high 104 < 105
    ],
)
def test_liquidation_fill_adverse_extreme_against_liquidation_price(size, bar, expected):
    liq = 95.0 if size > 0 else 105.0
    status, price = liquidation_fill(size, liq, *bar)
    assert status == expected[0]
    assert price == expected[1] or (math.isnan(price) and math.isnan(expected[1]))


def test_liquidation_fill_short_under_maintenance_at_any_price_closes_at_open():
    # LP 0.0 for a short: no positive price leaves it above maintenance. Filling at 0 would
    # hand it the whole notional as profit; it closes at the open instead.
    assert liquidation_fill(-1.0, 0.0, 101.0, 102.0, 99.0) == (LIQ_GAP, 101.0)


def test_isolated_bar_underwater_short_returns_nothing():
    # Kernel level (the API refuses a negative margin): margin -150 on a short of 1 at 100.
    # LP root (-150 + 0 + 100) / (0.01 + 1) < 0 -> 0.0 -> closed at the open 101:
    # left = -150 - (101 - 100) = -151 < 0, so no fee can be charged and nothing comes back.
    tiers = maintenance_tiers(0.01)
    status, margin, lp, funding, fee = perp.isolated_bar_nb(
        tiers, -1.0, 100.0, -150.0, 101.0, 102.0, 99.0, 0.0, 101.0, 0.005
    )
    assert (status, margin, lp, funding, fee) == (LIQ_GAP, 0.0, 0.0, 0.0, 0.0)


def test_liquidation_fill_bar_with_low_above_open_raises():
    with pytest.raises(DataError, match=r"low <= open <= high, got low=101.0"):
        liquidation_fill(1.0, 95.0, 100.0, 102.0, 101.0)


def test_liquidation_fee_on_notional_at_liquidation_price():
    # 2 units closed at 95 with a 0.5% fee: 2 x 95 x 0.005 = 0.95
    assert perp.trade_fee_nb(-2.0, 95.0, 0.005) == pytest.approx(0.95, rel=1e-15)


def test_isolated_bar_fee_capped_at_margin_left():
    # 1 long at 100, margin 10, MMR 0.4%; no funding. LP = (10 - 100) / (0.004 - 1) = 90.3614...
    # At LP the margin left is MM = 90.3614 x 0.004 = 0.3614; a 1% fee (0.9036) exceeds it,
    # so the fee is 0.3614 and nothing comes back.
    out = isolated_bar(
        1.0, 100.0, 10.0, 0.004, open=99.0, high=101.0, low=90.0, liquidation_fee=0.01
    )
    lp = 90.0 / 0.996
    assert out.status == LIQ_HIT
    assert out.liquidation_price == pytest.approx(lp, rel=1e-14)
    assert out.fee == pytest.approx(lp * 0.004, rel=1e-9)
    assert out.margin == 0.0


def test_long_and_short_liquidated_on_funding_bar_final_wallet():
    # Account of 10,000. At 20,000 open 1 long and 1 short, each isolated at 10x (margin 2,000)
    # paying a 0.05% taker fee (10 each): free wallet 10,000 - 4,000 - 20 = 5,980.
    # The next bar is a funding time: rate 0.1% at mark 20,000 (its open).
    #   long pays 1 x 20,000 x 0.001 = 20 -> margin 1,980; short receives 20 -> margin 2,020.
    # Flat MMR 0.5%:
    #   long  LP = (1,980 - 20,000) / (0.005 - 1) = 18,020 / 0.995 = 18,110.5527638...
    #   short LP = (2,020 + 20,000) / (0.005 + 1) = 22,020 / 1.005 = 21,910.4477612...
    # The bar (open 20,000, high 22,000, low 18,000) reaches both. At its LP each position has
    # margin left MM = 0.5% x LP, less the 0.2% liquidation fee on LP: 0.3% x LP comes back.
    #   final wallet = 5,980 + 0.003 x (18,110.5527638 + 21,910.4477612) = 6,100.0630016
    tiers = maintenance_tiers(0.005)
    wallet = 10_000.0
    margin = initial_margin(1.0, 20_000.0, 10)
    wallet -= 2 * margin + 2 * perp.trade_fee_nb(1.0, 20_000.0, 0.0005)
    assert wallet == 5_980.0
    bar = dict(
        open=20_000.0, high=22_000.0, low=18_000.0, funding_rate=0.001, liquidation_fee=0.002
    )
    long = isolated_bar(1.0, 20_000.0, margin, tiers, **bar)
    short = isolated_bar(-1.0, 20_000.0, margin, tiers, **bar)
    assert (long.status, short.status) == (LIQ_HIT, LIQ_HIT)
    assert (long.funding, short.funding) == (20.0, -20.0)
    assert long.liquidation_price == pytest.approx(18_020.0 / 0.995, rel=1e-14)
    assert short.liquidation_price == pytest.approx(22_020.0 / 1.005, rel=1e-14)
    assert long.fee == pytest.approx(0.002 * 18_020.0 / 0.995, rel=1e-12)
    final = wallet + long.margin + short.margin
    assert final == pytest.approx(
        5_980.0 + 0.003 * (18_020.0 / 0.995 + 22_020.0 / 1.005), rel=1e-12
    )
    assert final == pytest.approx(6_100.0630016, abs=1e-6)


def test_funding_alone_pushes_long_past_liquidation_gap():
    # 1 long at 100 with margin 1.5, MMR 1%: LP before funding = (1.5 - 100) / (0.01 - 1) = 99.495.
    # The bar opens at 99.6 > 99.495, but funding of 1 x 99.6 x 0.01 = 0.996 leaves margin 0.504:
    # LP = (0.504 - 100) / (0.01 - 1) = 100.501 >= open -> LIQ_GAP, closed at the open 99.6:
    # margin left 0.504 + 1 x (99.6 - 100) = 0.104 (no liquidation fee), not the MM at 100.501.
    out = isolated_bar(1.0, 100.0, 1.5, 0.01, open=99.6, high=99.9, low=99.55, funding_rate=0.01)
    assert out.status == LIQ_GAP
    assert out.liquidation_price == pytest.approx((100.0 - 0.504) / 0.99, rel=1e-12)
    assert out.margin == pytest.approx(0.104, rel=1e-12)
    assert out.fee == 0.0


def test_isolated_bar_gap_after_funding_returns_no_margin_the_account_lacked():
    # 1 long at 30,000, margin 300, MMR 0.4%; funding 1 x 30,000 x 0.01 = 300 leaves margin 0:
    # LP = (0 - 30,000) / (0.004 - 1) = 30,120.48 >= open 30,000 -> LIQ_GAP, filled at the open:
    # left = 0 + 1 x (30,000 - 30,000) = 0 -> nothing comes back (was 0.004 x 30,120.48 = 120.48).
    out = isolated_bar(
        1.0, 30_000.0, 300.0, 0.004, open=30_000.0, high=30_000.0, low=30_000.0, funding_rate=0.01
    )
    assert (out.status, out.funding, out.margin, out.fee) == (LIQ_GAP, 300.0, 0.0, 0.0)


def test_isolated_bar_short_gap_from_zero_margin_returns_nothing():
    # 1 short at 30,000 with margin 0, MMR 0.4%: LP = (0 + 30,000) / (0.004 + 1) = 29,880.48
    # <= open 30,000 -> LIQ_GAP at the open: left = 0 - 1 x (30,000 - 30,000) = 0, so 0 comes
    # back (filling at the LP returned 30,000 - 29,880.48 = 119.52 the account never had).
    out = isolated_bar(-1.0, 30_000.0, 0.0, 0.004, open=30_000.0, high=30_000.0, low=30_000.0)
    assert (out.status, out.margin, out.fee) == (LIQ_GAP, 0.0, 0.0)


def test_isolated_bar_gap_with_balance_left_pays_capped_fee_at_open():
    # 1 short at 100, margin 10, MMR 1%: LP = (10 + 100) / (0.01 + 1) = 108.9109 <= open 109
    # -> LIQ_GAP at 109: left = 10 - 1 x (109 - 100) = 1; fee 1 x 109 x 0.5% = 0.545 < 1,
    # so 1 - 0.545 = 0.455 comes back.
    out = isolated_bar(
        -1.0, 100.0, 10.0, 0.01, open=109.0, high=110.0, low=108.0, liquidation_fee=0.005
    )
    assert out.status == LIQ_GAP
    assert out.fee == pytest.approx(0.545, rel=1e-12)
    assert out.margin == pytest.approx(0.455, rel=1e-12)


# --- limit orders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "bar", "expected"),
    [
        ("buy", (102.0, 103.0, 99.5), (LIMIT_HIT, 100.0)),  # low 99.5 <= 100
        ("buy", (99.0, 101.0, 98.0), (LIMIT_GAP, 100.0)),  # opens below 100: at 100, not 99
        ("buy", (102.0, 103.0, 100.5), (LIMIT_NONE, math.nan)),
        ("sell", (98.0, 100.5, 97.0), (LIMIT_HIT, 100.0)),
        ("sell", (101.0, 102.0, 99.0), (LIMIT_GAP, 100.0)),
        ("sell", (98.0, 99.5, 97.0), (LIMIT_NONE, math.nan)),
    ],
)
def test_limit_fill_at_limit_price_when_bar_trades_through(side, bar, expected):
    status, price = limit_fill(side, 100.0, *bar)
    assert status == expected[0]
    assert price == expected[1] or (math.isnan(price) and math.isnan(expected[1]))


def test_limit_fill_pays_maker_fee_on_limit_price():
    _, price = limit_fill("buy", 100.0, 102.0, 103.0, 99.0)
    # 1.5 x 100 x 0.02% = 0.03
    assert perp.trade_fee_nb(1.5, price, 0.0002) == pytest.approx(0.03, rel=1e-15)


def test_limit_fill_unknown_side_raises_with_hint():
    with pytest.raises(ConfigError, match=r"unknown side 'buyy' \(did you mean 'buy'\?\)"):
        limit_fill("buyy", 100.0, 102.0, 103.0, 99.0)


# --- properties -------------------------------------------------------------------------------


@st.composite
def tier_tables(draw):
    n = draw(st.integers(1, 6))
    caps = np.cumsum(draw(st.lists(st.floats(1e3, 1e7), min_size=n, max_size=n)))
    rates = np.sort(draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n)))
    rows = [(float(c), float(r)) for c, r in zip(caps, rates, strict=True)]
    if draw(st.booleans()):
        rows[-1] = (math.inf, rows[-1][1])
    return maintenance_tiers(rows)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    tiers=tier_tables(),
    size=st.floats(1e-3, 1e3),
    entry=st.floats(1e-2, 1e5),
    leverage=st.floats(1.0, 125.0),
    long=st.booleans(),
)
def test_liquidation_price_margin_balance_equals_maintenance_margin(
    tiers, size, entry, leverage, long
):
    position = size if long else -size
    margin = initial_margin(position, entry, leverage)
    lp = liquidation_price_isolated(position, entry, tiers, leverage=leverage)
    assume(lp > 0.0)
    surplus = perp.margin_surplus_nb(tiers, position, entry, lp, margin, 0.0, 0.0)
    # margin balance - MM at LP is 0 up to rounding of the terms (scale: the notional)
    assert abs(surplus) <= 1e-9 * max(1.0, size * max(lp, entry))


@PROPERTY
@given(
    tiers=tier_tables(),
    size=st.floats(1e-3, 1e3),
    entry=st.floats(1e-2, 1e5),
    wallet_share=st.floats(0.01, 2.0),
    other_mm=st.floats(0.0, 1e4),
    other_upnl=st.floats(-1e4, 1e4),
    long=st.booleans(),
)
def test_liquidation_price_cross_margin_balance_equals_maintenance_margin(
    tiers, size, entry, wallet_share, other_mm, other_upnl, long
):
    # Cross: wallet + others' PnL + this PnL = others' MM + this MM at LP.
    position = size if long else -size
    wallet = wallet_share * size * entry
    lp = liquidation_price_cross(
        position,
        entry,
        tiers,
        wallet=wallet,
        other_maintenance=other_mm,
        other_unrealised_pnl=other_upnl,
    )
    assume(lp > 0.0)
    surplus = perp.margin_surplus_nb(tiers, position, entry, lp, wallet, other_mm, other_upnl)
    scale = max(1.0, size * max(lp, entry), wallet, other_mm, abs(other_upnl))
    assert abs(surplus) <= 1e-9 * scale


@PROPERTY
@given(
    tiers=tier_tables(),
    size=st.floats(1e-3, 1e3),
    entry=st.floats(1e-2, 1e5),
    leverage=st.floats(1.01, 125.0),
)
def test_liquidation_price_long_below_entry_below_short(tiers, size, entry, leverage):
    # A position opened within its initial margin (IM > MM at entry, as the exchange's max
    # leverage per tier guarantees) is not liquidatable at its entry.
    notional = size * entry
    assume(notional / leverage > perp.maintenance_margin_nb(tiers, notional) * (1 + 1e-9))
    long = liquidation_price_isolated(size, entry, tiers, leverage=leverage)
    short = liquidation_price_isolated(-size, entry, tiers, leverage=leverage)
    assert long < entry < short


# --- compiled kernels equal the Python source bit for bit -----------------------------------------


def _cases(rng: np.random.Generator, n: int = 64):
    tiers = maintenance_tiers(BTCUSDT_2021)
    for _ in range(n):
        position = float(rng.choice([-1, 1]) * 10 ** rng.uniform(-2, 3))
        entry = float(10 ** rng.uniform(0, 5))
        margin = abs(position) * entry / float(10 ** rng.uniform(0, 2))
        low = entry * float(rng.uniform(0.5, 1.0))
        high = entry * float(rng.uniform(1.0, 1.5))
        open_ = float(rng.uniform(low, high))
        yield tiers, position, entry, margin, open_, high, low


def _same(a, b) -> bool:
    a, b = (
        np.atleast_1d(np.asarray(a, dtype=np.float64)),
        np.atleast_1d(np.asarray(b, dtype=np.float64)),
    )
    return a.tobytes() == b.tobytes()


KERNELS = {
    "initial_margin_nb": lambda t, p, e, m, o, h, lo: (p, e, e / m * abs(p)),
    "tier_of_nb": lambda t, p, e, m, o, h, lo: (t, abs(p) * e),
    "maintenance_margin_nb": lambda t, p, e, m, o, h, lo: (t, abs(p) * e),
    "margin_surplus_nb": lambda t, p, e, m, o, h, lo: (t, p, e, lo, m, 3.0, -2.0),
    "liquidation_price_nb": lambda t, p, e, m, o, h, lo: (t, p, e, m, 7.5, -120.0),
    "funding_payment_nb": lambda t, p, e, m, o, h, lo: (p, o, 0.0001),
    "trade_fee_nb": lambda t, p, e, m, o, h, lo: (p, o, 0.0005),
    "liquidation_fill_nb": lambda t, p, e, m, o, h, lo: (
        p,
        perp.liquidation_price_nb(t, p, e, m, 0.0, 0.0),
        o,
        h,
        lo,
    ),
    "limit_fill_nb": lambda t, p, e, m, o, h, lo: (p > 0, e * (0.75 if p > 0 else 1.25), o, h, lo),
    "isolated_bar_nb": lambda t, p, e, m, o, h, lo: (t, p, e, m, o, h, lo, -0.0003, o, 0.005),
    # A reversal (reduce the position, then open the other side) paying taker and fixed fees.
    "position_fill_nb": lambda t, p, e, m, o, h, lo: (
        5.0 * m,
        2.0 * m,
        p,
        e,
        m,
        -2.5 * p,
        o,
        0.0005,
        1.0,
        3.0,
        float("nan"),
        1e-8,
        0.1 * m,
    ),
}


def test_kernels_cover_every_nb_function():
    names = {name for name in vars(perp) if name.endswith("_nb")}
    assert names == set(KERNELS)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiled_equals_python_bit_for_bit(name):
    fn = getattr(perp, name)
    compiled = numba.njit(fn)
    checked, statuses = 0, set()
    for case in _cases(np.random.default_rng(7)):
        args = KERNELS[name](*case)
        python, native = fn(*args), compiled(*args)
        if isinstance(python, tuple):
            statuses.add(python[0])
            assert len(python) == len(native)
            assert all(_same(a, b) for a, b in zip(python, native, strict=True)), (
                args,
                python,
                native,
            )
        else:
            assert _same(python, native), (args, python, native)
        checked += 1
    assert checked == 64
    # the cases reach every outcome of the fill and bar kernels (none, hit, gap)
    assert name not in ("liquidation_fill_nb", "limit_fill_nb", "isolated_bar_nb") or statuses == {
        0,
        1,
        2,
    }


def test_same_bits_helper_tells_values_apart():
    assert _same(1.0, 1.0) and _same(math.nan, math.nan) and _same((1, 2.0), (1.0, 2.0))
    assert not _same(1.0, 1.0 + 2**-52) and not _same(0.0, -0.0) and not _same(1.0, 2.0)


# --- the CUDA build of the same source, under numba's simulator ---------------------------------

_CUDA_SIM_SCRIPT = textwrap.dedent(
    """
    import importlib.util, math, sys
    import numpy as np
    from numba import cuda
    from celeris.backtest import perp

    spec = importlib.util.spec_from_file_location("perp_cuda", perp.__file__)
    dev = importlib.util.module_from_spec(spec)
    dev.__dict__["__celeris_jit__"] = cuda.jit(device=True)
    spec.loader.exec_module(dev)

    @cuda.jit
    def run(tiers, cases, out):
        i = cuda.grid(1)
        if i < cases.shape[0]:
            p, e, m, o, h, lo = cases[i, 0], cases[i, 1], cases[i, 2], cases[i, 3], cases[i, 4], cases[i, 5]
            out[i, 0] = dev.liquidation_price_nb(tiers, p, e, m, 7.5, -120.0)
            out[i, 1] = dev.maintenance_margin_nb(tiers, abs(p) * e)
            out[i, 2] = dev.funding_payment_nb(p, o, 0.0001)
            s, q = dev.limit_fill_nb(p > 0, e * (0.75 if p > 0 else 1.25), o, h, lo)
            out[i, 3] = s
            out[i, 4] = q
            r = dev.isolated_bar_nb(tiers, p, e, m, o, h, lo, -0.0003, o, 0.005)
            for k in range(5):
                out[i, 5 + k] = r[k]

    rng = np.random.default_rng(11)
    tiers = perp.maintenance_tiers({tiers!r})
    n = 16
    pos = rng.choice([-1.0, 1.0], n) * 10 ** rng.uniform(-2, 3, n)
    entry = 10 ** rng.uniform(0, 5, n)
    margin = np.abs(pos) * entry / 10 ** rng.uniform(0, 2, n)
    low = entry * rng.uniform(0.5, 1.0, n)
    high = entry * rng.uniform(1.0, 1.5, n)
    opn = rng.uniform(low, high)
    cases = np.column_stack([pos, entry, margin, opn, high, low])
    out = np.zeros((n, 10))
    run[1, 32](np.array(tiers), cases, out)  # a writeable copy: the simulator copies args back
    bad = 0
    for i in range(n):
        p, e, m, o, h, lo = cases[i]
        want = [perp.liquidation_price_nb(tiers, p, e, m, 7.5, -120.0),
                perp.maintenance_margin_nb(tiers, abs(p) * e),
                perp.funding_payment_nb(p, o, 0.0001),
                *perp.limit_fill_nb(p > 0, e * (0.75 if p > 0 else 1.25), o, h, lo),
                *perp.isolated_bar_nb(tiers, p, e, m, o, h, lo, -0.0003, o, 0.005)]
        if np.asarray(want, dtype=np.float64).tobytes() != out[i].tobytes():
            bad += 1
            print("MISMATCH", i, want, out[i].tolist())
    print("cases", n, "mismatches", bad)
    sys.exit(1 if bad else 0)
    """
)


def test_kernels_cuda_build_under_simulator_equal_python():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    script = _CUDA_SIM_SCRIPT.replace("{tiers!r}", repr(BTCUSDT_2021))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cases 16 mismatches 0" in proc.stdout, proc.stdout

"""Sweeps of perpetual-futures variants: leverage and margin mode as grid axes, funding as data."""

from __future__ import annotations

import numpy as np
import pytest

from celeris import ConfigError
from celeris.backtest import from_signals, get_strategy, sweep, walk_forward
from celeris.data import align_funding, synthetic, synthetic_funding


@pytest.fixture(scope="module")
def perp_bars():
    bars = synthetic(3_000, freq="1h", seed=5)
    return bars, align_funding(synthetic_funding(bars, seed=2), bars)


def test_perp_sweep_variants_equal_from_signals_alone(perp_bars):
    bars, rate = perp_bars
    grid = {
        "fast": [10, 20],
        "slow": [60],
        "leverage": [1, 5, 25],
        "margin_mode": ["isolated", "cross"],
    }
    common = dict(instrument="perp", funding_rate=rate, liquidation_fee=0.005, fees=0.0005)
    result = sweep(bars, "sma_cross", grid, progress=False, **common)
    assert result.axes == ("leverage", "margin_mode")
    strat = get_strategy("sma_cross")
    for i, row in result.combos.iterrows():
        entries, exits = strat.signals(bars, {"fast": int(row.fast), "slow": int(row.slow)})
        alone = from_signals(
            bars, entries, exits, leverage=row.leverage, margin_mode=row.margin_mode, **common
        )
        assert np.array_equal(result.metrics[i], alone.metric_values[0], equal_nan=True)
    # 25x on hourly bars with these signals is liquidated at least once: the axis matters.
    best = result.portfolio({"fast": 10, "slow": 60, "leverage": 25.0, "margin_mode": "isolated"})
    assert best.stats()["liquidations"].iloc[0] > 0


def test_walk_forward_refuses_perpetual_options_by_name(perp_bars):
    bars, rate = perp_bars
    with pytest.raises(ConfigError, match="walk_forward does not take leverage yet"):
        walk_forward(bars, "sma_cross", {"fast": [10], "slow": [60], "leverage": [1, 3]},
                     train="30D", test="10D")  # fmt: skip
    with pytest.raises(ConfigError, match="walk_forward does not take funding_rate yet"):
        walk_forward(bars, "sma_cross", {"fast": [10], "slow": [60]}, train="30D", test="10D",
                     funding_rate=rate)  # fmt: skip

"""Built-in strategies against independent pandas/TA-Lib references, grids and parsing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from celeris import ConfigError
from celeris.backtest import STRATEGIES, get_strategy
from celeris.backtest.strategies import parse_assignments, parse_values


def _cross(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    up = (a > b) & (a.shift(1) <= b.shift(1))
    down = (a < b) & (a.shift(1) >= b.shift(1))
    return up, down


def _check(bars, name, params, ref_entries, ref_exits):
    entries, exits = STRATEGIES[name].signals(bars, params)
    assert entries.sum() > 0 and exits.sum() > 0, "reference case must have signals"
    assert (entries.to_numpy() == ref_entries.to_numpy()).all(), f"{name} entries differ"
    assert (exits.to_numpy() == ref_exits.to_numpy()).all(), f"{name} exits differ"


def test_sma_cross_signals_match_talib_crosses(sp500):
    c = sp500["close"]
    up, down = _cross(pd.Series(talib.SMA(c, 10), c.index), pd.Series(talib.SMA(c, 50), c.index))
    _check(sp500, "sma_cross", {"fast": 10, "slow": 50}, up, down)


def test_ema_cross_signals_match_talib_crosses(sp500):
    c = sp500["close"]
    up, down = _cross(pd.Series(talib.EMA(c, 12), c.index), pd.Series(talib.EMA(c, 26), c.index))
    _check(sp500, "ema_cross", {"fast": 12, "slow": 26}, up, down)


def test_macd_cross_signals_match_talib(sp500):
    c = sp500["close"]
    macd, signal, _ = talib.MACD(c, 12, 26, 9)
    up, down = _cross(pd.Series(macd, c.index), pd.Series(signal, c.index))
    _check(sp500, "macd_cross", {"fast": 12, "slow": 26, "signal": 9}, up, down)


def test_rsi_reversion_signals_match_talib(sp500):
    c = sp500["close"]
    rsi = pd.Series(talib.RSI(c, 14), c.index)
    entries = (rsi < 30) & (rsi.shift(1) >= 30)
    exits = (rsi > 70) & (rsi.shift(1) <= 70)
    _check(sp500, "rsi_reversion", {"window": 14, "lower": 30, "upper": 70}, entries, exits)


def test_bbands_breakout_signals_match_talib(sp500):
    c = sp500["close"]
    upper, middle, _ = talib.BBANDS(c, 20, 2.0, 2.0)
    entries, _ = _cross(c, pd.Series(upper, c.index))
    _, exits = _cross(c, pd.Series(middle, c.index))
    _check(sp500, "bbands_breakout", {"window": 20, "nbdev": 2.0}, entries, exits)


def test_donchian_breakout_signals_match_pandas(sp500):
    c = sp500["close"]
    upper = sp500["high"].rolling(20).max().shift(1)
    lower = sp500["low"].rolling(10).min().shift(1)
    entries, _ = _cross(c, upper)
    _, exits = _cross(c, lower)
    _check(sp500, "donchian_breakout", {"window": 20, "exit_window": 10}, entries, exits)


def test_strategy_signals_use_only_past_data(sp500):
    """Signals up to t are unchanged when bars after t are rewritten (every built-in)."""
    bars = sp500.iloc[:800]
    t = 600
    shocked = bars.copy()
    shocked.iloc[t + 1 :, :4] *= 1.3
    for strat in STRATEGIES.values():
        e1, x1 = strat.signals(bars)
        e2, x2 = strat.signals(shocked)
        assert (e1.iloc[: t + 1] == e2.iloc[: t + 1]).all(), strat.name
        assert (x1.iloc[: t + 1] == x2.iloc[: t + 1]).all(), strat.name


def test_grid_applies_constraint_and_defaults():
    combos = get_strategy("sma_cross").grid({"fast": [10, 50, 60], "slow": [50]})
    assert combos.to_dict("records") == [{"fast": 10, "slow": 50}]
    combos = get_strategy("macd_cross").grid({"signal": [5, 9]})
    assert combos.to_dict("records") == [
        {"fast": 12, "slow": 26, "signal": 5},
        {"fast": 12, "slow": 26, "signal": 9},
    ]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"fats": [10]}, "did you mean 'fast'"),
        ({"fast": [100], "slow": [50]}, "no admissible"),
        ({"fast": [0]}, "outside"),
        ({"fast": [2.5]}, "integer"),
        ({"fast": []}, "empty"),
    ],
)
def test_grid_bad_input_raises_config_error(grid, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy("sma_cross").grid(grid)


def test_get_strategy_unknown_name_hints():
    with pytest.raises(ConfigError, match="did you mean 'sma_cross'"):
        get_strategy("sma_cros")


def test_parse_values_ranges_lists_and_errors():
    p = get_strategy("sma_cross").param("fast")
    assert parse_values("10:20:5", p) == [10, 15, 20]
    assert parse_values("5,7", p) == [5, 7]
    assert parse_values("10:12", p) == [10, 11, 12]
    with pytest.raises(ConfigError, match="start <= stop"):
        parse_values("20:10", p)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_values("ten", p)
    assert parse_assignments(["fast=5", "slow=50:60:10"], get_strategy("sma_cross")) == {
        "fast": [5],
        "slow": [50, 60],
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_assignments(["fast"], get_strategy("sma_cross"))
    assert np.isclose(
        parse_values("0.5:1.5:0.5", get_strategy("bbands_breakout").param("nbdev")), [0.5, 1.0, 1.5]
    ).all()

"""Signal sources of the live loop: the panel fast path equals the strategy's own signals."""

from __future__ import annotations

import numpy as np
import pytest

from celeris.backtest.strategies import get_strategy
from celeris.data import load
from celeris.data.synthetic import synthetic
from celeris.live.risk import ENTRY, EXIT
from celeris.live.signals import RuleSignals


@pytest.mark.parametrize("name", ["sma_cross", "ema_cross"])
@pytest.mark.parametrize(("fast", "slow"), [(1, 2), (3, 8), (12, 26), (40, 200)])
def test_panel_of_many_symbols_equals_each_symbols_strategy_signals(name, fast, slow):
    bars = [synthetic(n_bars=600, seed=s, freq="1min") for s in range(4)]
    bars.append(load("sample:sp500").iloc[:600])  # real prices too
    ohlcv = np.stack(
        [b[["open", "high", "low", "close", "volume"]].to_numpy() for b in bars], axis=2
    )
    times = bars[0].index.as_unit("ns").asi8
    strategy = get_strategy(name)
    assert strategy.panel is not None
    batch = RuleSignals(name, {"fast": fast, "slow": slow}).compute(times, ohlcv, 600)
    for a, b in enumerate(bars):
        entries, exits = strategy.signals(b, {"fast": fast, "slow": slow})
        assert ((batch.bits[:, a] & ENTRY) != 0).tolist() == entries.tolist()
        assert ((batch.bits[:, a] & EXIT) != 0).tolist() == exits.tolist()


def test_strategies_without_a_panel_run_per_symbol():
    bars = [synthetic(n_bars=300, seed=s, freq="1min") for s in range(2)]
    ohlcv = np.stack(
        [b[["open", "high", "low", "close", "volume"]].to_numpy() for b in bars], axis=2
    )
    times = bars[0].index.as_unit("ns").asi8
    source = RuleSignals("rsi_reversion", {})
    assert source.strategy.panel is None
    batch = source.compute(times, ohlcv, 50)
    for a, b in enumerate(bars):
        entries, exits = source.strategy.signals(b, source.params)
        assert ((batch.bits[:, a] & ENTRY) != 0).tolist() == entries.iloc[-50:].tolist()
        assert ((batch.bits[:, a] & EXIT) != 0).tolist() == exits.iloc[-50:].tolist()

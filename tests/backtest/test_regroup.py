"""``Portfolio.stats(group_by=...)``: independent accounts taken together (vectorbt's regroup)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from celeris.backtest import from_signals
from celeris.backtest.metrics import METRICS
from tests.helpers import assert_values_close


@pytest.fixture(scope="module")
def four(sp500: pd.DataFrame):
    rng = np.random.default_rng(9)
    cols = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["team", "k"])
    entries = pd.DataFrame(rng.random((len(sp500), 4)) < 0.03, index=sp500.index, columns=cols)
    exits = pd.DataFrame(rng.random((len(sp500), 4)) < 0.03, index=sp500.index, columns=cols)
    return entries, exits


def test_group_of_one_column_is_that_column(sp500, four):
    entries, exits = four
    pf = from_signals(sp500, entries, exits, fees=0.001, sl_stop=0.05, execution="close")
    alone = pf.stats()
    grouped = pf.stats(group_by=np.arange(4))
    for name in METRICS:
        a, b = alone[name].to_numpy(), grouped[name].to_numpy()
        if name == "max_drawdown_duration":
            assert (a == b).all()
        else:
            assert_values_close(b, a, rtol=1e-12, atol=1e-15, label=name)


def test_groups_equal_vectorbt_regrouped_without_cash_sharing(sp500, four):
    entries, exits = four
    pf = from_signals(sp500, entries, exits, fees=0.001, init_cash=[1e5, 2e5, 1e5, 5e4],
                      execution="close")  # fmt: skip
    ours = pf.stats(group_by="team")
    vpf = vbt.Portfolio.from_signals(
        sp500["close"], entries, exits, fees=0.001, init_cash=[1e5, 2e5, 1e5, 5e4],
        group_by="team", cash_sharing=False, freq="1D",
    )  # fmt: skip
    assert list(ours.index) == ["a", "b"]
    assert_values_close(ours["start_value"], vpf.init_cash.to_numpy(), rtol=0)
    assert_values_close(ours["end_value"], vpf.final_value().to_numpy(), rtol=1e-12)
    assert_values_close(ours["total_return"], vpf.total_return().to_numpy(), rtol=1e-10)
    assert_values_close(ours["max_drawdown"], -vpf.max_drawdown().to_numpy(), rtol=1e-10)
    assert_values_close(ours["trades"], vpf.trades.count().to_numpy(), rtol=0)
    assert_values_close(ours["win_rate"], vpf.trades.closed.win_rate().to_numpy(), rtol=1e-12)
    sharpe = vpf.returns_acc.sharpe_ratio().to_numpy() * np.sqrt(252 / 365)  # vectorbt: 365 days
    assert_values_close(ours["sharpe"], sharpe, rtol=1e-8)


def test_group_by_unknown_level_names_the_levels(sp500, four):
    entries, exits = four
    pf = from_signals(sp500, entries, exits, execution="close")
    from celeris import ConfigError

    with pytest.raises(ConfigError, match="group_by names level 'side'"):
        pf.stats(group_by="side")

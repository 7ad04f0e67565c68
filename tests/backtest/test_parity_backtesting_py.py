"""Next-open execution against backtesting.py itself (its GOOG data and an SMA-cross strategy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import GOOG

from celeris.backtest import from_signals
from tests.helpers import assert_values_close


def _sma(values: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(values).rolling(n).mean().to_numpy()


class LongSmaCross(Strategy):
    fast = 10
    slow = 20

    def init(self):
        self.sma_fast = self.I(_sma, self.data.Close, self.fast)
        self.sma_slow = self.I(_sma, self.data.Close, self.slow)

    def next(self):
        if crossover(self.sma_fast, self.sma_slow) and not self.position:
            self.buy()
        elif crossover(self.sma_slow, self.sma_fast) and self.position:
            self.position.close()


@pytest.mark.parametrize(("fast", "slow"), [(10, 20), (5, 30), (20, 60)])
def test_next_open_whole_shares_matches_backtesting_py(fast: int, slow: int):
    bt = Backtest(GOOG, LongSmaCross, cash=10_000, commission=0.0, finalize_trades=True)
    stats = bt.run(fast=fast, slow=slow)
    theirs_equity = stats["_equity_curve"]["Equity"].to_numpy()
    theirs_trades = stats["_trades"]

    bars = GOOG.rename(columns=str.lower).tz_localize("UTC")
    close = bars["close"]
    f, s = close.rolling(fast).mean(), close.rolling(slow).mean()
    # backtesting.py's crossover: strictly below on the previous bar, strictly above now.
    entries = (f > s) & (f.shift(1) < s.shift(1))
    exits = (f < s) & (f.shift(1) > s.shift(1))
    pf = from_signals(
        bars,
        entries,
        exits,
        execution="next_open",
        size_granularity=1.0,
        init_cash=10_000.0,
        freq="1D",
    )
    trades = pf.trades
    assert len(trades) == len(theirs_trades) > 5
    assert_values_close(trades["entry_price"], theirs_trades["EntryPrice"], rtol=1e-12)
    assert_values_close(trades["size"], theirs_trades["Size"], rtol=0)
    closed = trades["status"] == "closed"
    assert_values_close(
        trades.loc[closed, "exit_price"],
        theirs_trades["ExitPrice"].to_numpy()[closed.to_numpy()],
        rtol=1e-12,
    )
    # The last bar differs by design: backtesting.py force-closes a trade still open at the end
    # (finalize_trades) instead of valuing it at the last close.
    assert_values_close(pf.equity.iloc[:-1, 0], theirs_equity[:-1], rtol=1e-11)

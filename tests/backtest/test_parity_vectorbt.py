"""Trade-for-trade parity with vectorbt's ``Portfolio.from_signals`` (numba engine) on real data."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from celeris.backtest import from_signals
from tests.helpers import assert_frame_close, assert_values_close

N_SIGNAL_COLS = 4


def _random_signals(index: pd.Index, seed: int, p: float = 0.04) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    shape = (len(index), N_SIGNAL_COLS)
    cols = pd.RangeIndex(N_SIGNAL_COLS, name="column")
    return tuple(pd.DataFrame(rng.random(shape) < p, index=index, columns=cols) for _ in range(4))


def _vbt_portfolio(bars: pd.DataFrame, e, x, se, sx, *, execution: str, tsl: bool, **kw):
    kw.setdefault("init_cash", 100_000.0)
    sl = kw.pop("sl_stop", None)
    tsl_stop = kw.pop("tsl_stop", None)
    stop = tsl_stop if tsl else sl
    extra = {}
    if stop is not None:
        extra["sl_stop"] = stop
        extra["sl_trail"] = tsl
    if kw.get("tp_stop") is None:
        kw.pop("tp_stop", None)
    if execution == "next_open":
        e, x = e.shift(1, fill_value=False), x.shift(1, fill_value=False)
        if se is not None:
            se, sx = se.shift(1, fill_value=False), sx.shift(1, fill_value=False)
        extra["price"] = bars["open"]
        extra["stop_entry_price"] = "price"
    return vbt.Portfolio.from_signals(
        bars["close"],
        e,
        x,
        short_entries=se,
        short_exits=sx,
        open=bars["open"],
        high=bars["high"],
        low=bars["low"],
        freq="1D",
        engine="numba",
        **extra,
        **kw,
    )


def _compare(pf, vpf, year_days: float = 365) -> None:
    ours = pf.stats()
    # Equity curves bar for bar.
    assert_frame_close(pf.equity, vpf.value(), rtol=1e-9, atol=1e-6)
    # Orders: same bars, sides, sizes, prices, fees.
    vo = vpf.orders.records_readable
    oo = pf.orders
    assert len(oo) == len(vo), f"order count {len(oo)} vs vectorbt {len(vo)}"
    if len(vo):
        vo = vo.sort_values(["Column", "Order Id"]).reset_index(drop=True)
        oo = oo.sort_values(["column", "bar"], kind="stable").reset_index(drop=True)
        assert_values_close(oo["size"], vo["Size"], rtol=1e-9)
        assert_values_close(oo["price"], vo["Price"], rtol=1e-12)
        assert_values_close(oo["fees"], vo["Fees"], rtol=1e-9, atol=1e-9)
        assert (oo["side"].str.capitalize().to_numpy() == vo["Side"].to_numpy()).all()
        assert (oo["time"].to_numpy() == pd.DatetimeIndex(vo["Timestamp"]).to_numpy()).all()
    # Exit trades with pnl and return.
    vt = vpf.trades.records
    ot = pf.trades
    assert len(ot) == len(vt), f"trade count {len(ot)} vs vectorbt {len(vt)}"
    assert len(vt) > 0, "a parity case without trades proves nothing"
    if len(vt):
        vt = pd.DataFrame(vt).sort_values(["col", "id"]).reset_index(drop=True)
        ot = ot.reset_index(drop=True)
        assert_values_close(ot["entry_bar"], vt["entry_idx"], rtol=0)
        assert_values_close(ot["exit_bar"], vt["exit_idx"], rtol=0)
        assert_values_close(ot["pnl"], vt["pnl"], rtol=1e-8, atol=1e-6)
        assert_values_close(ot["return"], vt["return"], rtol=1e-8, atol=1e-10)
    # Metrics.
    assert_values_close(ours["end_value"], vpf.final_value(), rtol=1e-9)
    assert_values_close(ours["total_return"], vpf.total_return(), rtol=1e-9, atol=1e-12)
    assert_values_close(ours["max_drawdown"], -vpf.max_drawdown(), rtol=1e-9, atol=1e-12)
    dd_dur = vpf.drawdowns.max_duration().fillna(pd.Timedelta(0))
    assert (ours["max_drawdown_duration"].to_numpy() == dd_dur.to_numpy()).all()
    assert_values_close(ours["trades"], vpf.trades.count(), rtol=0)
    assert_values_close(ours["closed_trades"], vpf.trades.closed.count(), rtol=0)
    closed = vpf.trades.closed
    assert_values_close(ours["win_rate"], closed.win_rate(), rtol=1e-12)
    assert_values_close(ours["profit_factor"], closed.profit_factor(), rtol=1e-9)
    assert_values_close(ours["expectancy"], closed.expectancy(), rtol=1e-8, atol=1e-8)
    assert_values_close(ours["best_trade"], closed.returns.max(), rtol=1e-9, atol=1e-12)
    assert_values_close(ours["worst_trade"], closed.returns.min(), rtol=1e-9, atol=1e-12)
    # Return-based ratios where vectorbt's value is finite (0/0 is NaN here, inf there).
    rets = vpf.returns_acc
    for ours_name, theirs in (
        ("sharpe", rets.sharpe_ratio()),
        ("sortino", rets.sortino_ratio()),
        ("calmar", rets.calmar_ratio()),
        ("cagr", rets.annualized()),
        ("volatility", rets.annualized_volatility()),
    ):
        theirs = theirs.to_numpy(dtype=float)
        mine = ours[ours_name].to_numpy(dtype=float)
        finite = np.isfinite(theirs)
        assert_values_close(mine[finite], theirs[finite], rtol=1e-7, atol=1e-10, label=ours_name)


OPTION_CASES = [
    dict(),
    dict(fees=0.001, slippage=0.0005),
    dict(fees=0.002, fixed_fees=1.0, slippage=0.001, init_cash=10_000.0),
    dict(size=10.0, size_type="amount", fees=0.001),
    dict(size=5_000.0, size_type="value", fees=0.001, slippage=0.001),
    dict(size=0.5, size_type="percent", fees=0.001),
    dict(direction="shortonly", fees=0.001, slippage=0.0005),
    dict(direction="both", fees=0.001, slippage=0.0005),
    dict(direction="both", size=20.0, fees=0.001),
    dict(sl_stop=0.05, fees=0.001),
    dict(tp_stop=0.08, fees=0.001),
    dict(sl_stop=0.03, tp_stop=0.06, fees=0.001, slippage=0.001),
    dict(tsl_stop=0.04, fees=0.001),
    dict(tsl_stop=0.05, direction="shortonly", fees=0.001),
    dict(sl_stop=0.04, tp_stop=0.04, direction="both", fees=0.001),
    dict(accumulate=True, size=10.0, fees=0.001),
    dict(accumulate=True, size=3_000.0, size_type="value", direction="both", sl_stop=0.05),
    dict(size=1.0, size_granularity=1.0, fees=0.001),
    dict(size_granularity=1.0, fees=0.001, slippage=0.001),
]


@pytest.mark.parametrize("execution", ["close", "next_open"])
@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
def test_from_signals_random_signals_match_vectorbt(sp500: pd.DataFrame, case: int, execution: str):
    bars = sp500.iloc[-1500:]
    kw = dict(OPTION_CASES[case])
    e, x, _se, _sx = _random_signals(bars.index, seed=case)
    # vectorbt annualises with 365 days a year; Celeris would infer 252 for these equity bars.
    pf = from_signals(bars, e, x, execution=execution, freq="1D", year_days=365, **kw)
    tsl = "tsl_stop" in kw
    vpf = _vbt_portfolio(bars, e, x, None, None, execution=execution, tsl=tsl, **kw)
    _compare(pf, vpf)
    if any(k in kw for k in ("sl_stop", "tp_stop", "tsl_stop")):
        assert pf.orders["stop"].any(), "stop case where no stop fired"
    if kw.get("direction") in ("both", "shortonly"):
        assert (pf.trades["direction"] == "short").any()


@pytest.mark.parametrize("case", [0, 1, 3, 9, 12])
def test_from_signals_long_short_arrays_match_vectorbt(sp500: pd.DataFrame, case: int):
    bars = sp500.iloc[-1200:]
    kw = dict(OPTION_CASES[case])
    e, x, se, sx = _random_signals(bars.index, seed=100 + case, p=0.03)
    pf = from_signals(bars, e, x, se, sx, execution="close", freq="1D", year_days=365, **kw)
    vpf = _vbt_portfolio(bars, e, x, se, sx, execution="close", tsl="tsl_stop" in kw, **kw)
    _compare(pf, vpf)


def test_from_signals_sma_cross_grid_matches_vectorbt(sp500: pd.DataFrame):
    close = sp500["close"]
    pairs = [(f, s) for f, s in itertools.product([5, 10, 20], [30, 50, 100]) if f < s]
    fast = pd.concat({p: close.rolling(p[0]).mean() for p in pairs}, axis=1)
    slow = pd.concat({p: close.rolling(p[1]).mean() for p in pairs}, axis=1)
    above = fast > slow
    entries = above & ~above.shift(1, fill_value=False)
    exits = ~above & above.shift(1, fill_value=False)
    entries.columns = exits.columns = pd.MultiIndex.from_tuples(pairs, names=["fast", "slow"])
    pf = from_signals(
        close, entries, exits, fees=0.001, slippage=0.0005, freq="1D", year_days=365,
        execution="close",
    )  # fmt: skip
    vpf = vbt.Portfolio.from_signals(
        close,
        entries,
        exits,
        fees=0.001,
        slippage=0.0005,
        freq="1D",
        engine="numba",
        init_cash=100_000.0,
    )
    _compare(pf, vpf)
    assert pf.stats().index.names == ["fast", "slow"]

"""Property tests (hypothesis) of the simulation: no look-ahead and accounting invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeris.backtest import from_signals
from tests.helpers import assert_values_close

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def market(draw, min_bars: int = 8, max_bars: int = 60):
    n = draw(st.integers(min_bars, max_bars))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    p = draw(st.floats(0.05, 0.4))
    entries = rng.random(n) < p
    exits = rng.random(n) < p
    return close, open_, high, low, entries, exits, rng


@st.composite
def options(draw):
    return {
        "fees": draw(st.sampled_from([0.0, 0.001, 0.01])),
        "fixed_fees": draw(st.sampled_from([0.0, 1.0])),
        "slippage": draw(st.sampled_from([0.0, 0.001])),
        "direction": draw(st.sampled_from(["longonly", "shortonly", "both"])),
        "sl_stop": draw(st.sampled_from([None, 0.02, 0.1])),
        "tsl_stop": draw(st.sampled_from([None, 0.05])),
        "tp_stop": draw(st.sampled_from([None, 0.05])),
        "size": draw(st.sampled_from([np.inf, 10.0])),
        "accumulate": draw(st.booleans()),
        "execution": draw(st.sampled_from(["close", "next_open"])),
    }


def _run(close, open_, high, low, entries, exits, opts):
    return from_signals(
        close, entries, exits, open=open_, high=high, low=low, init_cash=10_000.0, freq="1h", **opts
    )


@SETTINGS
@given(market(), options(), st.data())
def test_from_signals_changing_data_after_t_never_changes_the_past(mkt, opts, data):
    close, open_, high, low, entries, exits, rng = mkt
    n = len(close)
    t = data.draw(st.integers(1, n - 2), label="t")
    base = _run(close, open_, high, low, entries, exits, opts)
    # Rewrite everything strictly after bar t: prices and signals.
    c2, o2, h2, l2 = close.copy(), open_.copy(), high.copy(), low.copy()
    shock = np.exp(rng.normal(0, 0.2, n - t - 1))
    c2[t + 1 :] *= shock
    o2[t + 1 :] *= shock
    h2[t + 1 :] = np.maximum(o2[t + 1 :], c2[t + 1 :]) * 1.03
    l2[t + 1 :] = np.minimum(o2[t + 1 :], c2[t + 1 :]) * 0.97
    e2, x2 = entries.copy(), exits.copy()
    e2[t + 1 :] = ~e2[t + 1 :]
    x2[t + 1 :] = rng.random(n - t - 1) < 0.5
    moved = _run(c2, o2, h2, l2, e2, x2, opts)
    assert np.array_equal(base.equity.to_numpy()[: t + 1], moved.equity.to_numpy()[: t + 1])
    ob, om = base.orders, moved.orders
    past_b, past_m = ob[ob["bar"] <= t], om[om["bar"] <= t]
    cols = ["bar", "size", "price", "fees"]
    assert np.array_equal(past_b[cols].to_numpy(dtype=float), past_m[cols].to_numpy(dtype=float))
    assert past_b["side"].tolist() == past_m["side"].tolist()


@SETTINGS
@given(market(), options())
def test_from_signals_equity_equals_cash_plus_position_value(mkt, opts):
    close, open_, high, low, entries, exits, _ = mkt
    pf = _run(close, open_, high, low, entries, exits, opts)
    orders = pf.orders
    n = len(close)
    flow = np.zeros(n)
    delta = np.zeros(n)
    for row in orders.itertuples():
        signed = row.size if row.side == "buy" else -row.size
        flow[row.bar] += -signed * row.price - row.fees
        delta[row.bar] += signed
    cash = 10_000.0 + np.cumsum(flow)
    position = np.cumsum(delta)
    position[np.abs(position) < 1e-9] = 0.0
    assert_values_close(pf.equity.iloc[:, 0], cash + position * close, rtol=1e-9, atol=1e-6)


@SETTINGS
@given(market(), options())
def test_from_signals_long_only_cash_never_negative(mkt, opts):
    close, open_, high, low, entries, exits, _ = mkt
    opts = opts | {"direction": "longonly"}
    pf = _run(close, open_, high, low, entries, exits, opts)
    orders = pf.orders
    flow = np.zeros(len(close))
    for row in orders.itertuples():
        flow[row.bar] += (-1 if row.side == "buy" else 1) * row.size * row.price - row.fees
    cash = 10_000.0 + np.cumsum(flow)
    assert (cash >= -1e-6).all(), f"cash went negative: {cash.min()}"
    assert (pf.equity.to_numpy() > 0).all()


@SETTINGS
@given(market(), options())
def test_from_signals_metrics_agree_with_curves_and_records(mkt, opts):
    close, open_, high, low, entries, exits, _ = mkt
    pf = _run(close, open_, high, low, entries, exits, opts)
    s = pf.stats().iloc[0]
    equity = pf.equity.iloc[:, 0]
    assert_values_close(s["end_value"], equity.iloc[-1], rtol=1e-12)
    assert_values_close(s["max_drawdown"], -pf.drawdown.iloc[:, 0].min(), rtol=1e-9, atol=1e-12)
    trades = pf.trades
    closed = trades[trades["status"] == "closed"]
    assert s["closed_trades"] == len(closed) and s["trades"] == len(trades)
    if len(closed):
        assert_values_close(s["win_rate"], (closed["pnl"] > 0).mean(), rtol=1e-12)
        assert_values_close(s["best_trade"], closed["return"].max(), rtol=1e-12)
    assert s["orders"] == len(pf.orders)
    assert_values_close(s["total_fees"], pf.orders["fees"].sum(), rtol=1e-9, atol=1e-9)


NOT_FLOAT = ["start", "end", "max_drawdown_duration", "execution"]


def test_from_signals_columns_are_independent():
    rng = np.random.default_rng(3)
    n = 200
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.02, n))))
    entries = rng.random((n, 5)) < 0.1
    exits = rng.random((n, 5)) < 0.1
    together = from_signals(close, entries, exits, fees=0.001, freq="1h", execution="close").stats()
    for k in range(5):
        alone = from_signals(
            close, entries[:, k], exits[:, k], fees=0.001, freq="1h", execution="close"
        ).stats()
        assert_values_close(
            together.iloc[k].drop(NOT_FLOAT).to_numpy(dtype=float),
            alone.iloc[0].drop(NOT_FLOAT).to_numpy(dtype=float),
            rtol=0,
        )
        assert together["max_drawdown_duration"].iloc[k] == alone["max_drawdown_duration"].iloc[0]

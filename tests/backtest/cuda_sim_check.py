"""Run under NUMBA_ENABLE_CUDASIM=1: the CUDA build of the kernel must equal the CPU build exactly.

Executed by tests/backtest/test_cuda.py in a subprocess (the simulator must be switched on before
numba.cuda is imported), and runnable by hand on a real GPU without the variable.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def main(n_bars: int = 160, n_cols: int = 8) -> int:
    from celeris.backtest import from_signals

    rng = np.random.default_rng(42)
    idx = pd.date_range("2024-01-01", periods=n_bars, freq="h", tz="UTC")
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.02, n_bars))), index=idx)
    open_ = close.shift(1).fillna(close.iloc[0]) * np.exp(rng.normal(0, 0.003, n_bars))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    entries = pd.DataFrame(rng.random((n_bars, n_cols)) < 0.06, index=idx)
    exits = pd.DataFrame(rng.random((n_bars, n_cols)) < 0.06, index=idx)
    cases = [
        dict(fees=0.001, slippage=0.001, execution="close"),
        dict(direction="both", fees=0.001, sl_stop=0.03, tp_stop=0.05, execution="close"),
        dict(direction="shortonly", tsl_stop=0.04, fixed_fees=1.0, execution="close"),
        dict(
            accumulate=True,
            size=5.0,
            direction="both",
            sl_stop=0.02,
            tsl_stop=0.03,
            execution="close",
        ),
        dict(size=2_000.0, size_type="value", size_granularity=1.0, execution="next_open"),
    ]
    failures = 0
    for case in cases:
        kw = dict(open=open_, high=high, low=low, **case)
        cpu = from_signals(close, entries, exits, device="cpu", **kw)
        gpu = from_signals(close, entries, exits, device="cuda", **kw)
        checks = {
            "metrics": np.array_equal(cpu.metric_values, gpu.metric_values, equal_nan=True),
            "equity": np.array_equal(cpu.equity.to_numpy(), gpu.equity.to_numpy()),
            "orders": cpu.orders.equals(gpu.orders),
            "trades": cpu.trades.equals(gpu.trades),
        }
        n_orders = len(cpu.orders)
        status = "ok" if all(checks.values()) and n_orders > 0 else "MISMATCH"
        failures += status != "ok"
        print(f"{status} {case} orders={n_orders} {checks}")
    # A 1-bar, 1-column run: its equity must come back from the device too.
    one = from_signals(
        np.array([50.0]), [True], [False], init_cash=1234.0, execution="close", device="cuda"
    )
    ok = float(one.equity.iloc[0, 0]) == 1234.0
    failures += not ok
    print(("ok " if ok else "MISMATCH ") + "1-bar equity copied back")
    return 1 if failures or grouped() else 0


def _book_checks(cpu, gpu) -> dict[str, bool]:
    return {
        "metrics": np.array_equal(cpu.metric_values, gpu.metric_values, equal_nan=True),
        "equity": np.array_equal(cpu.equity.to_numpy(), gpu.equity.to_numpy()),
        "orders": cpu.orders.equals(gpu.orders),
        "trades": cpu.trades.equals(gpu.trades),
    }


def grouped(n_bars: int = 120) -> int:
    """The grouped kernel: two books of four assets (one listed late, one delisted early)."""
    from celeris.backtest import from_orders, from_signals
    from celeris.data.panel import to_panel

    rng = np.random.default_rng(7)
    idx = pd.date_range("2024-01-01", periods=n_bars, freq="h", tz="UTC")
    bars = {}
    for k, (lo, hi) in enumerate([(0, n_bars), (20, n_bars), (0, 90), (0, n_bars)]):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n_bars)))
        open_ = close * np.exp(rng.normal(0, 0.004, n_bars))
        frame = pd.DataFrame(
            {"open": open_, "high": np.maximum(open_, close) * 1.01,
             "low": np.minimum(open_, close) * 0.99, "close": close},
            index=idx,
        )  # fmt: skip
        bars[f"S{k}"] = frame.iloc[lo:hi]
    panel = to_panel(bars)
    entries = rng.random((n_bars, 8)) < 0.08
    exits = rng.random((n_bars, 8)) < 0.08
    weights = np.where(rng.random((n_bars, 4)) < 0.1, rng.uniform(0, 0.3, (n_bars, 4)), np.nan)
    weights = pd.DataFrame(weights, index=idx, columns=panel.symbols)
    rates = np.where(np.arange(n_bars)[:, None] % 8 == 0, rng.normal(0.0005, 0.002, (n_bars, 4)), 0)
    funding = pd.DataFrame(rates, index=idx, columns=panel.symbols)
    # Limit prices half a percent through the close (a buy below it, a sell above), NaN on a
    # fifth of the bars (market orders there).
    side = np.where(entries, 0.995, 1.005)
    close8 = np.tile(panel.close.to_numpy(), (1, 2))
    limits = np.where(rng.random((n_bars, 8)) < 0.2, np.nan, close8 * side)
    cases = {
        "signals auto stops": lambda device: from_signals(
            panel, entries, exits, cash_sharing=True, call_seq="auto", size=0.3,
            size_type="percent", sl_stop=0.03, tsl_stop=0.04, tp_stop=0.05, fees=0.001,
            execution="close", device=device,
        ),
        "signals next_open both": lambda device: from_signals(
            panel, entries, exits, cash_sharing=True, call_seq="reversed", size=10.0,
            direction="both", fees=0.001, slippage=0.001, device=device,
        ),
        "perp cross book with funding": lambda device: from_signals(
            panel, entries, exits, cash_sharing=True, call_seq="auto", size=0.3,
            size_type="percent", instrument="perp", leverage=30, margin_mode="cross",
            funding_rate=funding, liquidation_fee=0.005, tp_stop=0.05, fees=0.0005,
            device=device,
        ),
        "perp isolated columns": lambda device: from_signals(
            panel, entries, exits, size=40.0, instrument="perp", leverage=20, funding_rate=funding, liquidation_fee=0.01, direction="both",
            device=device,
        ),
        "limit orders with expiry": lambda device: from_signals(
            panel, entries, exits, cash_sharing=True, call_seq="auto", size=0.2,
            size_type="percent", order_type="limit", limit_price=limits, limit_expiry=3,
            maker_fee=0.0002, fees=0.001, sl_stop=0.04, device=device,
        ),
        "orders targetpercent threshold": lambda device: from_orders(
            panel, weights, size_type="targetpercent", cash_sharing=True, call_seq="auto",
            fees=0.001, _threshold=0.02, device=device,
        ),
    }  # fmt: skip
    failures = 0
    for name, run in cases.items():
        cpu, gpu = run("cpu"), run("cuda")
        checks = _book_checks(cpu, gpu)
        n_orders = len(cpu.orders)
        kinds = dict(cpu.orders["kind"].value_counts())
        status = "ok" if all(checks.values()) and n_orders > 0 else "MISMATCH"
        if name.startswith("perp") and not kinds.get("liquidation"):
            status = "MISMATCH (no liquidation: the case tests too little)"
        if name.startswith("limit") and not kinds.get("limit"):
            status = "MISMATCH (no limit fill: the case tests too little)"
        failures += status != "ok"
        print(f"{status} grouped {name} orders={kinds} {checks}")
    return failures


if __name__ == "__main__":
    sys.exit(main())

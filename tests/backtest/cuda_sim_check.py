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
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

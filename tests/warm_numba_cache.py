"""Fill numba's on-disk cache before the test workers start (``make test`` runs this beside mypy).

On a clean clone ``.cache/numba`` is empty. Each pytest-xdist worker then compiles every kernel
it touches itself: importing :mod:`celeris.backtest` alone compiles its two eager kernels (66 s of
CPU, measured cold on the 2-core machine), and the indicator tests compile ~120 specialisations
(~100 s). With two workers most of that is done twice, at the same time. ``make test`` runs this
script in the background while ruff and mypy (one core) run, so the compiling happens on the
otherwise idle second core and the workers load the kernels from the cache.

``make test`` runs two processes (``backtest data vectorbt`` and ``indicators``, about 125 s and
90 s of CPU cold) so both finish by the time mypy does. Only the cache is filled: nothing is asserted here and a failure never fails ``make test`` (the
tests themselves report any real error). Each step is separate, so one failing step does not
stop the others; failures are printed.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable

import numpy as np
import pandas as pd


def _bars(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    span = np.abs(rng.normal(0, 0.005, (2, n)))
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="time")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + span[0]),
            "low": np.minimum(open_, close) * (1 - span[1]),
            "close": close,
            "volume": rng.uniform(1, 9, n),
        },
        index=index,
    )


def backtest() -> None:
    """The eager kernels (compiled at import), the grouped kernel, signals and regrouping."""
    from celeris.backtest import from_orders, from_signals, sweep

    bars = _bars()
    rng = np.random.default_rng(1)
    entries = pd.DataFrame(rng.random((len(bars), 2)) < 0.1, index=bars.index)
    exits = pd.DataFrame(rng.random((len(bars), 2)) < 0.1, index=bars.index)
    ohl = {"open": bars["open"], "high": bars["high"], "low": bars["low"]}
    from_signals(bars["close"], entries, exits, **ohl).stats()
    from_signals(bars["close"], entries, exits, direction="both", sl_stop=0.02, **ohl)
    weights = pd.DataFrame(
        np.where(rng.random((len(bars), 2)) < 0.1, 0.4, np.nan), index=bars.index
    )
    from_orders(bars["close"], weights, size_type="targetpercent", open=bars["open"])
    sweep(bars, "sma_cross", {"fast": [5, 10], "slow": [20, 30]})


def indicators() -> None:
    """Every indicator on a Series, a time x assets frame, numpy 1-D and 2-D, one and many windows."""
    import celeris.indicators as ci

    bars = _bars(300)
    wide = pd.DataFrame({"A": bars["close"], "B": bars["close"] * 1.1})
    high = pd.DataFrame({"A": bars["high"], "B": bars["high"] * 1.1})
    low = pd.DataFrame({"A": bars["low"], "B": bars["low"] * 1.1})
    for close in (bars["close"], wide, wide.to_numpy(), bars["close"].to_numpy()):
        for window in (14, [5, 20]):
            for fn in (ci.sma, ci.ema, ci.wma, ci.rsi, ci.rolling_std, ci.zscore):
                fn(close, window)
            ci.bbands(close, window)
        ci.macd(close)
    for h, lo, c in ((bars["high"], bars["low"], bars["close"]), (high, low, wide)):
        for window in (14, [5, 20]):
            ci.atr(h, lo, c, window)
            ci.adx(h, lo, c, window)
            ci.donchian(h, lo, window)


def data() -> None:
    """GARCH variance of the synthetic generator."""
    from celeris.data import synthetic

    synthetic(200, freq="1h", seed=0)


def vectorbt() -> None:
    """vectorbt's cached helpers behind the parity tests (orders, trades, value, stats)."""
    import vectorbt as vbt

    bars = _bars()
    rng = np.random.default_rng(2)
    size = pd.DataFrame(np.where(rng.random((len(bars), 2)) < 0.1, 1.0, np.nan), index=bars.index)
    # from_orders: its simulator is cached (from_signals's is not, so warming it is useless).
    pf = vbt.Portfolio.from_orders(bars["close"], size, direction="both", freq="1h")
    pf.value()
    pf.orders.records_readable  # noqa: B018  (computing it is the point)
    pf.trades.records_readable  # noqa: B018
    pf.stats(column=0)


STEPS: dict[str, Callable[[], None]] = {
    "backtest": backtest,
    "indicators": indicators,
    "data": data,
    "vectorbt": vectorbt,
}


def main(names: list[str]) -> int:
    """Run the named steps (all of them when none is named)."""
    unknown = sorted(set(names) - set(STEPS))
    if unknown:
        print(f"warm_numba_cache: unknown steps {unknown}; choose from {sorted(STEPS)}")
        return 2
    for name in names or list(STEPS):
        step = STEPS[name]
        start = time.perf_counter()
        try:
            step()
        except Exception:  # a warm-up never fails the build; the tests will report it
            print(f"warm_numba_cache: step {name!r} failed:", file=sys.stderr)
            traceback.print_exc()
            continue
        print(f"warm_numba_cache: {name} {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

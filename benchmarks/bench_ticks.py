"""Benchmark celeris.data.bars_from_ticks against pandas resample on 20M random ticks.

Run: ``NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_ticks.py [N]``
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from celeris.data import bars_from_ticks


def make_ticks(n: int, seed: int = 0) -> pd.DataFrame:
    """Return ``n`` sorted random trades over three days."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC").value
    t = np.sort(rng.integers(0, 3 * 86_400 * 10**9, n)) + start
    price = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-5, n)))
    size = rng.exponential(0.1, n)
    index = pd.DatetimeIndex(pd.to_datetime(t, unit="ns", utc=True), name="time")
    return pd.DataFrame({"price": price, "size": size}, index=index)


def best_of(fn, repeat: int = 3) -> float:
    """Return the fastest of ``repeat`` timings of ``fn()`` in seconds."""
    timings = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - t0)
    return min(timings)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000_000
    ticks = make_ticks(n)
    bars_from_ticks(ticks.iloc[:1000], "1min")  # compile or load the numba cache
    ours = best_of(lambda: bars_from_ticks(ticks, "1min"))
    ref = best_of(
        lambda: ticks.resample("1min").agg(
            {"price": ["first", "max", "min", "last"], "size": "sum"}
        ),
        repeat=2,
    )
    print(f"ticks: {n:,}  bars: {len(bars_from_ticks(ticks, '1min')):,}")
    print(
        f"celeris bars_from_ticks: {n / ours / 1e6:8.1f} M ticks/s ({ours * 1e3:7.1f} ms, validation included)"
    )
    print(
        f"pandas resample().agg:   {n / ref / 1e6:8.1f} M ticks/s ({ref * 1e3:7.1f} ms, no validation)"
    )
    print(f"speed-up vs pandas: {ref / ours:.2f}x")


if __name__ == "__main__":
    main()

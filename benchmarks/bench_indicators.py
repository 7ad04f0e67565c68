"""Celeris indicator kernels vs TA-Lib: 1,000,000 bars x 50 windows.

Celeris computes all 50 windows in one kernel call (parallel over windows); TA-Lib is called
once per window in a Python loop. JIT compilation (or the cache load) is timed separately,
then each side is timed warm, best of ``--repeat``. Agreement is the largest error in units of
the parity tolerance (``|a - b| / (1e-9 + 1e-9 |b|)``: below 1 means within rtol=atol=1e-9),
plus whether NaN warm-ups coincide.

Run: ``NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/bench_indicators.py``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import talib

from celeris.indicators import nb


def _best(func: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def _agreement(ours: np.ndarray, theirs: list[np.ndarray]) -> tuple[float, bool]:
    worst, same_nan = 0.0, True
    for j, ref in enumerate(theirs):
        col = ours[:, j]
        nan_ref = np.isnan(ref)
        same_nan &= bool(np.array_equal(np.isnan(col), nan_ref))
        ok = ~nan_ref
        err = np.abs(col[ok] - ref[ok]) / (1e-9 + 1e-9 * np.abs(ref[ok]))
        worst = max(worst, float(err.max(initial=0.0)))
    return worst, same_nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, args.bars)))
    high = close * (1.0 + np.abs(rng.normal(0.0, 0.005, args.bars)))
    low = close * (1.0 - np.abs(rng.normal(0.0, 0.005, args.bars)))
    windows = np.arange(5, 255, 5, dtype=np.int64)  # 50 windows: 5, 10, ..., 250
    fast = np.arange(2, 52, dtype=np.int64)  # 50 MACD combinations (fast, 2 fast, 9)
    slow = 2 * fast
    signal = np.full(50, 9, dtype=np.int64)
    wl = [int(w) for w in windows]

    def cols() -> np.ndarray:
        return np.empty((50, args.bars)).T  # numpy allocation: huge pages where THP is madvise

    def three() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return cols(), cols(), cols()

    # name: (celeris call(out) -> compared output, TA-Lib call per window -> matching output);
    # out=None lets the kernel allocate (numba), else numpy-allocated columns are passed in.
    Ours = Callable[[bool], np.ndarray]
    cases: dict[str, tuple[Ours, Callable[[int], np.ndarray]]] = {
        "SMA": (
            lambda pre: nb.sma_nb(close, windows, cols() if pre else None),
            lambda j: talib.SMA(close, wl[j]),
        ),
        "EMA": (
            lambda pre: nb.ema_nb(close, windows, cols() if pre else None),
            lambda j: talib.EMA(close, wl[j]),
        ),
        "WMA": (
            lambda pre: nb.wma_nb(close, windows, cols() if pre else None),
            lambda j: talib.WMA(close, wl[j]),
        ),
        "RSI": (
            lambda pre: nb.rsi_nb(close, windows, cols() if pre else None),
            lambda j: talib.RSI(close, wl[j]),
        ),
        "STDDEV": (
            lambda pre: nb.rolling_std_nb(close, windows, 0, cols() if pre else None),
            lambda j: talib.STDDEV(close, wl[j], 1.0),
        ),
        "ATR": (
            lambda pre: nb.atr_nb(high, low, close, windows, cols() if pre else None),
            lambda j: talib.ATR(high, low, close, wl[j]),
        ),
        "BBANDS (3 out)": (
            lambda pre: nb.bbands_nb(close, windows, 2.0, 2.0, three() if pre else None)[0],
            lambda j: talib.BBANDS(close, wl[j], 2.0, 2.0, 0)[0],
        ),
        "MACD (3 out)": (
            lambda pre: nb.macd_nb(close, fast, slow, signal, three() if pre else None)[2],
            lambda j: talib.MACD(close, int(fast[j]), int(slow[j]), int(signal[j]))[2],
        ),
        "Donchian (3 out)": (
            lambda pre: nb.donchian_nb(high, low, windows, three() if pre else None)[0],
            lambda j: (
                talib.MAX(high, wl[j]),
                talib.MIN(low, wl[j]),
                talib.MIDPRICE(high, low, wl[j]),
            )[0],
        ),
    }

    import numba

    print(
        f"{args.bars:,} bars x 50 windows, best of {args.repeat}, "
        f"{numba.get_num_threads()} numba threads ({numba.config.THREADING_LAYER} layer)"
    )
    print(
        "celeris s: kernel allocating its output / numpy-allocated out passed in; "
        "speed-up = TA-Lib loop time / the better celeris time"
    )
    header = f"{'indicator':17s} {'jit/load s':>10s} {'celeris s':>13s} {'talib s':>8s}"
    print(f"{header} {'speed-up':>9s} {'max err/tol':>12s} {'NaN equal':>9s}")
    for name, (ours, theirs) in cases.items():
        t0 = time.perf_counter()
        ours(False)
        jit = time.perf_counter() - t0
        t_alloc = _best(lambda o=ours: o(False), args.repeat)
        t_out = _best(lambda o=ours: o(True), args.repeat)
        t_theirs = _best(lambda t=theirs: [t(j) for j in range(50)], args.repeat)
        err, same_nan = _agreement(ours(True), [theirs(j) for j in range(50)])
        print(
            f"{name:17s} {jit:10.2f} {t_alloc:6.3f}/{t_out:6.3f} {t_theirs:8.3f} "
            f"{t_theirs / min(t_alloc, t_out):8.2f}x {err:12.2e} {same_nan!s:>9s}"
        )


if __name__ == "__main__":
    main()

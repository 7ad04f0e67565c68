"""Fill numba's on-disk cache inside the image (the Dockerfiles run this at build time).

Every kernel ``celeris serve`` and ``celeris live`` compile on their first request or bar is
compiled here once, into ``$NUMBA_CACHE_DIR``, so a new pod answers its first request without
seconds of compiling (importing ``celeris.backtest`` alone compiles two eager kernels: ~66 s of
CPU cold on a 2-core machine). The image sets ``NUMBA_CPU_NAME=generic`` at build and at run
time: numba keys cache entries by CPU model, and a cache built for the build machine's CPU would
be silently ignored on a node with another one.

What runs is the real code path, not a list of kernels: a short replay of ``celeris live``
(bars -> strategy -> paper account -> signal feed records), the model features that
``POST /v1/forecast`` and ``celeris live --model`` compute, over clean bars and over bars with a
NaN (the per-column kernels), and the few research kernels left, so that ``celeris doctor``
reports the image's cache warm. A failing step fails the build: an image whose warm-up broke would
compile at its first request instead, which is what this script exists to prevent.

Usage: ``python warm_numba.py [--bars N]`` (``--bars`` shortens the replay; the tests run it
with ``NUMBA_DISABLE_JIT=1`` to check that it still calls the current API).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Every feature family the model path knows (celeris.models.features), so each kernel compiles.
FEATURES = (
    "log_return",
    "rsi_14",
    "atr_14",
    "ema_10",
    "sma_10",
    "zscore_20",
    "volatility_20",
    "log_volume",
    "log_close",
)


def _bars(symbols: int, n: int, seed: int = 0) -> np.ndarray:
    """Random-walk bars ``[symbols, n, 5]`` (open, high, low, close, volume)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (symbols, n)), axis=1))
    spread = np.abs(rng.normal(0.0, 0.003, (symbols, n)))
    volume = 1.0 + rng.random((symbols, n))
    return np.stack([close, close * (1 + spread), close * (1 - spread), close, volume], axis=2)


def warm_features() -> None:
    """The feature kernels of the model path, across symbols and per column (a NaN bar)."""
    from celeris.errors import DataError
    from celeris.models.features import FeatureSpec

    spec = FeatureSpec(FEATURES)
    bars = _bars(3, spec.lookback + 64)  # [A, T, 5]
    spec.last_windows(bars, 16)
    spec.last_windows(bars, 16, bounded=True)
    holed = bars.copy()
    holed[1, 5, 3] = np.nan  # a NaN close: the across-symbols kernels hand over per column
    # The NaN reaches the recursive features' last window: refused, after compiling.
    with contextlib.suppress(DataError):
        spec.last_windows(holed, 16)


def warm_live(bars: int | None) -> None:
    """``celeris live`` replaying the bundled sample through a rule strategy onto a feed socket."""
    with tempfile.TemporaryDirectory(prefix="celeris-warm-") as tmp:
        data = "sample:sp500"
        if bars is not None:
            from celeris.data import load

            frame = load("sample:sp500").iloc[:bars]
            data = str(Path(tmp) / "bars.csv")
            frame.to_csv(data)
        command = [
            sys.executable, "-m", "celeris.cli.main", "live", "--replay", data,
            "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20",
            "--fees", "0.001", "--state", str(Path(tmp) / "state"),
            "--socket", str(Path(tmp) / "feed.sock"), "--json",
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())


def warm_research() -> None:
    """The remaining kernel files, so that ``celeris doctor`` finds the image's cache warm:
    synthetic bars (GARCH), ticks to bars, and a backtest's statistics regrouped."""
    import pandas as pd

    from celeris.backtest import from_signals
    from celeris.data import bars_from_ticks, synthetic

    bars = synthetic(500, freq="1min", seed=0)
    times = bars.index[:200]
    ticks = pd.DataFrame({"price": bars["close"].to_numpy()[:200], "size": 1.0}, index=times)
    bars_from_ticks(ticks, "5min")
    close = pd.concat({"a": bars["close"], "b": bars["close"] * 1.01}, axis=1)
    entries = pd.DataFrame(False, index=close.index, columns=close.columns)
    exits = entries.copy()
    entries.iloc[::50] = True
    exits.iloc[25::50] = True
    from_signals(close, entries, exits, execution="close", freq="1min").stats(group_by=[0, 0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=None, help="replay only the first N bars")
    args = parser.parse_args(argv)
    steps = (
        ("features", warm_features),
        ("live", lambda: warm_live(args.bars)),
        ("research", warm_research),
    )
    for name, step in steps:
        start = time.perf_counter()
        step()
        print(f"warm {name}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""MA-crossover sweep: Celeris vs vectorbt on the same synthetic close, side by side.

    python benchmarks/bench_sweep.py                       # 100k bars, every vectorbt variant
    python benchmarks/bench_sweep.py --bars 1000000 --vbt-variants 128
    python benchmarks/bench_sweep.py --skip-vbt --price-per-hour 0.02   # cost per billion bar-variants

Grid: fast in range(10, 101, 2) x slow in range(50, 501, 10) with fast < slow (2,035 variants),
fees 0.001, slippage 0.0005, 1-minute bars. Each engine runs in its own subprocess so that
peak memory (max RSS) and start-up/JIT costs are measured per engine:

* Celeris: import time, first sweep in a fresh process (numba cache load, or compilation on a
  cold cache), then the warm sweep (best of --repeat runs), all metrics computed in the kernel.
* vectorbt: MAs by ``vbt.MA.run``, ``ma_crossed_above/below`` signals, ``Portfolio.from_signals``
  and the same metrics (total return, Sharpe, Sortino, Calmar, max drawdown, annualised return
  and volatility, trade count, win rate, profit factor, expectancy, best/worst trade), chunked
  over columns so that it fits in memory. With --vbt-variants N < 2,035 it runs an evenly spread
  subset and its time is scaled to the full grid (printed as an estimate).

The metrics of every variant vectorbt ran are compared with Celeris's (rtol 1e-7).

``--price-per-hour P`` (default ``$CELERIS_PRICE_PER_HOUR``): the price of one CPU core-hour
(one GPU-hour with ``--device cuda``); each engine's warm sweep is then priced per billion
bar-variants from the CPU seconds it used (``time.process_time``, every thread; on a GPU the
sweep's wall seconds), beside its throughput (:mod:`celeris.bench.cost`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FAST = list(range(10, 101, 2))
SLOW = list(range(50, 501, 10))
FEES, SLIPPAGE = 0.001, 0.0005
COMPARED = [
    "total_return", "sharpe", "sortino", "calmar", "max_drawdown", "cagr", "volatility",
    "trades", "win_rate", "profit_factor", "expectancy", "best_trade", "worst_trade",
]  # fmt: skip


def pairs() -> list[tuple[int, int]]:
    return [(f, s) for f in FAST for s in SLOW if f < s]


def load_close(n_bars: int):
    import celeris.data as cd

    return cd.synthetic(n_bars, freq="1min", seed=0)


def worker_celeris(n_bars: int, repeat: int, out: Path, device: str = "auto") -> dict:
    t0 = time.perf_counter()
    import celeris.backtest as bt

    t_import = time.perf_counter() - t0
    bars = load_close(n_bars)
    grid = {"fast": FAST, "slow": SLOW}
    t0 = time.perf_counter()
    # vectorbt fills at the signal bar's close and annualises with 365 days: both said explicitly
    # (Celeris's defaults are the next open and the inferred calendar).
    same = dict(fees=FEES, slippage=SLIPPAGE, execution="close", year_days=365, device=device)
    tiny = bt.sweep(bars.iloc[:2000], "sma_cross", {"fast": [10], "slow": [50]}, progress=False,
                    **same)  # fmt: skip
    t_first = time.perf_counter() - t0
    del tiny
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = bt.sweep(bars, "sma_cross", grid, progress=False, **same)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    stats = result.stats()
    np.save(out, stats[COMPARED].to_numpy(dtype=np.float64))
    best = int(np.argmin(times))
    return {
        "import_s": t_import,
        "first_call_s": t_first,
        "warm_s": times[best],
        "warm_cpu_s": cpu[best],
        "variants": len(stats),
        "device": result.device,
    }


def worker_vectorbt(n_bars: int, n_variants: int, out: Path) -> dict:
    t0 = time.perf_counter()
    import pandas as pd
    import vectorbt as vbt

    t_import = time.perf_counter() - t0
    close = load_close(n_bars)["close"]
    all_pairs = pairs()
    pick = np.unique(np.linspace(0, len(all_pairs) - 1, n_variants).round().astype(int))
    chosen = [all_pairs[i] for i in pick]
    chunk = max(
        8, int(3e9 // (n_bars * 137))
    )  # ~3 GB of vectorbt state per chunk (~137 B/bar-variant)

    def run(sub):
        fast = vbt.MA.run(close, window=[p[0] for p in sub], short_name="fast")
        slow = vbt.MA.run(close, window=[p[1] for p in sub], short_name="slow")
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEES, slippage=SLIPPAGE, freq="1min",
                                        init_cash=100_000.0, engine="numba")  # fmt: skip
        rets = pf.returns_acc
        closed = pf.trades.closed
        cols = {
            "total_return": pf.total_return(), "sharpe": rets.sharpe_ratio(), "sortino": rets.sortino_ratio(),
            "calmar": rets.calmar_ratio(), "max_drawdown": -pf.max_drawdown(), "cagr": rets.annualized(),
            "volatility": rets.annualized_volatility(), "trades": pf.trades.count(),
            "win_rate": closed.win_rate(), "profit_factor": closed.profit_factor(),
            "expectancy": closed.expectancy(), "best_trade": closed.returns.max(),
            "worst_trade": closed.returns.min(),
        }  # fmt: skip
        return np.column_stack([np.asarray(cols[c], dtype=np.float64) for c in COMPARED])

    run(chosen[:2])  # compile/load vectorbt's numba functions outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    rows = [run(chosen[i : i + chunk]) for i in range(0, len(chosen), chunk)]
    elapsed = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    np.save(out, np.vstack(rows))
    del pd
    return {
        "import_s": t_import,
        "warm_s": elapsed,
        "warm_cpu_s": cpu_s,
        "variants": len(chosen),
        "picked": pick.tolist(),
    }


def spawn(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--vbt-variants", type=int, default=None, help="vectorbt subset size (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-vbt", action="store_true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        help="price of one CPU core-hour (GPU-hour on cuda): cost per billion bar-variants "
        "(default $CELERIS_PRICE_PER_HOUR; none: no cost)",
    )
    parser.add_argument("--worker", choices=["celeris", "vectorbt"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        n = args.bars[0]
        if args.worker == "celeris":
            info = worker_celeris(n, args.repeat, Path(args.out), args.device)
        else:
            info = worker_vectorbt(n, args.vbt_variants or len(pairs()), Path(args.out))
        info["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(info))
        return

    from celeris.bench.cost import price_per_hour, sweep_cost

    price = price_per_hour(args.price_per_hour)
    print(
        f"machine: {os.cpu_count()} cores; numba threads {os.environ.get('NUMBA_NUM_THREADS', 'default')}"
    )

    def cost(busy_s: float, bar_variants: float) -> str:
        if price is None:
            return ""
        return f" | cost {sweep_cost(price, busy_s, bar_variants).text()}"

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.bars:
            total = len(pairs())
            c_out, v_out = Path(tmp, f"c{n}.npy"), Path(tmp, f"v{n}.npy")
            cel = spawn(
                [
                    "--worker",
                    "celeris",
                    "--bars",
                    str(n),
                    "--repeat",
                    str(args.repeat),
                    "--out",
                    str(c_out),
                    "--device",
                    args.device,
                ]
            )
            rate = n * total / cel["warm_s"]
            print(f"\n== {n:,} bars x {total:,} variants ==")
            # On a GPU the price is per GPU-hour and the busy time the sweep's wall time.
            busy = cel["warm_s"] if cel["device"] == "cuda" else cel["warm_cpu_s"]
            print(f"celeris : import {cel['import_s']:.2f} s | first call (JIT/cache) {cel['first_call_s']:.2f} s | "
                  f"warm {cel['warm_s']:.2f} s, {cel['warm_cpu_s']:.2f} CPU-s ({rate / 1e6:.0f} M bar-variants/s) | "
                  f"peak RSS {cel['max_rss_mb']:.0f} MB | device {cel['device']}"
                  f"{cost(busy, n * total)}")  # fmt: skip
            if args.skip_vbt:
                continue
            k = min(args.vbt_variants or total, total)
            vb = spawn(
                [
                    "--worker",
                    "vectorbt",
                    "--bars",
                    str(n),
                    "--vbt-variants",
                    str(k),
                    "--out",
                    str(v_out),
                ]
            )
            scale = total / vb["variants"]
            est = vb["warm_s"] * scale
            label = (
                "warm"
                if scale == 1
                else f"warm {vb['warm_s']:.1f} s on {vb['variants']} variants -> est."
            )
            print(f"vectorbt: import {vb['import_s']:.2f} s | {label} {est:.1f} s "
                  f"({n * total / est / 1e6:.1f} M bar-variants/s) | peak RSS {vb['max_rss_mb']:.0f} MB"
                  f"{cost(vb['warm_cpu_s'], n * vb['variants'])}")  # fmt: skip
            ours = np.load(c_out)[vb["picked"]]
            theirs = np.load(v_out)
            finite = np.isfinite(theirs) & np.isfinite(ours)
            same_nan = (np.isnan(ours) == np.isnan(theirs)) | np.isinf(theirs)
            close = np.isclose(ours, theirs, rtol=1e-7, atol=1e-10) | ~finite
            bad = ~(close & same_nan)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                print(f"AGREEMENT: {int(bad.sum())} of {bad.size} values differ; first {COMPARED[c]} "
                      f"variant {r}: {ours[r, c]!r} vs {theirs[r, c]!r}")  # fmt: skip
            else:
                print(
                    f"agreement: all {len(COMPARED)} metrics of {len(theirs)} variants match (rtol 1e-7)"
                )
            print(f"speed-up (warm sweep): {est / cel['warm_s']:.1f}x")


if __name__ == "__main__":
    main()

"""Grouped, cash-sharing simulation: Celeris vs vectorbt on the same signals, side by side.

    python benchmarks/bench_group.py --assets 10 --bars 10000 --sets 10 --stops   # quick check
    python benchmarks/bench_group.py --stops --no-stats --repeat 1   # the floor: 50 x 100k x 100
    python benchmarks/bench_group.py --profile --skip-vbt    # where Celeris's time goes

Issue 12's floor: 50 assets x 100k bars x 100 parameter sets, each parameter set one account
(cash shared by its 50 assets, call sequence "auto": sells before buys), at least 20x vectorbt
1.2 with identical results.

Data: a seeded 50-asset GBM panel of 1-minute closes. Parameter sets: (fast, slow) SMA-cross
pairs; the entry/exit signals are computed once, here, as (n_bars, sets x assets) bool arrays laid
out set-major (set 0's assets, then set 1's...) and handed to both engines from the same files.
Options: ``size`` (default 10%) of available cash per entry (``size_type="percent"``), fees 0.001,
100,000 starting cash per set, fills at the signal bar's close; ``--stops`` adds a run with
``sl_stop`` (default 0.05).

Each engine runs in its own subprocess (peak memory per engine), warm (numba compiled or loaded
from its cache on a small slice first), best of ``--repeat``, signal arrays in memory:

* Celeris: ``from_signals(close (n, assets) frame, entries, exits, cash_sharing=True,
  call_seq="auto", execution="close", ...)``, which runs the kernel and returns the metrics it
  accumulates per group (``Book.metric_values``: timed as "kernel"), then ``Book.stats()``
  (timed as "+stats"; it adds exposure and turnover, which re-simulate with records and build
  (n_bars x n_cols) float64 positions and values, ~4 GB each at the floor size: pass
  ``--no-stats`` there).
* vectorbt: ``close.vbt.tile(sets)`` to the (n, sets x assets) shape it simulates,
  ``Portfolio.from_signals(..., group_by=["fast", "slow"], cash_sharing=True, call_seq="auto")``,
  then ``final_value``, ``total_return``, ``sharpe_ratio`` and the order count per group. It runs
  over chunks of whole groups (``--vbt-chunk`` groups at a time, ~0.4 GB of tiled close each) so
  that it fits in memory (groups are independent accounts, so chunking changes no result) with
  ``max_orders`` bounded by the signal count (vectorbt's default reserves one record per
  bar x column, 24 GB at the floor size). Its time without the tiling is printed too; the
  speed-up is taken against that (the smaller) figure.

Agreement: per-group end value, total return and Sharpe ratio to 1e-9 relative, order counts
equal. ``--profile`` times Celeris alone (kernel metrics) with call_seq "default" vs "auto",
with and without stops, with no signals at all (all-False arrays: the cost of walking the bars
and marking the books) and with one numba thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEES = 0.001
INIT_CASH = 100_000.0
RTOL = 1e-9
FLOOR_SPEEDUP = 20.0
COMPARED = ["end_value", "total_return", "sharpe", "orders"]


# ---------------------------------------------------------------- data and signals
def param_pairs(n_sets: int) -> list[tuple[int, int]]:
    """``n_sets`` (fast, slow) SMA windows: fast 5, 10, ... x slow 60, 80, ... (100 = 10 x 10)."""
    side = math.ceil(math.sqrt(n_sets))
    fast = [5 * (i + 1) for i in range(side)]
    slow = [60 + 20 * i for i in range(side)]
    return [(f, s) for f in fast for s in slow][:n_sets]


def gbm_close(n_bars: int, n_assets: int, seed: int) -> np.ndarray:
    """(n_bars, n_assets) GBM closes from 100, per-bar volatility 0.1%-0.4% by asset."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.001, 0.004, n_assets)
    steps = rng.standard_normal((n_bars, n_assets)) * sigma - 0.5 * sigma**2
    return 100.0 * np.exp(np.cumsum(steps, axis=0))


def sma(close: np.ndarray, window: int) -> np.ndarray:
    """Same as ``close.rolling(window).mean()`` (NaN for the first window - 1 bars)."""
    csum = np.cumsum(close, axis=0)
    out = np.full_like(close, np.nan)
    out[window - 1 :] = csum[window - 1 :]
    out[window:] -= csum[:-window]
    out[window - 1 :] /= window
    return out


def cross_signals(close: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Entries (fast crosses above slow) and exits (below), (n_bars, sets x assets), set-major."""
    n_bars, n_assets = close.shape
    entries = np.zeros((n_bars, len(pairs) * n_assets), dtype=np.bool_)
    exits = np.zeros_like(entries)
    cache: dict[int, np.ndarray] = {}
    for k, (fast, slow) in enumerate(pairs):
        for w in (fast, slow):
            if w not in cache:
                cache[w] = sma(close, w)
        diff = cache[fast] - cache[slow]  # [n_bars, n_assets]
        prev = np.empty_like(diff)
        prev[0] = np.nan
        prev[1:] = diff[:-1]
        block = slice(k * n_assets, (k + 1) * n_assets)
        entries[:, block] = (diff > 0) & (prev <= 0)
        exits[:, block] = (diff < 0) & (prev >= 0)
    return entries, exits


def load_inputs(tmp: Path):
    import pandas as pd

    meta = json.loads((tmp / "meta.json").read_text())
    close = np.load(tmp / "close.npy")
    index = pd.date_range("2024-01-01", periods=close.shape[0], freq="1min", tz="UTC")
    symbols = pd.Index([f"A{i:02d}" for i in range(close.shape[1])], name="symbol")
    pairs = [tuple(p) for p in meta["pairs"]]
    columns = pd.MultiIndex.from_tuples(
        [(f, s, a) for f, s in pairs for a in symbols], names=["fast", "slow", "symbol"]
    )
    close_frame = pd.DataFrame(close, index=index, columns=symbols, copy=False)
    return close_frame, columns, pairs


def signal_frames(tmp: Path, index, columns, mode: str = "signals"):
    import pandas as pd

    entries = np.load(tmp / "entries.npy")
    exits = np.load(tmp / "exits.npy")
    if mode == "none":
        entries[:] = False
        exits[:] = False
    return (
        pd.DataFrame(entries, index=index, columns=columns, copy=False),
        pd.DataFrame(exits, index=index, columns=columns, copy=False),
    )


def _best(func, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ---------------------------------------------------------------- workers
def worker_celeris(tmp: Path, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    import celeris.backtest as bt
    from celeris.backtest import kernel as K

    t_import = time.perf_counter() - t0
    close, columns, _ = load_inputs(tmp)
    entries, exits = signal_frames(tmp, close.index, columns, args.signals)
    opts = dict(
        cash_sharing=True,
        call_seq=args.call_seq,
        execution="close",
        size=args.size,
        size_type=args.size_type,
        fees=FEES,
        init_cash=INIT_CASH,
        sl_stop=args.sl_stop,
        year_days=365,  # vectorbt's year
    )
    # Warm-up on a slice: numba's cached machine code loaded (or compiled) outside the timing.
    n_warm = min(2000, len(close))
    t0 = time.perf_counter()
    bt.from_signals(close.iloc[:n_warm], entries.iloc[:n_warm], exits.iloc[:n_warm], **opts).stats()
    t_first = time.perf_counter() - t0

    t_kernel, book = _best(lambda: bt.from_signals(close, entries, exits, **opts), args.repeat)
    values = book.metric_values
    out = np.column_stack(
        [values[:, K.M_END_VALUE], values[:, K.M_TOTAL_RETURN], values[:, K.M_SHARPE],
         values[:, K.M_ORDERS]]
    )  # fmt: skip
    info = {"import_s": t_import, "first_call_s": t_first, "kernel_s": t_kernel}
    rss_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info["kernel_max_rss_mb"] = rss_kernel
    if args.with_stats:
        t_stats, stats = _best(
            lambda: bt.from_signals(close, entries, exits, **opts).stats(), args.repeat
        )
        info["stats_s"] = t_stats
        check = stats[["end_value", "total_return", "sharpe", "orders"]].to_numpy(np.float64)
        if not np.array_equal(check, out, equal_nan=True):
            raise SystemExit("Book.stats() differs from Book.metric_values")
        # Stop exits fired (read from the order records, outside the timing).
        info["stop_orders"] = int((book.orders["kind"] == "stop").sum())
    np.save(tmp / f"celeris_{args.tag}.npy", out)
    info["groups"] = len(out)
    return info


def worker_vectorbt(tmp: Path, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    import pandas as pd
    import vectorbt as vbt

    t_import = time.perf_counter() - t0
    close, columns, pairs = load_inputs(tmp)
    entries, exits = signal_frames(tmp, close.index, columns, args.signals)
    n_assets = close.shape[1]
    keys = pd.MultiIndex.from_tuples(pairs, names=["fast", "slow"])
    sl_stop = np.nan if args.sl_stop is None else args.sl_stop

    def order_bound(n_bars: int, g0: int, g1: int) -> int:
        # Every order opens on an entry signal or closes the position an entry opened.
        cols = slice(g0 * n_assets, g1 * n_assets)
        n_entries = int(entries.iloc[:n_bars, cols].to_numpy().sum())
        return 2 * n_entries + int(exits.iloc[:n_bars, cols].to_numpy().sum()) + 1

    def run(n_bars: int, g0: int, g1: int, max_orders: int) -> tuple[np.ndarray, float]:
        cols = slice(g0 * n_assets, g1 * n_assets)
        ent = entries.iloc[:n_bars, cols]
        ex = exits.iloc[:n_bars, cols]
        t0 = time.perf_counter()
        tiled = close.iloc[:n_bars].vbt.tile(g1 - g0, keys=keys[g0:g1])  # [n, groups x assets]
        t_tile = time.perf_counter() - t0
        pf = vbt.Portfolio.from_signals(
            tiled, ent, ex, group_by=["fast", "slow"], cash_sharing=True, call_seq=args.call_seq,
            size=args.size, size_type=args.size_type, fees=FEES, init_cash=INIT_CASH,
            sl_stop=sl_stop, freq="1min", max_orders=max_orders, engine="numba",
        )  # fmt: skip
        metrics = (pf.final_value(), pf.total_return(), pf.sharpe_ratio(), pf.orders.count())
        res = np.column_stack([np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in metrics])
        return res.astype(np.float64), t_tile

    warm = (min(2000, len(close)), 0, min(2, len(pairs)))
    t0 = time.perf_counter()
    run(*warm, order_bound(*warm))  # compile / load vectorbt's numba code
    t_first = time.perf_counter() - t0
    n_groups = len(pairs)
    chunk = args.vbt_chunk or max(1, int(5e7 // (len(close) * n_assets)))
    chunks = [(len(close), g, min(g + chunk, n_groups)) for g in range(0, n_groups, chunk)]
    bounds = [order_bound(*c) for c in chunks]  # outside the timing
    best, best_tile, rows = math.inf, 0.0, []
    for _ in range(args.vbt_repeat):
        t0 = time.perf_counter()
        parts = [run(*c, b) for c, b in zip(chunks, bounds, strict=True)]
        elapsed = time.perf_counter() - t0
        if elapsed < best:
            best, best_tile, rows = elapsed, sum(p[1] for p in parts), [p[0] for p in parts]
    out = np.vstack(rows)
    np.save(tmp / f"vectorbt_{args.tag}.npy", out)
    return {
        "import_s": t_import,
        "first_call_s": t_first,
        "total_s": best,
        "tile_s": best_tile,
        "chunk_groups": chunk,
        "groups": len(out),
    }


# ---------------------------------------------------------------- driver
def spawn(
    tmp: Path, engine: str, tag: str, argv: list[str], env: dict[str, str] | None = None
) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--tmp", str(tmp), "--tag", tag, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} worker ({tag}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    versions = []
    for name in ("numpy", "pandas", "numba", "vectorbt"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name} -")
    return (
        f"machine: {model or platform.processor()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; numba threads "
        f"{os.environ.get('NUMBA_NUM_THREADS', 'default')}; Python {platform.python_version()}, "
        + ", ".join(versions)
    )


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[bool, str]:
    """Per-group end value, total return, Sharpe to RTOL relative; order counts equal."""
    worst = []
    for j, name in enumerate(COMPARED):
        a, b = ours[:, j], theirs[:, j]
        if name == "orders":
            diff = int((a != b).sum())
            worst.append(f"orders: {diff} groups differ")
            continue
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
        same_nan = np.isnan(a) == np.isnan(b)
        rel = np.where(np.isnan(a) & np.isnan(b), 0.0, rel)
        bad = (rel > RTOL) | ~same_nan
        worst.append(
            f"{name}: max rel {np.nanmax(rel):.1e}"
            + (f" ({int(bad.sum())} bad)" if bad.any() else "")
        )
    ok = all("bad" not in w for w in worst) and (ours[:, 3] == theirs[:, 3]).all()
    return bool(ok), "; ".join(worst)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--sets", type=int, default=100, help="parameter sets (groups)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=float, default=0.1)
    parser.add_argument("--size-type", default="percent", choices=["percent", "value", "amount"])
    parser.add_argument("--call-seq", default="auto", choices=["default", "reversed", "auto"])
    parser.add_argument("--stops", action="store_true", help="also run with --sl-stop")
    parser.add_argument("--sl-stop", type=float, nargs="+", default=[0.05])
    parser.add_argument("--repeat", type=int, default=3, help="Celeris: best of")
    parser.add_argument("--vbt-repeat", type=int, default=1, help="vectorbt: best of")
    parser.add_argument("--vbt-chunk", type=int, default=0, help="groups per vectorbt call")
    parser.add_argument("--skip-vbt", action="store_true")
    parser.add_argument("--no-stats", action="store_true", help="Celeris: skip the +stats timing")
    parser.add_argument("--profile", action="store_true", help="Celeris-only variants")
    parser.add_argument("--worker", choices=["celeris", "vectorbt"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--signals", default="signals", help=argparse.SUPPRESS)
    parser.add_argument("--with-stats", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-sl", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.sl_stop = None if args.no_sl else args.sl_stop[0]
        tmp = Path(args.tmp)
        info = (worker_celeris if args.worker == "celeris" else worker_vectorbt)(tmp, args)
        info["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(info))
        return

    print(machine())
    pairs = param_pairs(args.sets)
    n_cols = args.sets * args.assets
    print(f"{args.assets} assets x {args.bars:,} bars x {args.sets} parameter sets "
          f"({n_cols:,} columns, {args.sets} accounts); size {args.size:g} {args.size_type}, "
          f"fees {FEES}, call_seq {args.call_seq}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_group_") as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        close = gbm_close(args.bars, args.assets, args.seed)
        entries, exits = cross_signals(close, pairs)
        np.save(tmp / "close.npy", close)
        np.save(tmp / "entries.npy", entries)
        np.save(tmp / "exits.npy", exits)
        (tmp / "meta.json").write_text(json.dumps({"pairs": pairs}))
        print(f"signals: {int(entries.sum()):,} entries, {int(exits.sum()):,} exits "
              f"({time.perf_counter() - t0:.1f} s to build, not timed)")  # fmt: skip
        del close, entries, exits

        common = ["--size", str(args.size), "--size-type", args.size_type,
                  "--repeat", str(args.repeat), "--vbt-repeat", str(args.vbt_repeat),
                  "--vbt-chunk", str(args.vbt_chunk)]  # fmt: skip
        cases = [("plain", ["--no-sl"])]
        if args.stops:
            cases += [(f"sl_stop={sl:g}", ["--sl-stop", str(sl)]) for sl in args.sl_stop]
        if args.profile:
            profile(tmp, cases, common, args)
            return
        rows = []
        for label, extra in cases:
            argv = [*common, "--call-seq", args.call_seq, *extra]
            if not args.no_stats:
                argv.append("--with-stats")
            cel = spawn(tmp, "celeris", label, argv)
            line = (f"\n== {label} ==\nceleris : import {cel['import_s']:.2f} s | first call "
                    f"{cel['first_call_s']:.2f} s | kernel {cel['kernel_s']:.3f} s")  # fmt: skip
            if "stats_s" in cel:
                line += f" | +stats {cel['stats_s']:.3f} s | stop exits {cel['stop_orders']:,}"
            print(line + f" | peak RSS {cel['max_rss_mb']:.0f} MB (kernel only: "
                  f"{cel['kernel_max_rss_mb']:.0f} MB)")  # fmt: skip
            row = {"case": label, "celeris": cel}
            if not args.skip_vbt:
                vb = spawn(tmp, "vectorbt", label, argv)
                sim = vb["total_s"] - vb["tile_s"]
                print(f"vectorbt: import {vb['import_s']:.2f} s | first call {vb['first_call_s']:.2f} s "
                      f"| total {vb['total_s']:.2f} s (tile {vb['tile_s']:.2f} s, from_signals + "
                      f"metrics {sim:.2f} s) in chunks of {vb['chunk_groups']} groups | peak RSS "
                      f"{vb['max_rss_mb']:.0f} MB")  # fmt: skip
                ok, detail = compare(
                    np.load(tmp / f"celeris_{label}.npy"), np.load(tmp / f"vectorbt_{label}.npy")
                )
                print(("agreement: " if ok else "DISAGREEMENT: ") + detail)
                row.update(vectorbt=vb, agree=ok, sim=sim)
            rows.append(row)
        if args.skip_vbt:
            return
        print("\n| case | Celeris kernel | Celeris +stats | vectorbt (no tiling / with) | "
              "speed-up kernel | speed-up +stats | identical |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            cel, vb = r["celeris"], r["vectorbt"]
            stats = (
                (f"{cel['stats_s']:.3f} s", f"{r['sim'] / cel['stats_s']:.1f}x")
                if ("stats_s" in cel)
                else ("-", "-")
            )
            print(f"| {r['case']} | {cel['kernel_s']:.3f} s | {stats[0]} | {r['sim']:.1f} s / "
                  f"{vb['total_s']:.1f} s | {r['sim'] / cel['kernel_s']:.1f}x | {stats[1]} | "
                  f"{'yes' if r['agree'] else 'NO'} |")  # fmt: skip
        worst = min(r["sim"] / r["celeris"].get("stats_s", r["celeris"]["kernel_s"]) for r in rows)
        met = worst >= FLOOR_SPEEDUP and all(r["agree"] for r in rows)
        print(f"floor (>= {FLOOR_SPEEDUP:g}x, identical): {'met' if met else 'NOT met'} "
              f"(smallest speed-up {worst:.1f}x)")  # fmt: skip


def profile(tmp: Path, cases: list, common: list[str], args: argparse.Namespace) -> None:
    """Celeris alone (kernel metrics, no stats): call sequence, stops, no signals at all (the
    cost of walking the bars and marking the books), and one numba thread against the default."""
    print("\n| variant | from_signals (kernel metrics) | peak RSS |")
    print("|---|---|---|")
    variants = [(c, s, None) for c in ("default", "auto") for s in ("signals", "none")]
    variants.append((args.call_seq, "signals", "1"))
    for label, extra in cases:
        for call_seq, signals, threads in variants:
            argv = [*common, "--call-seq", call_seq, "--signals", signals, *extra]
            env = None if threads is None else {**os.environ, "NUMBA_NUM_THREADS": threads}
            cel = spawn(tmp, "celeris", f"{label}-{call_seq}-{signals}", argv, env)
            what = "no signals" if signals == "none" else "signals"
            where = "" if threads is None else f", NUMBA_NUM_THREADS={threads}"
            print(f"| {label}, call_seq={call_seq}, {what}{where} | {cel['kernel_s']:.3f} s | "
                  f"{cel['max_rss_mb']:.0f} MB |")  # fmt: skip


if __name__ == "__main__":
    main()

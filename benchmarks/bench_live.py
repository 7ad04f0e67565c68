"""The live loop against the floors of issue 13: crash safety under ``kill -9``, replay speed,
bar-close-to-signal latency on the feed.

    python benchmarks/bench_live.py [--only crash window replay latency] [--kills 50]
        [--crash-bars 800] [--window-kills 10] [--replay-bars 1000000] [--replay-symbols 1 10]
        [--latency-symbols 100] [--latency-steps 1000] [--no-model] [--profile]

* crash: ``celeris live --replay`` (sma_cross 5/20 on the first ``--crash-bars`` bars of
  sample:sp500, one bar per step, paced 2 ms) killed with SIGKILL ``--kills`` times at seeded
  random moments and restarted on the same --state, a feed subscriber on every run (the harness
  of tests/live/test_crash.py); lost / duplicated signals and fills against an uninterrupted
  run, idempotent repeats on the wire.
* window: the same, every kill as the process enters its 1st-3rd ``SignalPublisher.publish``
  (after the step's journal commit, before the send; a ``sitecustomize`` hook of the test).
* replay: :class:`LiveLoop` driven by :class:`ReplaySource` (blocks of 65,536 bars, what
  ``--replay`` does) with a journal and no feed, sma_cross 10/50 on synthetic 1m bars; bars per
  second per symbol (floor 100k).
* latency: ``--latency-symbols`` symbols on one 1m stream, one closed bar per symbol per step
  through :meth:`LiveLoop.process` (history 1,000 bars as live, ``publish="every-bar"``), a
  :class:`SignalPublisher` and a :class:`SignalSubscriber` reading in another thread; from the
  call to the arrival of the step's first and last record, and the loop's own
  ``published_ns - received_ns``; p50/p90/p99 after warm-up. Rule path (floor p99 < 1 ms) and a
  tiny cnn_lstm checkpoint on CPU (floor p99 < 5 ms).

``--profile`` runs cProfile over the replay and latency cases and prints where the time goes
(own time per function, share of the total).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the crash harness lives with its test

FIELDS = ["open", "high", "low", "close", "volume"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    load = os.getloadavg()
    return (
        f"{names[0] if names else cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )


def top_functions(profile: cProfile.Profile, total_s: float, n: int = 12) -> str:
    """Own time per function, with its share of ``total_s`` and its cumulative time."""
    stats = pstats.Stats(profile)
    rows = []
    for (file, line, name), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, cum, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    out = [f"    {'own s':>7} {'share':>6} {'cum s':>7} {'calls':>9}  function"]
    for own, cum, calls, where in rows[:n]:
        out.append(f"    {own:7.3f} {own / total_s:6.1%} {cum:7.3f} {calls:9d}  {where}")
    return "\n".join(out)


def cumulative(profile: cProfile.Profile, names: list[str]) -> dict[str, float]:
    """Cumulative seconds of the functions called ``names`` (first match of each)."""
    stats = pstats.Stats(profile)
    out: dict[str, float] = {}
    for (_file, _line, name), (_cc, _calls, _own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name in names:
            out[name] = out.get(name, 0.0) + cum
    return out


# ---- (a) crash safety ---------------------------------------------------------------------------


def bench_crash(kills: int, n_bars: int, seed: int, window: bool = False) -> None:
    from tests.live.test_crash import KILL_MODES, crash_and_check, write_slice

    modes = ("send",) if window else KILL_MODES

    with tempfile.TemporaryDirectory(prefix="celeris-crash-") as tmp:
        work = Path(tmp)
        data = write_slice(work / "spx.csv", n_bars)
        t0 = time.perf_counter()
        # a round ends early when a planned kill comes after the replay's end: then another
        # round (fresh --state, next seed) until `kills` restarts were made
        rounds = []
        while sum(r[0].kills for r in rounds) < kills:
            left = kills - sum(r[0].kills for r in rounds)
            sub = work / f"round{len(rounds)}"
            sub.mkdir()
            rounds.append(crash_and_check(data, sub, kills=left, seed=seed + len(rounds),
                                          modes=modes))  # fmt: skip
            if rounds[-1][0].kills == 0:
                raise RuntimeError("a round made no kill: the replay is too short")
        wall = time.perf_counter() - t0
    report = _merge([r[0] for r in rounds])
    same_signals = all(
        [s[:4] for s in j["signals"]] == [s[:4] for s in ref["signals"]] for _, ref, j in rounds
    )
    same_fills = all(
        [f[:2] + f[3:7] for f in j["fills"]] == [f[:2] + f[3:7] for f in ref["fills"]]
        for _, ref, j in rounds
    )
    lost_journal = sum(
        len({s[0] for s in ref["signals"]} - {s[0] for s in j["signals"]}) for _, ref, j in rounds
    )
    dup_signals = sum(len(j["signals"]) - len({s[0] for s in j["signals"]}) for _, _, j in rounds)
    n_ref_signals = sum(len(ref["signals"]) for _, ref, _ in rounds)
    n_ref_fills = sum(len(ref["fills"]) for _, ref, _ in rounds)
    what = " (every kill at a publish, after the step's commit)" if window else ""
    print(f"crash{what}: {report.kills} kill -9 restarts ({report.modes}), {report.starts} starts, "
          f"{n_bars} bars of sample:sp500, {len(rounds)} round(s), {wall:.0f} s")  # fmt: skip
    print(f"  journal: {report.signals} signals (reference {n_ref_signals}), "
          f"{report.fills} fills (reference {n_ref_fills}); signals identical: "
          f"{same_signals}, fills identical: {same_fills}")  # fmt: skip
    print(f"  lost signals (journal vs reference): {lost_journal}, duplicated "
          f"signals: {dup_signals}, duplicated fills: {report.duplicated_fills}")  # fmt: skip
    print(f"  wire: {report.received} records received, lost ids {len(report.lost)}, "
          f"idempotent repeats {report.repeats}, conflicting repeats {len(report.conflicting)}, "
          f"wire != journal {len(report.wire_mismatch)}")  # fmt: skip
    print(f"  kills that left journaled signals unmarked: sent before the kill "
          f"{report.sent_unmarked}, journaled and never sent (commit -> publish window) "
          f"{report.journaled_unsent}; subscribers that joined after a restart's first publish "
          f"{report.late_subscribers}")  # fmt: skip


def _merge(reports: list[Any]) -> Any:
    """The counts of several rounds' reports added up."""
    out = reports[0]
    for r in reports[1:]:
        for name in ("kills", "starts", "signals", "fills", "received", "repeats",
                     "duplicated_fills", "journaled_unsent", "sent_unmarked",
                     "late_subscribers"):  # fmt: skip
            setattr(out, name, getattr(out, name) + getattr(r, name))
        out.lost += r.lost
        out.conflicting += r.conflicting
        out.wire_mismatch += r.wire_mismatch
        for mode, n in r.modes.items():
            out.modes[mode] = out.modes.get(mode, 0) + n
    return out


# ---- (b) replay speed ---------------------------------------------------------------------------


def bench_replay(n_bars: int, n_symbols: int, profile: bool) -> None:
    from celeris.data.synthetic import synthetic
    from celeris.live.journal import Journal
    from celeris.live.loop import LiveLoop
    from celeris.live.replay import ReplaySource
    from celeris.live.signals import RuleSignals

    frames = {f"S{i}/USDT": synthetic(n_bars, seed=i) for i in range(n_symbols)}
    with tempfile.TemporaryDirectory(prefix="celeris-replay-") as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite", list(frames), {"bench": "replay"})
        loop = LiveLoop(
            list(frames), RuleSignals("sma_cross", {"fast": 10, "slow": 50}), journal,
            options={"fees": 0.001},
        )  # fmt: skip
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        total = asyncio.run(loop.run(ReplaySource(frames, block=65_536), until_exhausted=True))
        if prof is not None:
            prof.disable()
        wall = time.perf_counter() - t0
        signals = journal.next_signal_id - 1
        fills = len(journal.fills())
        journal.close()
    tag = " (under cProfile)" if prof else ""
    print(f"replay{tag}: {n_symbols} symbol(s) x {total:,} 1m bars, sma_cross 10/50: {wall:.1f} s"
          f", {total / wall:,.0f} bars/s per symbol, {total * n_symbols / wall:,.0f} bar-symbols/s"
          f"; {signals:,} signals, {fills:,} fills")  # fmt: skip
    if prof is not None:
        print(top_functions(prof, wall))
        print("    cumulative:", {k: round(v, 2) for k, v in cumulative(prof, [
            "_gate", "_signal_rows", "commit_step", "take", "compute", "step", "orders_frame",
        ]).items()})  # fmt: skip


# ---- (c) latency --------------------------------------------------------------------------------


class Arrivals(threading.Thread):
    """A subscriber thread: the arrival time (perf_counter_ns) of every record by sequence."""

    def __init__(self, sock: Path) -> None:
        from celeris.serving.feed import SignalSubscriber

        super().__init__(daemon=True)
        self.sub = SignalSubscriber(sock, timeout_s=600)
        self.at: dict[int, int] = {}

    def run(self) -> None:
        clock = time.perf_counter_ns
        at = self.at
        for rec in self.sub:
            at[rec.sequence] = clock()

    def wait_for(self, seq: int, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        while seq not in self.at:
            if time.monotonic() > deadline:
                raise RuntimeError(f"record {seq} never arrived")
            time.sleep(0)
        return self.at[seq]


class NoSignals:
    """A signal source that costs nothing (no entry, no exit): the loop's own overhead."""

    warmup = 1
    describe: ClassVar[dict[str, Any]] = {"source": "none"}

    def compute(self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC") -> Any:
        from celeris.live.signals import SignalBatch

        n_sym = ohlcv.shape[2]
        return SignalBatch(np.zeros((k, n_sym), dtype=np.int64), np.ones((k, n_sym)))


#: a subscriber in its own process: arrival times (perf_counter_ns, CLOCK_MONOTONIC: the same
#: clock as the parent's) of every record, saved as [n, 2] int64 (sequence, time) at EOF
CHILD = """
import sys, time
import numpy as np
from celeris.serving.feed import SignalSubscriber
sub = SignalSubscriber(sys.argv[1], timeout_s=600)
print("ready", flush=True)
clock = time.perf_counter_ns
seqs, ats = [], []
for rec in sub:
    ats.append(clock())
    seqs.append(rec.sequence)
np.save(sys.argv[2], np.column_stack([np.asarray(seqs, np.int64), np.asarray(ats, np.int64)]))
"""


class ChildArrivals:
    """The same as :class:`Arrivals`, the subscriber in another process (no GIL shared with
    the loop); the times come back when the feed closes."""

    def __init__(self, sock: Path, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(sock), str(out)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the subscriber process did not start")
        self.at: dict[int, int] = {}

    def join(self, timeout: float) -> None:
        self.proc.wait(timeout)
        rows = np.load(self.out)
        self.at = dict(zip(rows[:, 0].tolist(), rows[:, 1].tolist(), strict=True))


def tiny_model(workdir: Path) -> Any:
    """A tiny cnn_lstm trained for a few steps on synthetic 1m bars; its Predictor (CPU)."""
    from celeris.data.synthetic import synthetic
    from celeris.models.catalogue import get_model
    from celeris.models.pipeline import DEFAULT_FEATURES, train_on_bars
    from celeris.models.predictor import Predictor

    L, H = 32, 4
    features = DEFAULT_FEATURES["cnn_lstm"]  # what `celeris train cnn_lstm` uses
    tiny = get_model("cnn_lstm").tiny_config(L, H, len(features))
    trained = train_on_bars(
        "cnn_lstm", synthetic(3_000, seed=7), workdir / "cnn_lstm", input_size=L, horizon=H,
        features=features,        model_options=tiny, max_steps=5, batch_size=32, precision="fp32", progress=False,
    )  # fmt: skip
    return Predictor.load(trained.directory, device="cpu")


def bench_latency(
    source_name: str,
    source: Any,
    n_symbols: int,
    steps: int,
    warmup: int,
    profile: bool,
    child: bool = False,
) -> None:
    from celeris.data.synthetic import synthetic
    from celeris.live.journal import Journal
    from celeris.live.loop import LiveLoop, settle
    from celeris.serving.feed import SignalPublisher

    history = max(1000, source.warmup + 1)
    n = history + warmup + steps
    frames = [synthetic(n, seed=i) for i in range(n_symbols)]
    times = frames[0].index.as_unit("ns").asi8
    ohlcv = np.stack([f[FIELDS].to_numpy(np.float64) for f in frames], axis=2)  # [T, 5, S]
    names = [f"C{i:03d}/USDT" for i in range(n_symbols)]
    with tempfile.TemporaryDirectory(prefix="celeris-lat-") as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite", names, {"bench": source_name})
        publisher = SignalPublisher(Path(tmp) / "feed.sock", first_sequence=1)
        arrivals: Any
        if child:  # the records are read after the run: steps are spaced to let it drain
            arrivals = ChildArrivals(Path(tmp) / "feed.sock", Path(tmp) / "arrivals.npy")
        else:
            arrivals = Arrivals(Path(tmp) / "feed.sock")
            arrivals.start()
        loop = LiveLoop(
            names, source, journal, options={"fees": 0.001}, publisher=publisher,
            history=history, publish="every-bar",
        )  # fmt: skip
        # a fresh live run: the back-filled history, journaled as warm-up (what run() does)
        journal.commit_warmup(times[:history], ohlcv[:history])
        loop.history.append(times[:history], ohlcv[:history])
        first: list[int] = []
        last: list[int] = []
        own: list[int] = []
        spans: list[tuple[int, int, int]] = []
        prof = cProfile.Profile() if profile else None
        busy = 0.0
        for i in range(warmup + steps):
            j = history + i
            measured = i >= warmup
            if prof is not None and measured:
                prof.enable()
            t0 = time.perf_counter_ns()
            report = loop.process(times[j : j + 1], ohlcv[j : j + 1], received_ns=t0)
            if prof is not None and measured:
                prof.disable()
            busy += (time.perf_counter_ns() - t0) / 1e9 if measured else 0.0
            block = report.signals
            if len(block) != n_symbols:
                raise RuntimeError(f"step {i}: {len(block)} records, expected {n_symbols}")
            if child:
                time.sleep(0.005)
            else:
                arrivals.wait_for(block.last_id)
            spans.append((t0, block.first_id, block.last_id))
            if i == warmup - 1:
                settle()  # what LiveLoop.run does once its set-up is over
            if measured:
                own.append(report.published_ns - report.received_ns)
            else:
                spans.pop()
        stats = publisher.stats()
        publisher.close()
        arrivals.join(60)
        journal.close()
    for t0, id_first, id_last in spans:
        first.append(arrivals.at[id_first] - t0)
        last.append(arrivals.at[id_last] - t0)

    def pct(xs: list[int]) -> str:
        p = np.percentile(np.asarray(xs) / 1e6, [50, 90, 99])
        return f"p50 {p[0]:.3f} / p90 {p[1]:.3f} / p99 {p[2]:.3f} ms"

    tag = " (under cProfile)" if prof else ""
    tag += ", subscriber in another process" if child else ", subscriber thread"
    print(f"latency{tag}, {source_name}: {n_symbols} symbols, {steps} steps after {warmup} warm-up"
          f", history {history}, every-bar ({stats['published']:,} records, dropped "
          f"{stats['dropped']})")  # fmt: skip
    print(f"  call -> first record at the subscriber: {pct(first)}")
    print(f"  call -> last ({n_symbols}th) record at the subscriber: {pct(last)}")
    print(f"  LiveLoop published_ns - received_ns: {pct(own)}")
    if prof is not None:
        print(top_functions(prof, busy))
        print("    cumulative:", {k: round(v, 3) for k, v in cumulative(prof, [
            "compute", "_gate", "_signal_block", "commit_step", "step", "orders_frame", "_send",
            "prepare", "_frame", "last_windows", "predict",
        ]).items()}, f"of {busy:.3f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", nargs="+", default=["crash", "window", "replay", "latency"],
        choices=["crash", "window", "replay", "latency"],
    )  # fmt: skip
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--crash-bars", type=int, default=800)
    parser.add_argument(
        "--window-kills", type=int, default=10,
        help="kills at a publish, between the step's journal commit and the send",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--replay-bars", type=int, default=1_000_000)
    parser.add_argument("--replay-symbols", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--latency-symbols", type=int, default=100)
    parser.add_argument("--latency-steps", type=int, default=1000)
    parser.add_argument("--latency-warmup", type=int, default=20)
    parser.add_argument("--no-model", action="store_true")
    parser.add_argument("--no-rule", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--child-subscriber", action="store_true",
        help="latency: also with the subscriber in another process (no GIL shared)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"machine: {machine()}; commit {commit}; no peer to compare with")
    if "crash" in args.only:
        bench_crash(args.kills, args.crash_bars, args.seed)
    if "window" in args.only:
        bench_crash(args.window_kills, args.crash_bars, args.seed, window=True)
    if "replay" in args.only:
        for n_sym in args.replay_symbols:
            bench_replay(args.replay_bars, n_sym, profile=False)
            if args.profile:
                bench_replay(args.replay_bars, n_sym, profile=True)
    if "latency" in args.only:
        from celeris.live.signals import ModelSignals, RuleSignals

        cases: list[tuple[str, Any]] = [
            ("no signal source (the loop's own cost)", NoSignals()),
            ("rule sma_cross 10/50", RuleSignals("sma_cross", {"fast": 10, "slow": 50})),
        ]
        with tempfile.TemporaryDirectory(prefix="celeris-model-") as tmp:
            if not args.no_model:
                predictor = tiny_model(Path(tmp))
                # as a replay computes them (every bar of the history), and as a live step can:
                # each feature over the bars its value needs (FeatureSpec.bars_settled)
                cases.append(("model cnn_lstm (tiny, CPU)", ModelSignals(predictor)))
                cases.append(("model cnn_lstm (tiny, CPU), bounded features",
                              ModelSignals(predictor, bounded=True)))  # fmt: skip
            if args.no_rule:
                cases = [c for c in cases if not c[0].startswith("rule")]
            for name, source in cases:
                bench_latency(name, source, args.latency_symbols, args.latency_steps,
                              args.latency_warmup, profile=False)  # fmt: skip
                if args.child_subscriber:
                    bench_latency(name, source, args.latency_symbols, args.latency_steps,
                                  args.latency_warmup, profile=False, child=True)  # fmt: skip
                if args.profile:
                    bench_latency(name, source, args.latency_symbols, max(20, args.latency_steps
                                  // 20), args.latency_warmup, profile=True)  # fmt: skip
        print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()

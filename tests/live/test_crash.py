"""Crash safety of ``celeris live``: ``kill -9`` at random moments and restart with the same
--state, a subscriber on the feed all along; nothing lost, nothing duplicated.

Real processes: each run of ``celeris live --replay`` is killed with SIGKILL (at a random bar,
a random moment inside a step, right after a signal reached the wire, or during start-up) and
restarted until the replay finishes. The journal must then hold exactly the signals and fills
of an uninterrupted run, every signal id must have reached the subscriber at least once, and a
record seen twice must be the same record (an idempotent republish after a restart).

The harness (:class:`CrashRun`) is also what ``benchmarks/bench_live.py`` runs with 50+ kills.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from celeris.errors import CelerisError, DataError
from celeris.live.journal import JournalReader
from celeris.serving.feed import SignalSubscriber

#: a journaled fill's fields, in the order the harness compares them
FILL_FIELDS = ("ts", "symbol", "side", "size", "price", "fees", "kind")

#: kill moments: at a random journaled bar (plus a random delay inside the step), right after a
#: signal reached the subscriber (before the next step marks it published), as the process
#: enters its n-th publish (after the step's journal commit, before the send), or a random
#: moment just after the restarted feed accepted its subscriber (resume, republish, first steps)
KILL_MODES = ("send", "bar", "record", "restart", "record")
#: ``sitecustomize`` of a child killed at its n-th publish (mode "send", see CrashRun._env)
KILL_AT_PUBLISH = """
import os, signal
from celeris.serving.feed import publisher as _publisher

_at = int(os.environ["CELERIS_TEST_KILL_AT_PUBLISH"])
_calls = [0]


def _wrap(method):
    def publish(self, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == _at:  # journaled, not sent
            os.kill(os.getpid(), signal.SIGKILL)
        return method(self, *args, **kwargs)

    return publish


for _name in ("publish", "publish_many"):  # one record, or a step's records at once
    if hasattr(_publisher.SignalPublisher, _name):
        setattr(_publisher.SignalPublisher, _name, _wrap(getattr(_publisher.SignalPublisher, _name)))
"""
WAIT_S = 60.0  # the longest any wait of the harness lasts before it fails


def live_command(data: Path, state: Path, sock: Path, *extra: str) -> list[str]:
    """``celeris live --replay`` of the brief (sma_cross 5/20, one bar per step, paced)."""
    return [
        sys.executable, "-m", "celeris.cli.main", "live",
        "--replay", str(data), "--symbols", "SPX",
        "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20",
        "--fees", "0.001", "--state", str(state), "--socket", str(sock),
        "--block", "1", "--replay-pace", "0.002", "--publish", "changes", *extra,
    ]  # fmt: skip


def _journal(state: Path) -> Path:
    return state / "journal.sqlite"


def read_journal(state: Path) -> dict[str, Any]:
    """The journal's signals, fills, last bar and publication marks (read-only)."""
    empty: dict[str, Any] = {"signals": [], "fills": [], "last_ts": None, "unpublished": []}
    journal = _reader(_journal(state))
    if journal is None:
        return empty
    with journal:
        block = journal.signal_block()
        signals = [(r.id, r.ts, r.symbol, r.signal, r.confidence) for r in block]
        first, rec = journal.fill_array()
        fill_rows = [(first + j, *row) for j, row in enumerate(rec[list(FILL_FIELDS)].tolist())]
        last = journal.last_ts()
        unpublished = journal.unpublished().ids.tolist()
    return {"signals": signals, "fills": fill_rows, "last_ts": last, "unpublished": unpublished}


def _reader(path: Path) -> JournalReader | None:
    """The journal read-only; None before the run has created it."""
    if not path.exists():
        return None
    try:
        return JournalReader.open(path, timeout_s=WAIT_S)
    except DataError as exc:
        if "no such table" in str(exc) or "is empty" in str(exc):  # being created
            return None
        raise


def _last_ts(path: Path) -> int | None:
    journal = _reader(path)
    if journal is None:
        return None
    with journal:
        return journal.last_ts()


@dataclass
class Connection:
    """One subscription to one process's feed."""

    hello: int  # the publisher's next sequence when this subscriber joined
    records: list[tuple[Any, ...]] = field(default_factory=list)  # (id, symbol, signal, conf, ...)
    gaps: int = 0


class WireLog(threading.Thread):
    """A subscriber to one process: connects as soon as its socket accepts, reads to EOF.

    With ``kill_at_id`` it kills the process (SIGKILL) right after receiving a record with an
    id at or above it: the record went out, the step that marks it published has not run.
    """

    def __init__(self, sock: Path, proc: subprocess.Popen[bytes], kill_at_id: int | None) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.proc = proc
        self.kill_at_id = kill_at_id
        self.connection: Connection | None = None
        self.connected = threading.Event()
        self.killed_by_record = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the harness
            self.error = exc
        finally:
            self.connected.set()

    def _run(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.proc.poll() is not None:
                return  # died (or finished) before its feed accepted a subscriber
            try:
                sub = SignalSubscriber(self.sock, timeout_s=WAIT_S, connect_timeout_s=1.0)
                break
            except CelerisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        with sub:
            conn = Connection(sub.next_sequence)
            self.connection = conn
            self.connected.set()
            for rec in sub:
                conn.records.append(
                    (rec.sequence, rec.symbol_id, rec.signal, rec.confidence, rec.forecasts,
                     rec.model_version)
                )  # fmt: skip
                if self.kill_at_id is not None and rec.sequence >= self.kill_at_id:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
                    self.killed_by_record = True
                    self.kill_at_id = None
            conn.gaps = sub.gaps


@dataclass
class CrashReport:
    """What an interrupted run did and what its checks found."""

    kills: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    starts: int = 0
    signals: int = 0
    fills: int = 0
    received: int = 0
    lost: list[int] = field(default_factory=list)
    repeats: int = 0  # records received again with the same id and content (idempotent)
    conflicting: list[int] = field(default_factory=list)  # ids received with two contents
    wire_mismatch: list[int] = field(default_factory=list)  # wire content != journal row
    duplicated_fills: int = 0
    journaled_unsent: int = 0  # kill after a step committed and before its signals went out
    sent_unmarked: int = 0  # kill after signals went out and before a step marked them
    late_subscribers: int = 0  # joined after the restart's first publish (its republish)
    hellos: list[tuple[int, int]] = field(default_factory=list)  # (first unpublished, hello)
    seconds: float = 0.0


class CrashRun:
    """``celeris live --replay`` killed ``kills`` times at seeded random moments and restarted
    with the same --state until the replay finishes, a :class:`WireLog` on every run."""

    def __init__(
        self,
        data: Path,
        workdir: Path,
        *,
        kills: int,
        seed: int,
        expected_signals: int,
        modes: Sequence[str] = KILL_MODES,
    ) -> None:
        self.data = data
        self.state = workdir / "crashed"
        self.sock = workdir / "crashed.sock"
        self.workdir = workdir
        self.kills = kills
        self.expected_signals = expected_signals
        self.modes = tuple(modes)
        self.rng = random.Random(seed)
        bars = pd.read_csv(data, index_col=0, parse_dates=True)
        self.times = pd.DatetimeIndex(bars.index).as_unit("ns").asi8
        self.report = CrashReport()
        self.connections: list[Connection] = []

    def _progress(self) -> int:
        last = _last_ts(_journal(self.state))
        return 0 if last is None else int(np.searchsorted(self.times, last, side="right"))

    def _plan(self, i: int, done: int, known_ids: int) -> tuple[str, float]:
        """Kill ``i``'s mode and target (a bar count, a signal id or a delay in seconds); a
        target past the end of the replay falls back to a kill just after the restart."""
        mode = self.modes[i % len(self.modes)]
        if mode == "send" and known_ids < self.expected_signals - 3:
            return mode, float(self.rng.randint(1, 3))  # the n-th publish of the process
        left = len(self.times) - done
        if mode == "bar" and left > 10:  # not at the very end: the run may finish first
            span = max(1, min(left - 10, 2 * left // (self.kills - i + 1)))
            return mode, float(done + self.rng.randint(1, span))
        # not the last signal: the replay may end before the kill lands
        if mode == "record" and known_ids < self.expected_signals - 1:
            return mode, float(min(self.expected_signals - 1, known_ids + self.rng.randint(1, 3)))
        return "restart", self.rng.uniform(0.0, 0.03)  # seconds after the subscriber joined

    def run(self) -> CrashReport:
        t0 = time.monotonic()
        log = open(self.workdir / "crashed.log", "ab")  # noqa: SIM115
        try:
            i = 0
            while True:
                before = read_journal(self.state)
                killing = i < self.kills
                mode, target = self._plan(i, self._progress(), len(before["signals"]))
                kill_at_id = int(target) if killing and mode == "record" else None
                proc = subprocess.Popen(
                    live_command(self.data, self.state, self.sock), stdout=log, stderr=log,
                    env=self._env(mode if killing else "", target),
                )  # fmt: skip
                self.report.starts += 1
                wire = WireLog(self.sock, proc, kill_at_id)
                wire.start()
                if killing and mode in ("bar", "restart"):
                    self._kill_when(proc, wire, mode, target)
                rc = proc.wait(timeout=WAIT_S * 5)
                wire.join(WAIT_S)
                if wire.error is not None:
                    raise AssertionError(f"the subscriber failed: {wire.error!r}")
                if wire.connection is not None:
                    self.connections.append(wire.connection)
                    first = before["unpublished"][0] if before["unpublished"] else None
                    first = first or len(before["signals"]) + 1
                    self.report.hellos.append((first, wire.connection.hello))
                    if wire.connection.hello > first:
                        self.report.late_subscribers += 1
                if rc == 0:
                    break  # the replay finished (a planned kill may have come too late)
                if rc != -signal.SIGKILL:
                    log.flush()
                    tail = Path(log.name).read_text(errors="replace")[-2000:]
                    raise AssertionError(f"celeris live exited {rc}:\n{tail}")
                self.report.kills += 1
                self.report.modes[mode] = self.report.modes.get(mode, 0) + 1
                after = read_journal(self.state)
                now_received = {r[0] for c in self.connections for r in c.records}
                for sid in after["unpublished"]:  # what the next start republishes
                    if sid in now_received:
                        self.report.sent_unmarked += 1
                    else:
                        self.report.journaled_unsent += 1
                i += 1
        finally:
            log.close()
        self.report.seconds = time.monotonic() - t0
        return self.report

    def _env(self, mode: str, target: float) -> dict[str, str] | None:
        """``send``: the process kills itself (SIGKILL) as it enters its ``target``-th
        ``SignalPublisher.publish`` (or ``publish_many``), after the step's journal commit: the
        crash between the commit and the publish. Done by a ``sitecustomize`` module on the child's PYTHONPATH
        (:data:`KILL_AT_PUBLISH`), nothing in Celeris."""
        if mode != "send":
            return None
        hook = self.workdir / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(KILL_AT_PUBLISH)
        path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "CELERIS_TEST_KILL_AT_PUBLISH": str(int(target))}

    def _kill_when(
        self, proc: subprocess.Popen[bytes], wire: WireLog, mode: str, target: float
    ) -> None:
        deadline = time.monotonic() + WAIT_S * 5
        if mode == "restart":
            if not wire.connected.wait(WAIT_S * 5):
                raise AssertionError("the restarted feed never accepted its subscriber")
            time.sleep(target)
        else:
            while proc.poll() is None and self._progress() < target:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the journal did not reach bar {target:.0f}")
                time.sleep(0.002)
            # a random moment inside the step after that bar (a paced step is ~2-10 ms)
            time.sleep(self.rng.uniform(0.0, 0.006))
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def run_reference(data: Path, workdir: Path) -> dict[str, Any]:
    """The same command, uninterrupted, into its own --state; its journal.

    Run in this process through the CLI (typer's runner): the same code path as the killed
    processes, without one more interpreter start (~3-5 s of imports on a loaded machine).
    """
    from typer.testing import CliRunner

    from celeris.cli.main import app

    state = workdir / "reference"
    args = live_command(data, state, workdir / "reference.sock")[3:]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, f"{done.output}{done.exception!r}"
    return read_journal(state)


def check(crashed: CrashRun, reference: dict[str, Any]) -> CrashReport:
    """Compare the interrupted run with the reference; fill in the report's counts."""
    report = crashed.report
    journal = read_journal(crashed.state)
    report.signals = len(journal["signals"])
    report.fills = len(journal["fills"])
    seen: dict[int, tuple[Any, ...]] = {}
    for conn in crashed.connections:
        for rec in conn.records:
            report.received += 1
            if rec[0] in seen:
                if seen[rec[0]] == rec:
                    report.repeats += 1
                else:
                    report.conflicting.append(rec[0])
            seen[rec[0]] = rec
    ids = [s[0] for s in journal["signals"]]
    report.lost = sorted(set(ids) - set(seen))
    rows = {s[0]: s for s in journal["signals"]}
    for sid, rec in seen.items():
        row = rows.get(sid)
        # wire: (id, symbol, signal, confidence f32, ...); journal: (id, ts, symbol, signal, conf)
        if (
            row is None
            or (rec[1], rec[2]) != (row[2], row[3])
            or not np.isclose(rec[3], row[4], rtol=1e-6)
        ):
            report.wire_mismatch.append(sid)
    fill_keys = [f[1:6] for f in journal["fills"]]
    report.duplicated_fills = len(fill_keys) - len(set(fill_keys))
    return report


def crash_and_check(
    data: Path, workdir: Path, *, kills: int, seed: int, modes: Sequence[str] = KILL_MODES
) -> tuple[CrashReport, dict[str, Any], dict[str, Any]]:
    """Reference run, interrupted run, checks: (report, reference journal, crashed journal)."""
    reference = run_reference(data, workdir)
    crashed = CrashRun(
        data, workdir, kills=kills, seed=seed, expected_signals=len(reference["signals"]),
        modes=modes,
    )  # fmt: skip
    crashed.run()
    report = check(crashed, reference)
    return report, reference, read_journal(crashed.state)


def write_slice(path: Path, n_bars: int, source: str = "sample:sp500") -> Path:
    """The first ``n_bars`` bars of ``source`` as a CSV file (what --replay FILE reads)."""
    from celeris.data import load

    load(source).iloc[:n_bars].to_csv(path)
    return path


# ---- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crashed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CrashReport, dict[str, Any], dict[str, Any]]:
    # Short socket paths (at most 107 bytes): a fresh directory under /tmp.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="celeris-crash-") as tmp:
        work = Path(tmp)
        data = write_slice(work / "spx.csv", 100)
        yield crash_and_check(data, work, kills=5, seed=13)


def _signal_rows(journal: dict[str, Any]) -> list[Sequence[Any]]:
    return [s[:4] for s in journal["signals"]]  # id, time, symbol, signal


def test_crash_kill9_restarts_journal_equals_uninterrupted_run(crashed) -> None:
    report, reference, journal = crashed
    assert report.kills == 5, report
    assert reference["signals"], "the reference run made no signal: the slice is too short"
    assert reference["fills"], "the reference run made no fill: the slice is too short"
    assert _signal_rows(journal) == _signal_rows(reference)
    # seq, time, side, size, price, fees
    assert [f[:2] + f[3:7] for f in journal["fills"]] == [
        f[:2] + f[3:7] for f in reference["fills"]
    ]
    assert journal["last_ts"] == reference["last_ts"]


def test_crash_kill9_restarts_every_signal_on_the_wire_once_or_repeated_same(crashed) -> None:
    report, _, _ = crashed
    assert report.lost == [], report
    assert report.conflicting == [], report
    assert report.wire_mismatch == [], report
    assert report.received == report.signals + report.repeats, report
    # the republish path ran: a kill left journaled signals unmarked (the "record" kills land
    # right after a signal went out, before the next step marks it), and they came again
    assert report.sent_unmarked + report.journaled_unsent >= 1, report
    assert report.repeats >= 1, report
    # the "send" kill (at the first publishes of the first run, after their commit): signals
    # journaled and never sent, then sent by the restart
    assert report.modes.get("send") == 1, report
    assert report.journaled_unsent >= 1, report


def test_crash_kill9_restarts_no_fill_duplicated(crashed) -> None:
    report, _, journal = crashed
    assert report.duplicated_fills == 0
    assert [f[0] for f in journal["fills"]] == list(range(1, len(journal["fills"]) + 1))


def test_crash_restart_publisher_continues_at_first_unpublished_id(crashed) -> None:
    report, _, _ = crashed
    # every restarted feed was numbered from the journal's first unpublished id, and the
    # subscriber (polling every 1 ms) joined before its first publish (the republish)
    assert len(report.hellos) >= report.starts - report.modes.get("send", 0) - 1, report
    assert all(hello == first for first, hello in report.hellos), report.hellos


# ---- a consumer away across a restart still gets what nobody received ----------------------------


def test_crash_restart_consumer_back_after_republish_receives_unsent_signal(tmp_path) -> None:
    import tempfile

    from celeris.data import load
    from celeris.live.journal import Journal
    from celeris.live.loop import LiveLoop
    from celeris.live.signals import RuleSignals
    from celeris.serving.feed import SignalPublisher

    bars = load("sample:sp500").iloc[:80]
    times = bars.index.as_unit("ns").asi8
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)[:, :, None]
    config = {"bench": "gap"}
    with tempfile.TemporaryDirectory(prefix="celeris-gap-") as tmp:
        path, sock = tmp_path / "journal.sqlite", Path(tmp) / "feed.sock"

        def start() -> tuple[Journal, SignalPublisher, LiveLoop]:
            journal = Journal(path, ["SPX"], config)
            publisher = SignalPublisher(
                sock, first_sequence=journal.first_unpublished(), retain=1000
            )  # what celeris live --socket does
            loop = LiveLoop(
                ["SPX"], RuleSignals("sma_cross", {"fast": 5, "slow": 20}), journal,
                options={"fees": 0.001}, publisher=publisher,
            )  # fmt: skip
            return journal, publisher, loop

        journal, publisher, loop = start()
        i = 0
        while not loop.process(times[i : i + 1], ohlcv[i : i + 1]).signals:
            i += 1
        # the process dies right after its first signal went out, while the consumer (the
        # trading engine) is down as well: nobody received signal 1
        publisher.close(linger_s=0)
        journal.close()
        journal, publisher, loop = start()
        loop.resume()  # republishes signal 1: still nobody there
        with SignalSubscriber(sock, timeout_s=5.0) as consumer:  # the engine is back
            loop.process(times[i + 1 : i + 2], ohlcv[i + 1 : i + 2])
            publisher.close()
            received = [rec.sequence for rec in consumer]
        marked = journal.signals().set_index("id")["published"]
        journal.close()
    assert marked.loc[1] == 1  # the journal says signal 1 went out...
    assert 1 in received  # ...and the consumer got it, though it was away when it was sent


# ---- the checker itself ------------------------------------------------------------------------


def test_crash_check_counts_lost_conflicting_repeated_and_duplicated(tmp_path, monkeypatch) -> None:
    """check() finds each defect it is there to find (a checker that cannot fail proves nothing)."""
    run = CrashRun.__new__(CrashRun)
    run.state = tmp_path
    run.report = CrashReport()
    journal = {
        "signals": [(1, 10, 0, 1, 1.0), (2, 20, 0, 0, 1.0), (3, 30, 0, 1, 1.0)],
        "fills": [(1, 11, 0, 0, 5.0, 100.0, 0.1, 0), (2, 11, 0, 0, 5.0, 100.0, 0.1, 0)],
        "last_ts": 30,
        "unpublished": [],
    }
    monkeypatch.setattr(sys.modules[__name__], "read_journal", lambda state: journal)
    run.connections = [
        Connection(1, [(1, 0, 1, 1.0, (), 0), (2, 0, 0, 1.0, (), 0)]),
        # 1 again, identical: an idempotent repeat; 2 again with another signal: a conflict
        Connection(1, [(1, 0, 1, 1.0, (), 0), (2, 0, 1, 1.0, (), 0)]),
    ]
    report = check(run, journal)
    assert report.lost == [3]
    assert report.repeats == 1
    assert report.conflicting == [2]
    assert report.wire_mismatch == [2]  # the last content seen for 2 is not the journal's
    assert report.duplicated_fills == 1
    assert report.received == 4

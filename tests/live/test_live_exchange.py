"""The live loop against a local exchange through ccxt, as against the real one.

In process: the fake Binance (celeris.testing.fake_exchange) closes bars; MarketStream brings
them over its websocket; the loop trades them in the paper account; its orders and equity are
``from_signals``' on the same bars. As a process: ``celeris live --exchange-url`` against the
fake, with the kill switch by SIGUSR1, the metrics endpoint, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from celeris.backtest import from_signals
from celeris.backtest.strategies import get_strategy
from celeris.live.journal import Journal
from celeris.live.loop import LiveLoop
from celeris.live.market import MarketStream
from celeris.live.signals import RuleSignals
from celeris.serving.feed import SignalPublisher, SignalSubscriber
from celeris.testing.fake_exchange import FakeExchange
from tests.live.conftest import SYMBOLS, run, wait_until

PARAMS = {"fast": 3, "slow": 8}
CELERIS = Path(sys.executable).with_name("celeris")
WARMUP = 30  # bars closed before the run: the strategy's history, never traded
LIVE = 60  # bars closed while the loop runs


def test_live_loop_through_ccxt_trades_the_exchange_bars_as_from_signals(tmp_path):
    opts = {"fees": 0.001, "sl_stop": 0.02}
    with FakeExchange(SYMBOLS, "1m", history=WARMUP, n_bars=WARMUP + LIVE + 5) as fake:
        journal = Journal(tmp_path / "j.sqlite", list(SYMBOLS), {"options": opts})
        sock = tmp_path / "feed.sock"
        with SignalPublisher(sock, first_sequence=journal.first_unpublished()) as pub, \
                SignalSubscriber(sock, timeout_s=10.0) as sub:  # fmt: skip
            loop = LiveLoop(list(SYMBOLS), RuleSignals("sma_cross", PARAMS), journal,
                            options=opts, publisher=pub, history=200)  # fmt: skip
            loop.resume()

            async def scenario() -> None:
                stream = MarketStream("binance", list(SYMBOLS), "1m", exchange_url=fake.url,
                                      history=WARMUP)  # fmt: skip
                stop = asyncio.Event()
                task = asyncio.create_task(loop.run(stream, stop=stop, idle_timeout_s=0.05))
                await wait_until(
                    "the subscriptions", lambda: all(fake.subscribers(s) for s in SYMBOLS)
                )
                for _ in range(LIVE // 10):
                    await fake.advance_async(10)
                    await asyncio.sleep(0.01)
                last = int(fake.bars(SYMBOLS[0]).index[-1].value)
                await wait_until(
                    "the last bar journaled",
                    lambda: journal.last_ts() == last or task.done(),
                    timeout_s=60,
                )
                if task.done():  # the loop stopped by itself: its error is the test's
                    task.result()
                    pytest.fail("the live loop returned before the last bar")
                stop.set()
                await task
                await stream.close()

            run(scenario(), timeout_s=150)
            signals = journal.signals()
            received = [next(sub) for _ in range(len(signals))]
    assert [r.sequence for r in received] == signals["id"].tolist()
    # The account traded exactly the live bars, with signals computed on warm-up + live bars.
    strat = get_strategy("sma_cross")
    book = loop.account.book()
    for a, sym in enumerate(SYMBOLS):
        bars = fake.bars(sym)
        e, x = strat.signals(bars, PARAMS)
        live = bars.iloc[WARMUP:]
        ref = from_signals(live, e.iloc[WARMUP:], x.iloc[WARMUP:], **opts)
        assert np.array_equal(book.equity.iloc[:, a].to_numpy(), ref.equity.iloc[:, 0].to_numpy())
        mine = book.orders[book.orders["asset"] == sym]
        assert (mine["price"].to_numpy() == ref.orders["price"].to_numpy()).all()
    events = journal.events()
    assert "filled_bars" not in set(events["kind"])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_celeris_live_process_kill_switch_by_signal_metrics_and_clean_stop(tmp_path):
    with FakeExchange(SYMBOLS, "1m", history=WARMUP, n_bars=WARMUP + 400) as fake:
        fake.pace(20.0)
        env = dict(os.environ, CELERIS_ADMIN_TOKEN="t0ken")
        cmd = [str(CELERIS), "live", "--exchange", "binance",
               "--symbols", ",".join(SYMBOLS), "--timeframe", "1m", "--strategy", "sma_cross",
               "--param", "fast=3", "--param", "slow=8", "--fees", "0.001",
               "--exchange-url", fake.url, "--state", str(tmp_path / "state"),
               "--metrics-port", "0", "--metrics-host", "0.0.0.0", "--history", "100"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        try:
            port = None
            deadline = time.monotonic() + 60
            for line in proc.stderr:  # type: ignore[union-attr]
                if "metrics and admin on http://0.0.0.0:" in line:  # every address: a scraper
                    port = int(line.rsplit(":", 1)[1])
                    break
                if time.monotonic() > deadline:
                    break
            assert port is not None, "the process never reported its metrics port"
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while _bars(_get(f"{base}/metrics")[1]) < 3:
                assert time.monotonic() < deadline, "fewer than 3 bars processed in 30 s"
                time.sleep(0.1)
            assert _get(f"{base}/readyz")[0] == 200
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while "celeris_live_kill_switch 1.0" not in _get(f"{base}/metrics")[1]:
                assert time.monotonic() < deadline, "SIGUSR1 did not engage the kill switch"
                time.sleep(0.05)
            status, body = _get(f"{base}/readyz")
            assert status == 503 and "SIGUSR1" in body
            text = _get(f"{base}/metrics")[1]
            for name in ("celeris_live_signal_latency_seconds_bucket", "celeris_live_bar_lag_seconds",
                         "celeris_live_stream_reconnects_total", "celeris_live_equity"):  # fmt: skip
                assert name in text, name
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "bars processed" in out
    journal = Journal(tmp_path / "state" / "journal.sqlite", list(SYMBOLS), _config_of(tmp_path))
    assert journal.events()["kind"].tolist()[-1] == "kill"
    assert journal.last_ts() is not None


def _bars(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("celeris_live_bars_total "):
            return float(line.split()[1])
    return 0.0


def _config_of(tmp_path) -> dict:
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return {k: json.loads(v) for k, v in rows.items() if k not in ("format", "symbols")}

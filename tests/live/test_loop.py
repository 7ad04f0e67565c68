"""The live loop end to end: replayed history equals from_signals, resume, republish, journal."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.backtest import from_signals
from celeris.backtest.strategies import get_strategy
from celeris.cli.main import app
from celeris.data import load
from celeris.errors import ConfigError, DataError
from celeris.live.journal import FILL_DTYPE, Journal
from celeris.live.loop import LiveLoop
from celeris.live.replay import ReplaySource
from celeris.live.signals import RuleSignals
from celeris.serving.feed import SignalPublisher, SignalSubscriber
from tests.backtest.test_parity_vectorbt import OPTION_CASES

PARAMS = {"fast": 5, "slow": 20}


@pytest.fixture(scope="module")
def spx() -> pd.DataFrame:
    return load("sample:sp500").iloc[:1200]


def _loop(tmp_path, opts, symbols=("SPX",), name="j", **kw) -> LiveLoop:
    source = RuleSignals("sma_cross", PARAMS)
    journal = Journal(tmp_path / f"{name}.sqlite", list(symbols), {"options": opts})
    loop = LiveLoop(list(symbols), source, journal, options=opts, **kw)
    loop.resume()
    return loop


def _replay(loop: LiveLoop, frames: dict, block: int) -> int:
    return asyncio.run(loop.run(ReplaySource(frames, block=block), until_exhausted=True))


def _reference(bars: pd.DataFrame, opts: dict):
    e, x = get_strategy("sma_cross").signals(bars, PARAMS)
    return from_signals(bars, e, x, **opts)


def _same_run(book, ref) -> None:
    a, b = book.equity.iloc[:, 0].to_numpy(), ref.equity.iloc[:, 0].to_numpy()
    assert np.array_equal(a, b)
    for col in ("time", "side", "size", "price", "fees"):
        assert (book.orders[col].to_numpy() == ref.orders[col].to_numpy()).all(), col
    for col in ("size", "entry_price", "exit_price", "pnl"):
        assert (book.trades[col].to_numpy() == ref.trades[col].to_numpy()).all(), col


@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
def test_replay_through_the_loop_equals_from_signals_on_every_parity_option_set(
    tmp_path, spx, case
):
    opts = dict(OPTION_CASES[case])
    loop = _loop(tmp_path, opts)
    assert _replay(loop, {"SPX": spx}, block=[1000, 97, 333][case % 3]) == len(spx)
    book = loop.account.book()
    assert len(book.orders) > 0
    _same_run(book, _reference(spx, opts))
    # what the journal recorded is what the account did
    fills = loop.journal.fills()
    assert (fills["size"].to_numpy() == book.orders["size"].to_numpy()).all()


def test_replay_close_execution_and_cash_sharing_equal_from_signals(tmp_path, spx):
    nasdaq = load("sample:nasdaq")
    common = spx.index.intersection(nasdaq.index)
    frames = {"SPX": spx.loc[common], "NDX": nasdaq.loc[common]}
    opts = {"fees": 0.001, "cash_sharing": True, "size": 0.5, "size_type": "percent",
            "execution": "close"}  # fmt: skip
    loop = _loop(tmp_path, opts, symbols=list(frames))
    _replay(loop, frames, block=250)
    strat = get_strategy("sma_cross")
    sig = [strat.signals(f, PARAMS) for f in frames.values()]
    entries = pd.concat([s[0] for s in sig], axis=1, keys=list(frames))
    exits = pd.concat([s[1] for s in sig], axis=1, keys=list(frames))
    ref = from_signals(pd.concat(frames, axis=1), entries, exits, **opts)
    book = loop.account.book()
    assert np.array_equal(book.equity.to_numpy(), ref.equity.to_numpy())
    assert (book.orders["size"].to_numpy() == ref.orders["size"].to_numpy()).all()


def test_loop_resumed_midway_equals_an_uninterrupted_run(tmp_path, spx):
    opts = {"fees": 0.001, "sl_stop": 0.04}
    first = _loop(tmp_path, opts, name="resumed")
    _replay(first, {"SPX": spx.iloc[:700]}, block=64)
    first.journal.close()
    again = _loop(tmp_path, opts, name="resumed")
    assert again.account.n == 700
    _replay(again, {"SPX": spx}, block=64)  # the first 700 bars are skipped as journaled
    whole = _loop(tmp_path, opts, name="whole")
    _replay(whole, {"SPX": spx}, block=64)
    pd.testing.assert_frame_equal(again.journal.signals(), whole.journal.signals())
    pd.testing.assert_frame_equal(again.journal.fills(), whole.journal.fills())
    _same_run(again.account.book(), whole.account.book())


def test_signals_journaled_but_not_published_go_out_again_with_their_ids(tmp_path, spx):
    opts = {"fees": 0.001}
    loop = _loop(tmp_path, opts, name="pub")
    _replay(loop, {"SPX": spx.iloc[:400]}, block=50)
    sent = loop.journal.signals()
    assert len(sent) >= 3
    # the last step's signals are not yet marked published (the mark rides on the next commit)
    pending = sent[sent["published"] == 0]
    assert len(pending) > 0
    loop.journal.close()
    sock = tmp_path / "feed.sock"
    journal = Journal(tmp_path / "pub.sqlite", ["SPX"], {"options": opts})
    source = RuleSignals("sma_cross", PARAMS)
    with (
        SignalPublisher(sock, first_sequence=journal.first_unpublished()) as pub,
        SignalSubscriber(sock) as sub,
    ):
        LiveLoop(["SPX"], source, journal, options=opts, publisher=pub).resume()
        got = [next(sub) for _ in range(len(pending))]
    assert [r.sequence for r in got] == pending["id"].tolist()
    assert [r.signal for r in got] == pending["signal"].tolist()


def test_journal_of_another_run_is_refused_naming_the_setting(tmp_path):
    Journal(tmp_path / "j.sqlite", ["SPX"], {"options": {"fees": 0.001}}).close()
    with pytest.raises(ConfigError, match="options"):
        Journal(tmp_path / "j.sqlite", ["SPX"], {"options": {"fees": 0.002}})
    with pytest.raises(ConfigError, match="symbols"):
        Journal(tmp_path / "j.sqlite", ["NDX"], {"options": {"fees": 0.001}})


def test_resume_refuses_a_journal_whose_fills_the_account_does_not_reproduce(tmp_path, spx):
    opts = {"fees": 0.001}
    loop = _loop(tmp_path, opts, name="tampered")
    _replay(loop, {"SPX": spx.iloc[:400]}, block=100)
    loop.journal.close()
    with sqlite3.connect(tmp_path / "tampered.sqlite") as db:  # the first fill's size x2
        key, raw = db.execute(
            "SELECT first_ts, fills FROM steps WHERE n_fills > 0 ORDER BY first_ts LIMIT 1"
        ).fetchone()
        fills = np.frombuffer(raw, dtype=FILL_DTYPE).copy()
        fills["size"][0] *= 2
        db.execute("UPDATE steps SET fills = ? WHERE first_ts = ?", (fills.tobytes(), key))
    with pytest.raises(DataError, match="fills"):
        _loop(tmp_path, opts, name="tampered")


def test_a_step_before_the_last_journaled_bar_is_refused(tmp_path, spx):
    loop = _loop(tmp_path, {}, name="order")
    _replay(loop, {"SPX": spx.iloc[:100]}, block=100)
    block = loop.take({"SPX": spx.iloc[50:60]})
    assert block is not None
    with pytest.raises(DataError, match="not after the last journaled bar"):
        loop.process(*block)


def test_a_symbol_skipping_a_time_gets_a_flat_bar_counted(tmp_path, spx):
    nasdaq = load("sample:nasdaq").reindex(spx.index).ffill().bfill()
    frames = {"SPX": spx.iloc[:300], "NDX": nasdaq.iloc[:300].drop(spx.index[150])}
    loop = _loop(tmp_path, {}, symbols=list(frames), name="gap")
    _replay(loop, frames, block=1000)
    assert loop.filled_bars == 1
    assert loop.account.n == 300
    events = loop.journal.events()
    assert (events["kind"] == "filled_bars").sum() == 1


def test_cli_live_replay_reports_the_backtest_and_resumes(tmp_path, spx):
    path = tmp_path / "spx.csv"
    spx.to_csv(path)
    args = ["live", "--replay", str(path), "--symbols", "SPX", "--strategy", "sma_cross",
            "--param", "fast=5", "--param", "slow=20", "--fees", "0.001",
            "--state", str(tmp_path / "state"), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    ref = _reference(load(str(path)), {"fees": 0.001}).stats()
    assert out["bars"] == len(spx)
    assert out["stats"][0]["end_value"] == pytest.approx(
        float(ref["end_value"].iloc[0]), rel=0, abs=0
    )
    assert out["fills"] == len(_reference(load(str(path)), {"fees": 0.001}).orders)
    again = json.loads(CliRunner().invoke(app, args).stdout)
    assert again["bars"] == 0 and again["fills"] == out["fills"]


def test_cli_live_needs_one_signal_source(tmp_path):
    result = CliRunner().invoke(app, ["live", "--replay", "sample:sp500", "--state", str(tmp_path)])
    assert result.exit_code == 2
    assert "--strategy" in result.output


def test_a_step_longer_than_the_history_bound_sees_the_history_before_it(tmp_path, spx):
    # a restart after a long downtime processes the missed bars as one step
    loop = _loop(tmp_path, {"fees": 0.001}, name="long", history=40)
    _replay(loop, {"SPX": spx.iloc[:500]}, block=300)
    whole = _loop(tmp_path, {"fees": 0.001}, name="whole")
    _replay(whole, {"SPX": spx.iloc[:500]}, block=300)
    # sma_cross(5, 20) needs 21 bars: 40 bars of history before each step's first bar give the
    # whole-history signals here (SMA windows, no recursion)
    pd.testing.assert_frame_equal(loop.journal.signals(), whole.journal.signals())


def test_replay_source_after_the_journal_starts_at_the_next_bar(spx):
    last = int(spx.index[99].value)
    source = ReplaySource({"SPX": spx}, block=50, after=last, pace_s=0.5)
    source.pace_s = 0.0  # (what is skipped costs no pacing either way)
    first = asyncio.run(source.next_closed(0.1))["SPX"]
    assert first.index[0] == spx.index[100] and len(first) == 50


def test_cli_live_waits_for_the_feed_subscribers_it_was_told_to(tmp_path):
    args = ["live", "--replay", "sample:sp500", "--strategy", "sma_cross",
            "--state", str(tmp_path / "s"), "--socket", str(tmp_path / "f.sock"),
            "--wait-subscribers", "1", "--wait-timeout", "0.2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--wait-subscribers 1: 0 subscriber(s) connected" in result.output


def test_take_arrays_stacks_equal_bars_and_aligns_unequal_ones_like_frames(tmp_path, spx):
    from celeris.live.market import ClosedBars

    loop = _loop(tmp_path, {}, symbols=["A", "B"], name="arrays")
    ms = spx.index.as_unit("ns").asi8[:3] // 1_000_000
    values = spx[["open", "high", "low", "close", "volume"]].to_numpy()[:3]
    times, ohlcv = loop.take_arrays({"A": ClosedBars(ms, values), "B": ClosedBars(ms, values * 2)})
    assert (times == spx.index.as_unit("ns").asi8[:3]).all()
    assert (ohlcv[:, :, 1] == values * 2).all()
    # B lacks the middle bar: the frame path carries a flat bar, as for frames
    loop.history.append(times, ohlcv)
    ms2 = spx.index.as_unit("ns").asi8[3:6] // 1_000_000
    v2 = spx[["open", "high", "low", "close", "volume"]].to_numpy()[3:6]
    block = loop.take_arrays({"A": ClosedBars(ms2, v2), "B": ClosedBars(ms2[[0, 2]], v2[[0, 2]])})
    assert block is not None and len(block[0]) == 3
    assert block[1][1, 3, 1] == v2[0, 3] and block[1][1, 4, 1] == 0.0
    assert loop.filled_bars == 1


def test_run_puts_the_set_up_out_of_the_garbage_collectors_sight(tmp_path, spx):
    # A full collection over the imports' objects would stall a live step for milliseconds.
    gc.unfreeze()
    try:
        loop = _loop(tmp_path, {}, name="gc")
        _replay(loop, {"SPX": spx.iloc[:100]}, block=50)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_step_that_fails_before_the_account_moved_leaves_the_loop_as_it_was(tmp_path, spx):
    loop = _loop(tmp_path, {}, name="fail")
    bars = {"SPX": spx.iloc[:300]}
    whole = _loop(tmp_path, {}, name="whole")
    _replay(whole, bars, block=1)
    block = loop.take({"SPX": spx.iloc[:300]})
    times, ohlcv = block
    for i in range(150):
        loop.process(times[i : i + 1], ohlcv[i : i + 1])
    bad = ohlcv[150:151].copy()
    bad[0, 3, 0] = np.nan  # a close the account refuses
    with pytest.raises(DataError, match="missing or non-positive price"):
        loop.process(times[150:151], bad)
    for i in range(150, 300):  # the good bar after all: as if the bad one never came
        loop.process(times[i : i + 1], ohlcv[i : i + 1])
    pd.testing.assert_frame_equal(loop.journal.signals(), whole.journal.signals())
    pd.testing.assert_frame_equal(loop.journal.fills(), whole.journal.fills())


def test_a_step_that_fails_after_the_account_moved_stops_the_loop(tmp_path, spx, monkeypatch):
    loop = _loop(tmp_path, {}, name="broken")
    times, ohlcv = loop.take({"SPX": spx.iloc[:60]})
    loop.process(times[:30], ohlcv[:30])

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(loop.journal, "commit_step", disk_full)
    with pytest.raises(OSError, match="No space"):
        loop.process(times[30:31], ohlcv[30:31])
    monkeypatch.undo()
    with pytest.raises(DataError, match="ahead of its journal"):
        loop.process(times[31:32], ohlcv[31:32])
    again = _loop(tmp_path, {}, name="broken")  # a new loop resumes from the journal
    again.process(times[30:31], ohlcv[30:31])
    assert again.journal.last_ts() == times[30]

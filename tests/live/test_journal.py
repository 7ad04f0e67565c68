"""The live journal: one row per step, read back exactly; publication marks; read-only access."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from celeris.backtest import kernel as K
from celeris.errors import ConfigError, DataError
from celeris.live.journal import FORMAT, Journal, JournalReader, SignalBlock, SignalRow

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
MIN = 60_000_000_000


def _fills(n: int, bar: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rec = np.zeros((n, K.N_ORDER_FIELDS))
    rec[:, K.O_SIDE] = np.arange(n) % 2
    rec[:, K.O_SIZE] = 0.5 + np.arange(n)
    rec[:, K.O_PRICE] = 100.25 + np.arange(n)
    rec[:, K.O_FEES] = 0.01 * (1 + np.arange(n))
    rec[:, K.O_STOP] = np.arange(n) % 3
    times = np.full(n, bar * MIN, dtype=np.int64)
    return rec, times, np.arange(n, dtype=np.int64) % len(SYMBOLS)


def _block(journal: Journal, bar: int, n: int, horizon: int = 0) -> SignalBlock:
    first = journal.new_signal_ids(n)
    return SignalBlock(
        first,
        np.full(n, bar * MIN, dtype=np.int64),
        np.arange(n, dtype=np.int64) % len(SYMBOLS),
        np.array([1, -1, 0] * n, dtype=np.int64)[:n],
        np.linspace(0.1, 0.9, n),
        np.arange(n * horizon, dtype=np.float32).reshape(n, horizon) / 7,
        np.full(n, 3, dtype=np.int64),
    )


def _step(journal: Journal, bar: int, n_signals: int, n_fills: int, published: int,
          horizon: int = 0) -> SignalBlock:  # fmt: skip
    times = np.array([bar * MIN], dtype=np.int64)
    ohlcv = np.full((1, 5, len(SYMBOLS)), float(bar))
    block = _block(journal, bar, n_signals, horizon)
    journal.commit_step(
        times, ohlcv, np.ones((1, len(SYMBOLS)), np.int64), np.zeros((1, len(SYMBOLS))), block,
        *_fills(n_fills, bar), published_up_to=published,
    )  # fmt: skip
    return block


def test_journal_steps_read_back_exactly(tmp_path):
    with Journal(tmp_path / "j.sqlite", SYMBOLS, {"strategy": "x"}) as journal:
        a = _step(journal, 1, 3, 2, published=0, horizon=2)
        b = _step(journal, 2, 0, 1, published=a.last_id, horizon=2)
        c = _step(journal, 3, 2, 0, published=a.last_id, horizon=2)
        assert (journal.next_signal_id, journal.fill_count) == (6, 3)
    with JournalReader.open(tmp_path / "j.sqlite") as reader:
        assert reader.symbols == SYMBOLS
        assert reader.last_ts() == 3 * MIN
        assert reader.next_ids() == (6, 4)
        got = reader.signal_block()
        want = SignalBlock.concat([a, b, c], 1)
        assert list(got) == list(want)
        assert got.forecasts.dtype == np.float32 and got.forecasts.shape == (5, 2)
        assert list(reader.unpublished()) == list(c)  # the last mark is a's last id
        assert reader.signals()["published"].tolist() == [1, 1, 1, 0, 0]
        times, rest = reader.fill_records()
        assert times.tolist() == [MIN, MIN, 2 * MIN]
        assert rest[:, 2].tolist() == [0.5, 1.5, 0.5] and rest[:, 3].tolist() == [100.25, 101.25,
                                                                                  100.25]  # fmt: skip
        fills = reader.fills()
        assert fills["seq"].tolist() == [1, 2, 3]
        assert fills["fees"].tolist() == [0.01, 0.02, 0.01]
        assert len(reader.history()) == 3


def test_journal_reopened_continues_the_ids_and_marks(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path, SYMBOLS, {}) as journal:
        _step(journal, 1, 3, 1, published=0)
        _step(journal, 2, 2, 0, published=3)
    with Journal(path, SYMBOLS, {}) as journal:
        assert journal.next_signal_id == 6 and journal.fill_count == 1
        assert journal.first_unpublished() == 4
        assert journal.unpublished().ids.tolist() == [4, 5]
        with pytest.raises(DataError, match="already holds part of this step"):
            _step(journal, 2, 1, 0, published=3)


def test_journal_reader_sees_what_another_connection_committed(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path, SYMBOLS, {}) as journal:
        reader = JournalReader.open(path)
        assert reader.last_ts() is None and len(reader.signal_block()) == 0
        _step(journal, 1, 2, 0, published=0)
        assert reader.last_ts() == MIN and reader.signal_block().ids.tolist() == [1, 2]
        reader.close()


def test_journal_of_another_format_is_refused_naming_it(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps(FORMAT - 1),))
        db.execute("INSERT INTO meta VALUES ('symbols', ?)", (json.dumps(list(SYMBOLS)),))
    with pytest.raises(DataError, match=f"format {FORMAT - 1}"):
        JournalReader.open(path)
    with pytest.raises(ConfigError, match=f"format={FORMAT - 1}"):
        Journal(path, SYMBOLS, {})


def test_journal_reader_on_a_missing_file_says_so(tmp_path):
    with pytest.raises(DataError, match="no live journal"):
        JournalReader.open(tmp_path / "none.sqlite")


def test_signal_block_after_concat_and_rows():
    block = SignalBlock(
        10, np.array([5, 5, 6]), np.array([0, 1, 0]), np.array([1, 0, -1]),
        np.array([1.0, 0.5, 0.25]), np.zeros((3, 0), np.float32), np.zeros(3, np.int64),
    )  # fmt: skip
    assert block.after(10).ids.tolist() == [11, 12]
    assert len(block.after(12)) == 0 and block.after(12).first_id == 13
    assert block.after(3).ids.tolist() == [10, 11, 12]
    assert list(block)[2] == SignalRow(12, 6, 0, -1, 0.25, (), 0)
    joined = SignalBlock.concat([block.after(10), SignalBlock.empty(13, 2)], 1)
    assert joined.ids.tolist() == [11, 12] and joined.forecasts.shape == (2, 2)
    assert SignalBlock.concat([], 7).first_id == 7

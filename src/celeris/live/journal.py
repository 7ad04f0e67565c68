"""The live loop's journal: every processed bar, signal and fill, in SQLite (WAL), before publishing.

One transaction per step writes the step's bars (one row per step: the bar times, OHLCV, signal
bits and funding as little-endian arrays), the signals the paper account received (the signal
bits, after the risk controls), the signal records and the fills it made, and marks the signals
of the steps before as published. Only then are the new signals sent on the feed. So after a crash (``kill
-9`` included):

* a step whose transaction did not commit left nothing: its bars are processed again (the market
  stream back-fills them, a replay reads them again) and give the same signals with the same ids;
* a step that committed but whose signals may not have gone out is republished with the same
  ids (signal id = feed sequence number, see :class:`~celeris.serving.feed.SignalPublisher`'s
  ``first_sequence``): a consumer that saw them drops the repeat by id;
* the paper account is rebuilt by stepping once over the journaled bars and signals, and the
  fills this gives must equal the journaled fills (else :class:`DataError`: the journal and the
  code disagree, e.g. after an upgrade that changed the accounting).

``synchronous="normal"`` (the default) survives a crash of the process: WAL commits are in the
operating system's page cache when ``commit`` returns. ``"full"`` also survives a power cut, at
the cost of an fsync per step on the bar-close-to-signal path.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.errors import ConfigError, DataError

__all__ = ["FORMAT", "WARMUP", "History", "Journal", "SignalRow"]

#: Layout version of the journal's tables.
FORMAT = 1
#: Signal bits of a bar journaled as history only (before a fresh run's first traded bar).
WARMUP = -1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps(
    first_ts INTEGER PRIMARY KEY, last_ts INTEGER NOT NULL, k INTEGER NOT NULL,
    times BLOB NOT NULL, ohlcv BLOB NOT NULL, flags BLOB NOT NULL, funding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signals(
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, symbol INTEGER NOT NULL,
    signal INTEGER NOT NULL, confidence REAL NOT NULL, forecasts BLOB NOT NULL,
    model_version INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0,
    UNIQUE (ts, symbol));
CREATE TABLE IF NOT EXISTS fills(
    seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, symbol INTEGER NOT NULL, side INTEGER NOT NULL,
    size REAL NOT NULL, price REAL NOT NULL, fees REAL NOT NULL, kind INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
"""
_SYNC = {"normal": "NORMAL", "full": "FULL"}


@dataclass(frozen=True)
class SignalRow:
    """One signal as journaled and published: id (= feed sequence), bar time, symbol index,
    direction (-1, 0, +1), confidence, forecasts (journaled as float32, the wire's precision),
    model version."""

    id: int
    ts: int
    symbol: int
    signal: int
    confidence: float = 1.0
    forecasts: tuple[float, ...] = ()
    model_version: int = 0


@dataclass(frozen=True)
class History:
    """The journaled bars of a run: times ``(n,)`` int64 ns, ``ohlcv`` ``(n, 5, n_symbols)``,
    the signal bits the account received ``(n, n_symbols)`` and the funding rates."""

    times: np.ndarray
    ohlcv: np.ndarray
    flags: np.ndarray
    funding: np.ndarray

    def __len__(self) -> int:
        return int(self.times.shape[0])


class Journal:
    """A live run's journal file (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The SQLite file (created with its directory).
    symbols : sequence of str
        The run's instruments, in column order (stored on creation, checked on resume).
    config : mapping
        The run's configuration (strategy or model, options...): stored on creation; resuming
        with a different one is refused naming the first key that differs.
    synchronous : {"normal", "full"}
        SQLite's durability level (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        symbols: Sequence[str],
        config: Mapping[str, Any],
        *,
        synchronous: str = "normal",
    ) -> None:
        if synchronous not in _SYNC:
            raise ConfigError(f"synchronous must be one of {list(_SYNC)}, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.symbols = tuple(symbols)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_SYNC[synchronous]}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot open the live journal {self.path}: {exc}") from None
        self._check_config(dict(config))
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM signals").fetchone()
        self._next_id = int(row[0]) + 1
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM fills").fetchone()
        self._n_fills = int(row[0])
        self._published_up_to = self._first_unpublished() - 1
        row = self._db.execute("SELECT last_ts FROM steps ORDER BY first_ts DESC LIMIT 1")
        last = row.fetchone()
        self._last_ts = None if last is None else int(last[0])

    def _check_config(self, config: dict[str, Any]) -> None:
        wanted = {"format": FORMAT, "symbols": list(self.symbols), **config}
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [(k, json.dumps(v, sort_keys=True, default=str)) for k, v in wanted.items()],
                )
            return
        for key, value in wanted.items():
            text = json.dumps(value, sort_keys=True, default=str)
            if stored.get(key) != text:
                raise ConfigError(
                    f"the journal {self.path} belongs to a run with {key}={stored.get(key)}, "
                    f"not {text}: resume with the same settings or start a new --state directory"
                )

    # ---- reading --------------------------------------------------------------------------
    def last_ts(self) -> int | None:
        """Open time (ns) of the last processed bar, None before the first step."""
        return self._last_ts

    @property
    def fill_count(self) -> int:
        """Fills journaled so far."""
        return self._n_fills

    @property
    def next_signal_id(self) -> int:
        return self._next_id

    def _first_unpublished(self) -> int:
        row = self._db.execute("SELECT MIN(id) FROM signals WHERE published = 0").fetchone()
        return int(row[0]) if row[0] is not None else self._next_id

    def first_unpublished(self) -> int:
        """Id of the first signal not yet marked published (the publisher's first sequence)."""
        return self._first_unpublished()

    def unpublished(self) -> list[SignalRow]:
        """Signals journaled but not marked published, in id order (republished on resume)."""
        rows = self._db.execute(
            "SELECT id, ts, symbol, signal, confidence, forecasts, model_version FROM signals "
            "WHERE published = 0 ORDER BY id"
        ).fetchall()
        return [
            SignalRow(
                int(r[0]),
                int(r[1]),
                int(r[2]),
                int(r[3]),
                float(r[4]),
                tuple(np.frombuffer(r[5], dtype="<f4").tolist()),
                int(r[6]),
            )
            for r in rows
        ]

    def history(self) -> History:
        """Every journaled bar of every symbol, in time order (to rebuild the paper account)."""
        n_sym = len(self.symbols)
        rows = self._db.execute(
            "SELECT k, times, ohlcv, flags, funding FROM steps ORDER BY first_ts"
        ).fetchall()
        if not rows:
            return History(
                np.empty(0, dtype=np.int64), np.empty((0, 5, n_sym)),
                np.empty((0, n_sym), dtype=np.int64), np.empty((0, n_sym)),
            )  # fmt: skip
        ks = [int(r[0]) for r in rows]

        def stacked(col: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
            parts = [
                np.frombuffer(r[col], dtype=dtype).reshape(k, *shape)
                for r, k in zip(rows, ks, strict=True)
            ]
            return np.ascontiguousarray(np.concatenate(parts))

        return History(
            times=stacked(1, "<i8", ()),
            ohlcv=stacked(2, "<f8", (5, n_sym)),
            flags=stacked(3, "<i8", (n_sym,)),
            funding=stacked(4, "<f8", (n_sym,)),
        )

    def fills(self) -> pd.DataFrame:
        """Every journaled fill: seq, bar time, symbol, side, size, price, fees, kind."""
        from celeris.backtest.book import ORDER_KINDS

        frame = pd.read_sql_query(
            "SELECT seq, ts, symbol, side, size, price, fees, kind FROM fills ORDER BY seq",
            self._db,
        )
        frame["time"] = pd.to_datetime(frame.pop("ts"), utc=True)
        frame["symbol"] = [self.symbols[i] for i in frame["symbol"]]
        frame["side"] = np.where(frame["side"] == K.BUY, "buy", "sell")
        frame["kind"] = [ORDER_KINDS[int(k)] for k in frame["kind"]]
        return frame[["seq", "time", "symbol", "side", "size", "price", "fees", "kind"]]

    def fill_records(self) -> tuple[np.ndarray, np.ndarray]:
        """The journaled fills: bar times ``(n,)`` int64 ns, and ``(n, 4)`` float64 symbol,
        side, size, price (compared exactly with the account's on resume)."""
        rows = self._db.execute("SELECT ts, symbol, side, size, price FROM fills ORDER BY seq")
        got = rows.fetchall()
        times = np.array([r[0] for r in got], dtype=np.int64)
        return times, np.array([r[1:] for r in got], dtype=np.float64).reshape(-1, 4)

    def signals(self) -> pd.DataFrame:
        """Every journaled signal: id, bar time, symbol, signal, confidence, published."""
        frame = pd.read_sql_query(
            "SELECT id, ts, symbol, signal, confidence, published FROM signals ORDER BY id",
            self._db,
        )
        frame["time"] = pd.to_datetime(frame.pop("ts"), utc=True)
        frame["symbol"] = [self.symbols[i] for i in frame["symbol"]]
        return frame[["id", "time", "symbol", "signal", "confidence", "published"]]

    def events(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, ts_ns, kind, detail FROM events ORDER BY id", self._db)

    # ---- writing --------------------------------------------------------------------------
    def new_signal_ids(self, count: int) -> range:
        """Ids for the next ``count`` signals (assigned in order; written by :meth:`commit_step`)."""
        ids = range(self._next_id, self._next_id + count)
        self._next_id += count
        return ids

    def commit_step(
        self,
        times: np.ndarray,
        ohlcv: np.ndarray,
        flags: np.ndarray,
        funding: np.ndarray,
        signals: Sequence[SignalRow],
        fills: np.ndarray,
        fill_times: np.ndarray,
        fill_symbols: np.ndarray,
        *,
        published_up_to: int,
    ) -> None:
        """Write one step in one transaction: bars ``(k,)``/``(k, 5, n_symbols)``, signal bits
        and funding ``(k, n_symbols)``, the signals, the fills (kernel order records with their
        bar times and symbol indices) and the mark that signals up to ``published_up_to`` went
        out."""
        n_sym = len(self.symbols)
        k = int(times.shape[0])
        step_row = (
            int(times[0]),
            int(times[-1]),
            k,
            np.ascontiguousarray(times, dtype="<i8").tobytes(),
            np.ascontiguousarray(ohlcv, dtype="<f8").reshape(k, 5, n_sym).tobytes(),
            np.ascontiguousarray(flags, dtype="<i8").reshape(k, n_sym).tobytes(),
            np.ascontiguousarray(funding, dtype="<f8").reshape(k, n_sym).tobytes(),
        )
        n_fills = fills.shape[0]
        fill_rows = list(  # columns to Python numbers in bulk (a replay step fills thousands)
            zip(
                range(self._n_fills + 1, self._n_fills + n_fills + 1),
                np.asarray(fill_times, dtype=np.int64).tolist(),
                np.asarray(fill_symbols, dtype=np.int64).tolist(),
                fills[:, K.O_SIDE].astype(np.int64).tolist(),
                fills[:, K.O_SIZE].tolist(),
                fills[:, K.O_PRICE].tolist(),
                fills[:, K.O_FEES].tolist(),
                fills[:, K.O_STOP].astype(np.int64).tolist(),
                strict=True,
            )
        )
        signal_rows = [
            (
                s.id,
                s.ts,
                s.symbol,
                s.signal,
                s.confidence,
                np.asarray(s.forecasts, dtype="<f4").tobytes(),  # float32, as on the wire
                s.model_version,
            )
            for s in signals
        ]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?)", step_row)
                self._db.executemany(
                    "INSERT INTO signals(id, ts, symbol, signal, confidence, forecasts, "
                    "model_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    signal_rows,
                )
                self._db.executemany("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?)", fill_rows)
                if published_up_to > self._published_up_to:
                    self._db.execute(  # a range of the primary key: no scan of older signals
                        "UPDATE signals SET published = 1 WHERE id > ? AND id <= ?",
                        (self._published_up_to, published_up_to),
                    )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise DataError(f"the journal already holds part of this step: {exc}") from None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        self._n_fills += len(fill_rows)
        self._published_up_to = max(self._published_up_to, published_up_to)
        self._last_ts = int(times[-1])

    def commit_warmup(self, times: np.ndarray, ohlcv: np.ndarray) -> None:
        """Journal bars that precede the run (a fresh run's back-filled history): history for
        the signal source after a restart, never traded (signal bits ``WARMUP``)."""
        n_sym = len(self.symbols)
        k = int(times.shape[0])
        flags = np.full((k, n_sym), WARMUP, dtype=np.int64)
        self.commit_step(
            times,
            ohlcv,
            flags,
            np.zeros((k, n_sym)),
            [],
            np.empty((0, K.N_ORDER_FIELDS)),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            published_up_to=self._published_up_to,
        )

    def record_event(self, kind: str, detail: Mapping[str, Any]) -> None:
        """An operational event (kill switch, risk limit, stale data...), kept with the run."""
        import time

        with self._lock:
            self._db.execute(
                "INSERT INTO events(ts_ns, kind, detail) VALUES (?, ?, ?)",
                (time.time_ns(), kind, json.dumps(dict(detail), sort_keys=True, default=str)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

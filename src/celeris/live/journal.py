"""The live loop's journal: every processed bar, signal and fill, in SQLite (WAL), before publishing.

One step is one row, written in one transaction: the step's bars (times, OHLCV), the signal bits
the paper account received (after the risk controls), the funding rates, the signal records and
the fills it made, each as one little-endian array, and the id of the last signal that had gone
out on the feed when the step was written (the publication mark). Only then are the step's
signals sent. One row per step keeps the commit on the bar-close-to-signal path to one insert
whatever the number of symbols or fills. So after a crash (``kill -9`` included):

* a step whose transaction did not commit left nothing: its bars are processed again (the market
  stream back-fills them, a replay reads them again) and give the same signals with the same ids;
* a step that committed but whose signals may not have gone out (ids after the last row's
  publication mark) is republished with the same ids (signal id = feed sequence number, see
  :class:`~celeris.serving.feed.SignalPublisher`'s ``first_sequence``): a consumer that saw them
  drops the repeat by id;
* the paper account is rebuilt by stepping once over the journaled bars and signals, and the
  fills this gives must equal the journaled fills (else :class:`DataError`: the journal and the
  code disagree, e.g. after an upgrade that changed the accounting).

``synchronous="normal"`` (the default) survives a crash of the process: WAL commits are in the
operating system's page cache when ``commit`` returns. ``"full"`` also survives a power cut, at
the cost of an fsync per step on the bar-close-to-signal path.

:class:`JournalReader` reads a journal (also one another process is writing, read-only);
:class:`Journal` writes one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.errors import ConfigError, DataError

__all__ = [
    "FILL_DTYPE",
    "FORMAT",
    "SIGNAL_DTYPE",
    "WARMUP",
    "History",
    "Journal",
    "JournalReader",
    "SignalBlock",
    "SignalRow",
]

#: Layout version of the journal's tables (1: a row per signal and per fill).
FORMAT = 2
#: Signal bits of a bar journaled as history only (before a fresh run's first traded bar).
WARMUP = -1

# The columns read without the arrays come first: SQLite reads a row's payload in order, so
# the bookkeeping of a step is found without touching its blobs.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps(
    first_ts INTEGER PRIMARY KEY, last_ts INTEGER NOT NULL, k INTEGER NOT NULL,
    first_signal INTEGER NOT NULL, n_signals INTEGER NOT NULL,
    first_fill INTEGER NOT NULL, n_fills INTEGER NOT NULL,
    published_up_to INTEGER NOT NULL, horizon INTEGER NOT NULL,
    signals BLOB NOT NULL, forecasts BLOB NOT NULL, fills BLOB NOT NULL,
    times BLOB NOT NULL, ohlcv BLOB NOT NULL, flags BLOB NOT NULL, funding BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
"""
_SYNC = {"normal": "NORMAL", "full": "FULL"}

#: A signal record as journaled (its id is the step's ``first_signal`` plus its row).
SIGNAL_DTYPE = np.dtype(
    [
        ("ts", "<i8"),
        ("symbol", "<i4"),
        ("signal", "i1"),
        ("model_version", "<u4"),
        ("confidence", "<f8"),
    ]
)
#: A fill as journaled (its sequence number is the step's ``first_fill`` plus its row).
FILL_DTYPE = np.dtype(
    [
        ("ts", "<i8"),
        ("symbol", "<i4"),
        ("side", "i1"),
        ("kind", "i1"),
        ("size", "<f8"),
        ("price", "<f8"),
        ("fees", "<f8"),
    ]
)
_BOOKKEEPING = "first_ts, last_ts, k, first_signal, n_signals, first_fill, n_fills, published_up_to"


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
class SignalBlock:
    """Consecutive signal records as arrays: ids ``first_id, first_id + 1, ...``, bar times
    (int64 ns), symbol indices, directions (-1, 0, +1), confidences, forecasts ``(n, h)``
    float32 (``h`` may be 0) and model versions. What a step journals and publishes in one go;
    iterating gives :class:`SignalRow` objects."""

    first_id: int
    ts: np.ndarray
    symbol: np.ndarray
    signal: np.ndarray
    confidence: np.ndarray
    forecasts: np.ndarray
    model_version: np.ndarray

    @classmethod
    def empty(cls, first_id: int, horizon: int = 0) -> SignalBlock:
        return cls(
            first_id, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
            np.empty(0), np.empty((0, horizon), np.float32), np.empty(0, np.int64),
        )  # fmt: skip

    @classmethod
    def concat(cls, blocks: Sequence[SignalBlock], first_id: int) -> SignalBlock:
        """Blocks of consecutive ids as one (``first_id`` when there is none)."""
        if not blocks:
            return cls.empty(first_id)
        width = max(b.forecasts.shape[1] for b in blocks)
        padded = [np.pad(b.forecasts, ((0, 0), (0, width - b.forecasts.shape[1]))) for b in blocks]
        joined = {f: np.concatenate([getattr(b, f) for b in blocks]) for f in _ARRAYS[:-1]}
        return cls(blocks[0].first_id, **joined, forecasts=np.concatenate(padded))

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.first_id, self.first_id + len(self), dtype=np.int64)

    @property
    def last_id(self) -> int:
        """Id of the last record (``first_id - 1`` when empty)."""
        return self.first_id + len(self) - 1

    def __iter__(self) -> Iterator[SignalRow]:
        columns = (self.ts, self.symbol, self.signal, self.confidence, self.forecasts)
        for j, (ts, sym, sig, conf, fc) in enumerate(zip(*(c.tolist() for c in columns),
                                                         strict=True)):  # fmt: skip
            yield SignalRow(self.first_id + j, ts, sym, sig, conf, tuple(fc),
                            int(self.model_version[j]))  # fmt: skip

    def after(self, last_id: int) -> SignalBlock:
        """The records with ids above ``last_id``."""
        cut = max(0, min(len(self), last_id + 1 - self.first_id))
        return SignalBlock(self.first_id + cut, **{f: getattr(self, f)[cut:] for f in _ARRAYS})

    def _record(self) -> np.ndarray:
        out = np.empty(len(self), SIGNAL_DTYPE)
        out["ts"], out["symbol"], out["signal"] = self.ts, self.symbol, self.signal
        out["model_version"], out["confidence"] = self.model_version, self.confidence
        return out

    @classmethod
    def _from_record(cls, first_id: int, rec: np.ndarray, forecasts: np.ndarray) -> SignalBlock:
        return cls(
            first_id, rec["ts"].astype(np.int64), rec["symbol"].astype(np.int64),
            rec["signal"].astype(np.int64), rec["confidence"].astype(np.float64), forecasts,
            rec["model_version"].astype(np.int64),
        )  # fmt: skip


_ARRAYS = ("ts", "symbol", "signal", "confidence", "model_version", "forecasts")


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


class JournalReader:
    """Reads a live run's journal. ``JournalReader.open(path)`` opens one read-only (a run
    another process may be writing: each read sees the steps committed so far)."""

    path: Path
    symbols: tuple[str, ...]
    _db: sqlite3.Connection

    @classmethod
    def open(cls, path: str | Path, *, timeout_s: float = 5.0) -> JournalReader:
        """Open ``path`` read-only (:class:`DataError` when it is not a journal)."""
        reader = cls.__new__(cls)
        reader.path = Path(path)
        if not reader.path.exists():
            raise DataError(f"no live journal at {reader.path}")
        try:
            reader._db = sqlite3.connect(
                f"file:{reader.path}?mode=ro", uri=True, timeout=timeout_s,
                check_same_thread=False,
            )  # fmt: skip
            meta = dict(reader._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot read the live journal {reader.path}: {exc}") from None
        if not meta:
            raise DataError(f"the live journal {reader.path} is empty (being created?)")
        if json.loads(meta.get("format", "null")) != FORMAT:
            raise DataError(
                f"the live journal {reader.path} has format {meta.get('format')}, this Celeris "
                f"reads format {FORMAT}"
            )
        reader.symbols = tuple(json.loads(meta["symbols"]))
        return reader

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- bookkeeping ----------------------------------------------------------------------
    def _last_step(self) -> tuple[int, ...] | None:
        row = self._db.execute(
            f"SELECT {_BOOKKEEPING} FROM steps ORDER BY first_ts DESC LIMIT 1"
        ).fetchone()
        return None if row is None else tuple(int(v) for v in row)

    def last_ts(self) -> int | None:
        """Open time (ns) of the last processed bar, None before the first step."""
        last = self._last_step()
        return None if last is None else last[1]

    def published_up_to(self) -> int:
        """Id of the last signal known to have gone out (the last step's publication mark)."""
        last = self._last_step()
        return 0 if last is None else last[7]

    def next_ids(self) -> tuple[int, int]:
        """The next signal id and the next fill sequence number."""
        last = self._last_step()
        return (1, 1) if last is None else (last[3] + last[4], last[5] + last[6])

    def first_unpublished(self) -> int:
        """Id of the first signal not yet marked published (the publisher's first sequence)."""
        return self.published_up_to() + 1

    # ---- signals and fills ----------------------------------------------------------------
    def signal_block(self, after: int = 0) -> SignalBlock:
        """Every journaled signal with an id above ``after``, in id order."""
        rows = self._db.execute(
            "SELECT first_signal, signals, forecasts, horizon FROM steps "
            "WHERE n_signals > 0 AND first_signal + n_signals - 1 > ? ORDER BY first_ts",
            (after,),
        ).fetchall()
        blocks = []
        for first, raw, fc, h in rows:
            rec = np.frombuffer(raw, dtype=SIGNAL_DTYPE)
            forecasts = np.frombuffer(fc, dtype="<f4").reshape(len(rec), int(h))
            blocks.append(SignalBlock._from_record(int(first), rec, forecasts).after(after))
        return SignalBlock.concat(blocks, max(after + 1, 1))

    def unpublished(self) -> SignalBlock:
        """Signals journaled but not marked published, in id order (republished on resume)."""
        return self.signal_block(self.published_up_to())

    def signals(self) -> pd.DataFrame:
        """Every journaled signal: id, bar time, symbol, signal, confidence, published."""
        block = self.signal_block()
        return pd.DataFrame(
            {
                "id": block.ids,
                "time": pd.to_datetime(block.ts, utc=True),
                "symbol": [self.symbols[i] for i in block.symbol.tolist()],
                "signal": block.signal,
                "confidence": block.confidence,
                "published": (block.ids <= self.published_up_to()).astype(np.int64),
            }
        )

    def fill_array(self) -> tuple[int, np.ndarray]:
        """Every journaled fill as :data:`FILL_DTYPE` records, and the first one's sequence
        number (1)."""
        rows = self._db.execute(
            "SELECT first_fill, fills FROM steps WHERE n_fills > 0 ORDER BY first_ts"
        ).fetchall()
        first = int(rows[0][0]) if rows else 1
        return first, np.concatenate(
            [np.empty(0, FILL_DTYPE), *(np.frombuffer(r[1], FILL_DTYPE) for r in rows)]
        )

    def fills(self) -> pd.DataFrame:
        """Every journaled fill: seq, bar time, symbol, side, size, price, fees, kind."""
        from celeris.backtest.book import ORDER_KINDS

        first, rec = self.fill_array()
        return pd.DataFrame(
            {
                "seq": np.arange(first, first + len(rec), dtype=np.int64),
                "time": pd.to_datetime(rec["ts"].astype(np.int64), utc=True),
                "symbol": [self.symbols[i] for i in rec["symbol"].tolist()],
                "side": np.where(rec["side"] == K.BUY, "buy", "sell"),
                "size": rec["size"],
                "price": rec["price"],
                "fees": rec["fees"],
                "kind": [ORDER_KINDS[int(k)] for k in rec["kind"].tolist()],
            }
        )

    def fill_records(self) -> tuple[np.ndarray, np.ndarray]:
        """The journaled fills: bar times ``(n,)`` int64 ns, and ``(n, 4)`` float64 symbol,
        side, size, price (compared exactly with the account's on resume)."""
        _, rec = self.fill_array()
        rest = np.column_stack(
            [rec[f].astype(np.float64) for f in ("symbol", "side", "size", "price")]
        )
        return rec["ts"].astype(np.int64), rest.reshape(-1, 4)

    # ---- bars and events ------------------------------------------------------------------
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

    def events(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT id, ts_ns, kind, detail FROM events ORDER BY id", self._db)


class Journal(JournalReader):
    """A live run's journal file, written by the run (see the module docstring).

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
        self._next_id, self._next_fill = self.next_ids()
        self._published_up_to = super().published_up_to()
        self._last_ts = super().last_ts()

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

    # ---- what the writer knows without reading --------------------------------------------
    def last_ts(self) -> int | None:
        """Open time (ns) of the last processed bar, None before the first step."""
        return self._last_ts

    def published_up_to(self) -> int:
        return self._published_up_to

    @property
    def fill_count(self) -> int:
        """Fills journaled so far."""
        return self._next_fill - 1

    @property
    def next_signal_id(self) -> int:
        return self._next_id

    # ---- writing --------------------------------------------------------------------------
    def new_signal_ids(self, count: int) -> int:
        """The first of ids for the next ``count`` signals (assigned in order; written by
        :meth:`commit_step`)."""
        first = self._next_id
        self._next_id += count
        return first

    def commit_step(
        self,
        times: np.ndarray,
        ohlcv: np.ndarray,
        flags: np.ndarray,
        funding: np.ndarray,
        signals: SignalBlock,
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
        n_fills = int(fills.shape[0])
        fill_rec = np.empty(n_fills, FILL_DTYPE)
        if n_fills:  # (most live steps fill nothing)
            fill_rec["ts"], fill_rec["symbol"] = fill_times, fill_symbols
            fill_rec["side"], fill_rec["kind"] = fills[:, K.O_SIDE], fills[:, K.O_STOP]
            fill_rec["size"], fill_rec["price"] = fills[:, K.O_SIZE], fills[:, K.O_PRICE]
            fill_rec["fees"] = fills[:, K.O_FEES]
        published = max(self._published_up_to, published_up_to)
        first_signal = signals.first_id if len(signals) else self._next_id
        row = (
            int(times[0]), int(times[-1]), k,
            first_signal, len(signals), self._next_fill, n_fills, published,
            signals.forecasts.shape[1],
            signals._record().tobytes(),
            np.ascontiguousarray(signals.forecasts, dtype="<f4").tobytes(),
            fill_rec.tobytes(),
            np.ascontiguousarray(times, dtype="<i8").tobytes(),
            np.ascontiguousarray(ohlcv, dtype="<f8").reshape(k, 5, n_sym).tobytes(),
            np.ascontiguousarray(flags, dtype="<i8").reshape(k, n_sym).tobytes(),
            np.ascontiguousarray(funding, dtype="<f8").reshape(k, n_sym).tobytes(),
        )  # fmt: skip
        with self._lock:
            try:
                with self._db:  # one transaction: BEGIN ... COMMIT, ROLLBACK on an error
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute(f"INSERT INTO steps VALUES ({', '.join('?' * 16)})", row)
            except sqlite3.IntegrityError as exc:
                raise DataError(f"the journal already holds part of this step: {exc}") from None
        self._next_fill += n_fills
        self._next_id = max(self._next_id, first_signal + len(signals))
        self._published_up_to = published
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
            SignalBlock.empty(self._next_id),
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

"""Served predictions and their realised outcomes, joined: what A/B tests and drift read.

:class:`OutcomeStore` keeps one row per prediction (a key, the model and version that made it,
the symbol, the time, the forecast over the horizon, the signal it gave, optionally the input
window) in SQLite (WAL), and the realised values once the horizon has passed. The server
records every prediction it serves over HTTP (clients post the outcomes by key:
``POST /v1/outcomes``); the live loop records its own. It needs no server: open one on a file
and call it from any thread.

Rows are bounded: past ``max_rows`` predictions, the oldest go (with their outcomes), and
:meth:`OutcomeStore.stats` counts them (``pruned``), across restarts.

Realised error and paper P&L
    :meth:`OutcomeStore.joined` returns each prediction whose outcome came back with

    * ``mae`` = mean over the horizon of ``|actual - forecast|``, ``rmse`` = the root of the
      mean of ``(actual - forecast)**2``, in the target's units (what the checkpoint's
      ``test_metrics`` measure on the test split, so the two compare);
    * ``realised_return``: the move over the horizon, measured as the signal rule measures the
      forecast move (:func:`celeris.serving.http.forecast_signals`' ``expected``). For a
      price-level target (``target_kind="level"``: ``close``, ``log_close``)
      ``actual[H-1] / last - 1``, with ``last`` the target's value at the end of the input
      window (the price the signal was given at); for a stationary target
      (``target_kind="return"``: log returns ...) ``sum(actual)``, the horizon's return in the
      target's units (for log returns, the log return of the whole horizon);
    * ``pnl`` = ``signal * realised_return``: the paper P&L of the signal, per unit of
      notional, held from the prediction to the end of the horizon, before fees. NaN where the
      prediction carried no signal, or a level target has no ``last``.

Keys are idempotent: recording the same prediction or the same outcome twice is a no-op (a
restarted live loop may repeat itself); a *different* prediction or outcome for a key already
recorded is :class:`OutcomeConflict` (HTTP 409), naming the key. An outcome for a key never
recorded (or pruned) is :class:`UnknownPrediction` (HTTP 404).

:class:`PredictionWriter` is what the server's hot routes use: ``submit`` puts rows on a queue
(~1 us) and one background thread writes them in batches, so a request never waits for SQLite.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.errors import CelerisTypeError, DataError
from celeris.serving.errors import ServingError

__all__ = [
    "MAX_KEY_LENGTH",
    "REQUEST_ID_RULE",
    "OutcomeConflict",
    "OutcomeStore",
    "Prediction",
    "PredictionWriter",
    "ServedOutcomes",
    "UnknownPrediction",
]

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
_KINDS = ("level", "return")
_NS_FLOOR = 10**15  # ns since 1970 below this are before 1970-01-12: a time in s or ms by mistake

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    symbol TEXT,
    ts INTEGER NOT NULL,
    horizon INTEGER NOT NULL,
    forecast BLOB NOT NULL,
    signal INTEGER,
    last REAL,
    target_kind TEXT NOT NULL,
    inputs BLOB,
    input_size INTEGER,
    n_features INTEGER,
    actual BLOB,
    outcome_at INTEGER
);
CREATE INDEX IF NOT EXISTS predictions_newest ON predictions (model, version, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('pruned', 0);
"""


class OutcomeConflict(ServingError, DataError):
    """A second, different prediction or outcome for a key already recorded."""

    http_status = 409
    http_error = "conflict"


class UnknownPrediction(ServingError, DataError):
    """An outcome for a key no recorded prediction has (never recorded, or pruned)."""

    http_status = 404
    http_error = "not_found"


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise CelerisTypeError(
            f"a prediction key must be a non-empty string of at most {MAX_KEY_LENGTH} "
            f"characters, got {type(key).__name__} {str(key)[:40]!r}"
        )
    return key


def _ts_ns(ts: Any, what: str) -> int:
    if isinstance(ts, pd.Timestamp | np.datetime64) or hasattr(ts, "isoformat"):
        stamp = pd.Timestamp(ts)
        if stamp.tzinfo is None:
            raise DataError(f"{what}: a timestamp must be timezone-aware (UTC), got {stamp}")
        return int(stamp.value)
    if isinstance(ts, int | np.integer) and not isinstance(ts, bool):
        value = int(ts)
        if value < _NS_FLOOR:
            raise DataError(
                f"{what}: {value} is not nanoseconds since the epoch (seconds or milliseconds?); "
                "pass nanoseconds or a pandas Timestamp"
            )
        return value
    raise CelerisTypeError(
        f"{what}: ts must be a pandas Timestamp or nanoseconds since the epoch, got "
        f"{type(ts).__name__}"
    )


def _finite_vector(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numbers: {exc}") from None
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what}[{i}] is {float(arr[i])!r}; values must be finite")
    return arr


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One served prediction, checked (see :meth:`OutcomeStore.record_prediction`)."""

    key: str
    model: str
    version: int
    symbol: str | None
    ts_ns: int
    horizon: int
    forecast: np.ndarray
    signal: int | None = None
    inputs: np.ndarray | None = None
    last: float | None = None
    target_kind: str = "level"

    @classmethod
    def make(
        cls,
        key: str,
        *,
        model: str,
        version: int,
        symbol: str | None,
        ts: pd.Timestamp | int,
        horizon: int,
        forecast: Sequence[float] | np.ndarray,
        signal: int | None = None,
        inputs: np.ndarray | None = None,
        last: float | None = None,
        target_kind: str = "level",
    ) -> Prediction:
        """Check every field; raise a :class:`~celeris.errors.CelerisError` naming the key."""
        key = _key(key)
        where = f"prediction {key!r}"
        if not isinstance(model, str) or not model:
            raise CelerisTypeError(f"{where}: model must be a non-empty string, got {model!r}")
        version = check_int(f"{where}: version", version, minimum=0)
        if symbol is not None and not isinstance(symbol, str):
            raise CelerisTypeError(f"{where}: symbol must be a string or None, got {symbol!r}")
        horizon = check_int(f"{where}: horizon", horizon, minimum=1)
        f = _finite_vector(forecast, f"{where}: forecast")
        if f.size != horizon:
            raise DataError(f"{where}: forecast has {f.size} values for a horizon of {horizon}")
        if signal is not None:
            if isinstance(signal, bool) or not isinstance(signal, int | np.integer):
                raise CelerisTypeError(f"{where}: signal must be -1, 0, 1 or None, got {signal!r}")
            if int(signal) not in (-1, 0, 1):
                raise DataError(f"{where}: signal must be -1, 0 or 1, got {int(signal)}")
            signal = int(signal)
        if target_kind not in _KINDS:
            raise DataError(
                f"{where}: target_kind must be 'level' or 'return', got {target_kind!r}"
            )
        x = None
        if inputs is not None:
            x = np.asarray(inputs, dtype=np.float32)
            if x.ndim == 1:
                x = x[:, None]  # [L] -> [L, 1]
            if x.ndim != 2 or x.size == 0:
                raise DataError(
                    f"{where}: inputs must be one window [input_size, n_features], got shape "
                    f"{list(x.shape)}"
                )
            x = np.ascontiguousarray(x)
        if last is None and x is not None and target_kind == "level":
            last = float(x[-1, 0])  # the target is feature 0 of the window
        if last is not None:
            last = float(last)
            if not math.isfinite(last):
                raise DataError(f"{where}: last must be finite, got {last!r}")
        return cls(key, model, version, symbol, _ts_ns(ts, where), horizon, f, signal, x, last,
                   target_kind)  # fmt: skip

    def row(self) -> tuple[Any, ...]:
        x = self.inputs
        return (
            self.key,
            self.model,
            self.version,
            self.symbol,
            self.ts_ns,
            self.horizon,
            self.forecast.astype("<f8").tobytes(),
            self.signal,
            self.last,
            self.target_kind,
            None if x is None else x.astype("<f4").tobytes(),
            None if x is None else x.shape[0],
            None if x is None else x.shape[1],
        )


_INSERT = (
    "INSERT OR IGNORE INTO predictions (key, model, version, symbol, ts, horizon, forecast, "
    "signal, last, target_kind, inputs, input_size, n_features) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COMPARED = "key, model, version, symbol, ts, horizon, forecast, signal, last, target_kind"


class OutcomeStore:
    """Predictions and their realised outcomes in SQLite (WAL), bounded (see the module doc).

    Parameters
    ----------
    path
        The database file (created with its directory); ``":memory:"`` for a private one.
    max_rows
        Most predictions kept; the oldest beyond are deleted and counted.

    Thread-safe: one connection behind a lock. Usable as a context manager (closes).
    """

    def __init__(self, path: str | Path, *, max_rows: int = 1_000_000) -> None:
        self.max_rows = check_int("max_rows", max_rows, minimum=1)
        self.path = path if path == ":memory:" else Path(path)
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise DataError(f"cannot open the outcome store {path}: {exc}") from None
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------------

    def record_prediction(
        self,
        key: str,
        *,
        model: str,
        version: int,
        symbol: str | None,
        ts: pd.Timestamp | int,
        horizon: int,
        forecast: Sequence[float],
        signal: int | None = None,
        inputs: np.ndarray | None = None,
        last: float | None = None,
        target_kind: str = "level",
    ) -> None:
        """Record one prediction under ``key``.

        Parameters
        ----------
        key
            Unique per prediction (at most 512 characters).
        model, version, symbol
            Who predicted what (``symbol`` None when the prediction has none).
        ts
            When it was made (the input window's last bar): a tz-aware Timestamp or
            nanoseconds since the epoch.
        horizon, forecast
            ``forecast`` holds ``horizon`` finite values in the target's units.
        signal
            -1, 0, +1: the position the prediction signalled (None: no signal).
        inputs
            The input window ``[input_size, n_features]`` in original units (kept for shadow
            replays and input drift).
        last
            The target's value at the end of the window, for a level target's realised return
            (default: ``inputs[-1, 0]`` when inputs are given).
        target_kind
            ``"level"`` or ``"return"`` (the checkpoint's ``meta["target_kind"]``).

        Raises
        ------
        OutcomeConflict
            ``key`` already holds a different prediction.
        DataError, CelerisTypeError
            A field is malformed (named with the key).
        """
        p = Prediction.make(
            key,
            model=model,
            version=version,
            symbol=symbol,
            ts=ts,
            horizon=horizon,
            forecast=forecast,
            signal=signal,
            inputs=inputs,
            last=last,
            target_kind=target_kind,
        )
        self.record_predictions([p])

    def record_predictions(self, predictions: Iterable[Prediction]) -> None:
        """Record checked :class:`Prediction` rows in one transaction (see
        :meth:`record_prediction`); a conflicting key rolls the whole batch back."""
        rows = [p.row() for p in predictions]
        if not rows:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                # one executemany (~3x faster than a loop of execute); a key already present is
                # ignored there and then checked: the same prediction again, or a conflict
                if db.executemany(_INSERT, rows).rowcount != len(rows):
                    for row in rows:
                        self._check_same(row)
                self._prune()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _check_same(self, row: tuple[Any, ...]) -> None:
        stored = self._db.execute(
            f"SELECT {_COMPARED} FROM predictions WHERE key = ?", (row[0],)
        ).fetchone()
        if stored is not None and tuple(stored) != row[:10]:  # a row of this batch: equal
            raise OutcomeConflict(
                f"prediction key {row[0]!r} already holds another prediction (model "
                f"{stored[1]}@{stored[2]}, symbol {stored[3]}); keys must be unique"
            )

    def _prune(self) -> None:
        newest = self._db.execute("SELECT max(id) FROM predictions").fetchone()[0]
        if newest is None:
            return
        cutoff = newest - self.max_rows
        if cutoff <= 0:
            return
        gone = self._db.execute("DELETE FROM predictions WHERE id <= ?", (cutoff,)).rowcount
        if gone:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'pruned'", (gone,))

    def record_outcome(self, key: str, actual: Sequence[float]) -> bool:
        """Record the realised values of ``key``'s horizon; return False when this very
        outcome was already recorded (idempotent), True when it is new.

        Raises
        ------
        UnknownPrediction
            No prediction has ``key`` (never recorded, or pruned).
        OutcomeConflict
            ``key`` already has a different outcome.
        DataError
            ``actual`` is not ``horizon`` finite numbers.
        """
        return self.record_outcomes({key: actual})[key]

    def record_outcomes(self, outcomes: Mapping[str, Sequence[float]]) -> dict[str, bool]:
        """Record several outcomes in one transaction (all or none); return ``{key: new}``."""
        checked = {_key(k): _finite_vector(v, f"outcome {k!r}") for k, v in outcomes.items()}
        now = time.time_ns()
        out: dict[str, bool] = {}
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for key, actual in checked.items():
                    row = db.execute(
                        "SELECT horizon, actual FROM predictions WHERE key = ?", (key,)
                    ).fetchone()
                    if row is None:
                        raise UnknownPrediction(
                            f"no prediction is recorded under key {key!r} (never recorded, or "
                            f"pruned past max_rows={self.max_rows})"
                        )
                    horizon, stored = row
                    if actual.size != horizon:
                        raise DataError(
                            f"outcome {key!r} has {actual.size} values; its prediction's "
                            f"horizon is {horizon}"
                        )
                    blob = actual.astype("<f8").tobytes()
                    if stored is not None:
                        if stored != blob:
                            raise OutcomeConflict(
                                f"prediction {key!r} already has a different outcome "
                                f"({np.frombuffer(stored, '<f8').tolist()}); an outcome is "
                                "recorded once"
                            )
                        out[key] = False
                        continue
                    db.execute(
                        "UPDATE predictions SET actual = ?, outcome_at = ? WHERE key = ?",
                        (blob, now, key),
                    )
                    out[key] = True
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    # -- reading ------------------------------------------------------------------------------

    def joined(
        self,
        model: str,
        *,
        version: int | None = None,
        since: pd.Timestamp | int | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Return ``model``'s predictions that have their outcome, oldest first.

        Columns: ``key, model, version, symbol, ts`` (UTC), ``horizon, signal`` (nullable
        Int8), ``forecast, actual`` (float64 arrays), ``mae, rmse, realised_return, pnl``
        (see the module docstring) and ``outcome_at`` (UTC). ``since`` keeps predictions made
        at or after it; ``limit`` the newest ``limit`` rows.
        """
        sql = (
            "SELECT key, model, version, symbol, ts, horizon, signal, forecast, actual, last, "
            "target_kind, outcome_at FROM predictions WHERE model = ? AND actual IS NOT NULL"
        )
        args: list[Any] = [model]
        if version is not None:
            sql += " AND version = ?"
            args.append(check_int("version", version, minimum=0))
        if since is not None:
            sql += " AND ts >= ?"
            args.append(_ts_ns(since, "since"))
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(check_int("limit", limit, minimum=1))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()[::-1]
        return _joined_frame(rows)

    def recent_inputs(
        self,
        model: str,
        *,
        version: int | None = None,
        shape: tuple[int, int] | None = None,
        limit: int = 64,
    ) -> np.ndarray:
        """Return the newest ``limit`` recorded input windows of ``model`` as ``[n, L, C]``
        float32, oldest first (``n`` may be 0): the live inputs a shadow model can replay.

        ``shape`` ``(input_size, n_features)`` keeps windows of that shape only; without it,
        the shape of the newest window.
        """
        limit = check_int("limit", limit, minimum=1)
        sql = "SELECT inputs, input_size, n_features FROM predictions WHERE model = ? "
        args: list[Any] = [model]
        if version is not None:
            sql += "AND version = ? "
            args.append(check_int("version", version, minimum=0))
        if shape is None:
            with self._lock:
                newest = self._db.execute(
                    sql + "AND inputs IS NOT NULL ORDER BY id DESC LIMIT 1", args
                ).fetchone()
            if newest is None:
                return np.empty((0, 0, 0), dtype=np.float32)
            shape = (int(newest[1]), int(newest[2]))
        length, feats = (int(shape[0]), int(shape[1]))
        sql += "AND input_size = ? AND n_features = ? ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, length, feats, limit]).fetchall()
        out = np.empty((len(rows), length, feats), dtype=np.float32)
        for i, (blob, _, _) in enumerate(reversed(rows)):
            out[i] = np.frombuffer(blob, dtype="<f4").reshape(length, feats)
        return out

    def stats(self) -> dict[str, int]:
        """Return ``predictions`` (rows kept), ``outcomes`` (of them, with an outcome),
        ``pruned`` (deleted past ``max_rows``, ever) and ``max_rows``."""
        with self._lock:
            n, joined = self._db.execute(
                "SELECT count(*), count(actual) FROM predictions"
            ).fetchone()
            pruned = self._db.execute(
                "SELECT value FROM counters WHERE name = 'pruned'"
            ).fetchone()[0]
        return {
            "predictions": int(n),
            "outcomes": int(joined),
            "pruned": int(pruned),
            "max_rows": self.max_rows,
        }

    def models(self) -> list[tuple[str, int]]:
        """Return the ``(model, version)`` pairs that have recorded predictions."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT model, version FROM predictions ORDER BY model, version"
            ).fetchall()
        return [(str(m), int(v)) for m, v in rows]

    def close(self) -> None:
        """Close the database (later calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> OutcomeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_COLUMNS = [
    "key", "model", "version", "symbol", "ts", "horizon", "signal", "forecast", "actual", "mae",
    "rmse", "realised_return", "pnl", "outcome_at",
]  # fmt: skip


def _joined_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    n = len(rows)
    forecasts = [np.frombuffer(r[7], dtype="<f8") for r in rows]
    actuals = [np.frombuffer(r[8], dtype="<f8") for r in rows]
    last = np.array([np.nan if r[9] is None else r[9] for r in rows], dtype=np.float64)
    is_return = np.array([r[10] == "return" for r in rows], dtype=bool)
    horizons = {len(f) for f in forecasts}
    if len(horizons) == 1:  # the usual case: one model, one horizon; vectorised
        f2 = np.stack(forecasts)  # [n, H]
        a2 = np.stack(actuals)
        err = a2 - f2
        mae = np.abs(err).mean(axis=1)
        rmse = np.sqrt(np.square(err).mean(axis=1))
        moved = a2.sum(axis=1)
        end = a2[:, -1]
    else:
        mae = np.array([np.abs(a - f).mean() for f, a in zip(forecasts, actuals, strict=True)])
        rmse = np.array(
            [np.sqrt(np.square(a - f).mean()) for f, a in zip(forecasts, actuals, strict=True)]
        )
        moved = np.array([a.sum() for a in actuals])
        end = np.array([a[-1] for a in actuals])
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(last > 0, end / last - 1.0, np.nan)
    realised = np.where(is_return, moved, level) if n else np.empty(0)
    signal = pd.array([r[6] for r in rows], dtype="Int8")
    sign = np.array([np.nan if r[6] is None else float(r[6]) for r in rows], dtype=np.float64)
    pnl = sign * realised
    return pd.DataFrame(
        {
            "key": [r[0] for r in rows],
            "model": [r[1] for r in rows],
            "version": np.array([r[2] for r in rows], dtype=np.int64),
            "symbol": [r[3] for r in rows],
            "ts": pd.to_datetime(np.array([r[4] for r in rows], dtype=np.int64), utc=True),
            "horizon": np.array([r[5] for r in rows], dtype=np.int64),
            "signal": signal,
            "forecast": forecasts,
            "actual": actuals,
            "mae": mae,
            "rmse": rmse,
            "realised_return": realised,
            "pnl": pnl,
            "outcome_at": pd.to_datetime(np.array([r[11] for r in rows], dtype=np.int64), utc=True),
        },
        columns=_COLUMNS,
    )


class PredictionWriter:
    """Writes predictions to an :class:`OutcomeStore` from a background thread, in batches.

    :meth:`submit` only queues (the caller, an HTTP route on the event loop, never waits for
    SQLite); :meth:`submit_lazy` queues a function that builds the rows, so even that work
    leaves the request. When ``max_pending`` items are waiting, further ones are dropped and
    counted (``dropped``; logged once per run of drops) rather than stalling requests; a row
    the store refuses (a conflicting key, a non-finite forecast) is counted in ``failed`` and
    logged.
    """

    def __init__(
        self,
        store: OutcomeStore,
        *,
        max_pending: int = 65_536,
        batch: int = 512,
        linger_s: float = 0.02,
    ) -> None:
        self.store = store
        self.max_pending = check_int("max_pending", max_pending, minimum=1)
        self.batch = check_int("batch", batch, minimum=1)
        # One transaction per request cost ~100 us of commit each on the shared VM; waiting up
        # to linger_s for more items writes a busy server's requests in a few transactions.
        self.linger_s = check_real("linger_s", linger_s, minimum=0)
        # SimpleQueue.put is ~0.1 us where Queue.put_nowait is ~2.5 us (its locks and
        # condition); the bound is kept by counting items queued (under a plain lock) against
        # items done (written by the writer's thread alone).
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._counts = {"submitted": 0, "written": 0, "dropped": 0, "failed": 0}
        self._dropping = False
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._queued = 0  # items ever queued
        self._done = 0  # items ever taken and written (or failed)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="celeris-outcomes", daemon=True)
        self._thread.start()

    def submit(self, predictions: Iterable[Prediction]) -> None:
        """Queue checked predictions for writing (never blocks)."""
        for p in predictions:
            self._put(p, 1)

    def submit_lazy(
        self, build: Callable[..., list[Prediction]], rows: int, args: tuple[Any, ...] = ()
    ) -> None:
        """Queue ``build(*args)``, called on the writer's thread, whose ``rows`` predictions
        are then written (never blocks). ``build`` raising counts its ``rows`` as failed."""
        self._put((build, args, rows), rows)

    def _put(self, item: Any, rows: int) -> None:
        if self._closed:
            raise DataError("the prediction writer is closed")
        with self._lock:
            full = self._queued - self._done >= self.max_pending
            if full:
                self._counts["dropped"] += rows
            else:
                self._queued += 1
                self._counts["submitted"] += rows
                self._queue.put(item)
        if full and not self._dropping:
            self._dropping = True
            log.warning(
                "outcome store: %d items waiting to be written; dropping new predictions "
                "until it catches up (celeris_outcomes_dropped_total)",
                self.max_pending,
            )

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written; return False on timeout."""
        target = self._queued
        with self._idle:
            return self._idle.wait_for(lambda: self._done >= target, timeout=timeout_s)

    def stats(self) -> dict[str, int]:
        """Return ``submitted``, ``written``, ``dropped``, ``failed`` (predictions) and
        ``pending`` (queued items)."""
        return {**self._counts, "pending": self._queued - self._done}

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            deadline = time.monotonic() + self.linger_s
            while len(items) < self.batch and items[-1] is not None:
                try:
                    items.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0)))
                except queue.Empty:
                    break
            stop = items[-1] is None
            todo = [item for item in items if item is not None]
            try:
                self._write(todo)
            finally:
                with self._idle:
                    self._done += len(todo)
                    self._idle.notify_all()
            if stop:
                return

    def _write(self, items: list[Any]) -> None:
        rows: list[Prediction] = []
        for item in items:
            if isinstance(item, Prediction):
                rows.append(item)
                continue
            build, args, n = item
            try:
                rows.extend(build(*args))
            except Exception as exc:
                self._counts["failed"] += n
                log.warning("outcome store: %d predictions not recorded: %s", n, exc)
        if not rows:
            return
        try:
            self.store.record_predictions(rows)
            self._counts["written"] += len(rows)
        except Exception:
            # One bad row must not cost the others: write them one by one.
            for p in rows:
                try:
                    self.store.record_predictions([p])
                    self._counts["written"] += 1
                except Exception as one:
                    self._counts["failed"] += 1
                    log.warning("outcome store: prediction %r not recorded: %s", p.key, one)
        self._dropping = False


_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
REQUEST_ID_RULE = "1-128 characters: a letter or digit, then letters, digits and . _ : -"


class ServedOutcomes:
    """The outcome store as the HTTP routes use it: predictions recorded per request (queued
    on a :class:`PredictionWriter`), outcomes posted by key, A/B tests judged on them.

    Keys: a request's predictions are recorded under ``REQUEST_ID/SYMBOL`` (``/v1/forecast``)
    or ``REQUEST_ID/ROW`` (``/v1/models/{name}/predict``, rows numbered from 0). A request id
    has no ``/`` (:data:`REQUEST_ID_RULE`), so the keys of two requests never collide; the
    client may choose it (unique per request) or the server makes one (32 hex digits).
    """

    def __init__(self, store: OutcomeStore, writer: PredictionWriter | None = None) -> None:
        self.store = store
        self.writer = writer if writer is not None else PredictionWriter(store)
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count()  # next() is atomic under the GIL

    def request_id(self, given: Any) -> str:
        """Return ``given`` checked (:class:`DataError` naming the rule), or a new id: 16 hex
        digits random per process, then a counter (``uuid4`` costs a system call, ~15 us, on
        every request; this is unique all the same)."""
        if given is None:
            return f"{self._id_prefix}{next(self._ids):016x}"
        if not isinstance(given, str) or _REQUEST_ID_RE.fullmatch(given) is None:
            raise DataError(f"request_id must be {REQUEST_ID_RULE}; got {str(given)[:40]!r}")
        return given

    def record_request(
        self,
        request_id: str,
        *,
        model: str,
        version: str | int,
        names: Sequence[str] | None,
        inputs: np.ndarray,
        forecasts: np.ndarray,
        signals: np.ndarray | None = None,
        usable: np.ndarray | None = None,
        target_kind: str = "level",
    ) -> None:
        """Queue one request's predictions (``inputs [n, L, C]``, ``forecasts [n, H]``;
        ``names`` the symbols, or None for row numbers; ``signals [n]`` with ``usable [n]``:
        an unusable row gave no signal). Never blocks; the rows are built on the writer's
        thread."""
        self.writer.submit_lazy(
            _request_rows,
            len(forecasts),
            (request_id, model, version, names, inputs, forecasts, signals, usable, target_kind,
             time.time_ns()),
        )  # fmt: skip

    def post(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Record the outcomes of a ``POST /v1/outcomes`` body; return what was recorded.

        The body is ``{"outcomes": {KEY: [actual...], ...}}`` or ``{"request_id": ID,
        "actual": {SYMBOL_OR_ROW: [actual...], ...}}`` (or a list, one entry per row). Waits
        for queued predictions to be written first (call it off the event loop).

        Returns ``{"recorded": new outcomes, "repeated": outcomes already recorded, "keys"}``.
        """
        outcomes = _posted(doc)
        self.writer.flush()
        result = self.store.record_outcomes(outcomes)
        return {
            "recorded": sum(result.values()),
            "repeated": len(result) - sum(result.values()),
            "keys": list(result),
        }

    def evaluate(
        self, model: str, champion: int, challenger: int, *, since_s: float | None = None
    ) -> dict[str, Any]:
        """Return ``{"error": report, "pnl": report}``: the A/B comparison of two versions on
        their realised outcomes since ``since_s`` (:func:`time.time` seconds)."""
        from celeris.serving.rollout import evaluate_outcomes

        self.writer.flush()
        since = None if since_s is None else int(since_s * 1e9)
        return {
            metric: evaluate_outcomes(
                self.store, model, champion, challenger, metric=metric, since=since
            ).to_dict()
            for metric in ("error", "pnl")
        }

    def close(self) -> None:
        """Write what is queued and close the store."""
        self.writer.close()
        self.store.close()


def _request_rows(
    request_id: str,
    model: str,
    version: str | int,
    names: Sequence[str] | None,
    inputs: np.ndarray,
    forecasts: np.ndarray,
    signals: np.ndarray | None,
    usable: np.ndarray | None,
    target_kind: str,
    ts: int,
) -> list[Prediction]:
    """The predictions of one served request (run on the writer's thread)."""
    v = int(version)
    f = np.asarray(forecasts, dtype=np.float64)
    n = len(f)
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"request {request_id}: {int(bad.sum())} of {n} forecasts are not finite "
            f"(first: row {i}); recorded none of the request's predictions"
        )
    x = np.asarray(inputs, dtype=np.float32)
    horizon = f.shape[1]
    level = target_kind == "level"
    out = []
    for i in range(n):
        signal = None
        if signals is not None and (usable is None or bool(usable[i])):
            signal = int(signals[i])
        out.append(
            Prediction(
                key=f"{request_id}/{names[i] if names is not None else i}",
                model=model,
                version=v,
                symbol=None if names is None else names[i],
                ts_ns=ts,
                horizon=horizon,
                forecast=f[i],
                signal=signal,
                inputs=x[i],
                last=float(x[i, -1, 0]) if level else None,
                target_kind=target_kind,
            )
        )
    return out


def _posted(doc: Mapping[str, Any]) -> dict[str, Any]:
    if "outcomes" in doc:
        given = doc["outcomes"]
        if not isinstance(given, Mapping) or not given:
            raise DataError('"outcomes" must be a non-empty object {KEY: [actual, ...], ...}')
        return dict(given)
    if "request_id" not in doc or "actual" not in doc:
        raise DataError(
            'the body needs "outcomes": {KEY: [actual, ...]} or "request_id" and "actual": '
            "{SYMBOL: [actual, ...]} (a list for /predict rows)"
        )
    rid = doc["request_id"]
    if not isinstance(rid, str) or _REQUEST_ID_RE.fullmatch(rid) is None:
        raise DataError(f"request_id must be {REQUEST_ID_RULE}; got {str(rid)[:40]!r}")
    actual = doc["actual"]
    if isinstance(actual, list):
        actual = dict(enumerate(actual))
    if not isinstance(actual, Mapping) or not actual:
        raise DataError('"actual" must be a non-empty object {SYMBOL: [...]} or a list of rows')
    return {f"{rid}/{name}": values for name, values in actual.items()}

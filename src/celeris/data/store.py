"""The local market-data store: one Parquet file per exchange, symbol and timeframe.

Layout: ``$CELERIS_HOME/data/<exchange>/<SYMBOL with / replaced by ->/<timeframe>.parquet``
(``CELERIS_HOME`` defaults to ``~/.celeris``), e.g. ``~/.celeris/data/binance/BTC-USDT/1h.parquet``.
Files are replaced atomically (a temporary file in the same folder, fsync, ``os.replace``) under
an advisory lock, so a crash or a failed write leaves the previous file intact, and two
processes saving the same key do not lose each other's bars. The temporary file of a writer
that was killed is removed by the next save of that key
(:func:`celeris.data.atomic.sweep_temp_files`: only when its process is gone). Reads go through
DuckDB, which prunes by the Parquet row-group statistics of ``time``.

Funding rates of a perpetual swap are stored beside its bars, in ``funding.parquet`` of the same
folder (``~/.celeris/data/binance/BTC-USDT:USDT/funding.parquet``), with the same atomic,
locked merge (:meth:`Store.save_funding`, :meth:`Store.read_funding`); ``Store.list`` shows them
with the timeframe ``funding``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.data.atomic import atomic_path, sweep_temp_files
from celeris.data.funding_schema import FUNDING_COLUMNS, validate_funding
from celeris.data.schema import BAR_COLUMNS, validate
from celeris.data.timeframes import check_timeframe, timeframe_to_timedelta
from celeris.errors import ConfigError, DataError, StoreError, did_you_mean

_EXCHANGE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]*$")
_META_KEY = b"celeris"
LIST_COLUMNS = ("exchange", "symbol", "timeframe", "rows", "first", "last", "missing", "path")

TimeLike = str | datetime | pd.Timestamp | None

FUNDING = "funding"
"""The file stem of funding rates beside the bars, and the last part of their store key."""


def celeris_home() -> Path:
    """Return ``$CELERIS_HOME`` (default ``~/.celeris``), read at call time."""
    home = os.environ.get("CELERIS_HOME")
    return Path(home).expanduser() if home else Path.home() / ".celeris"


def to_utc(value: str | datetime | pd.Timestamp | int, what: str) -> pd.Timestamp:
    """Parse a time bound (naive taken as UTC; int as epoch milliseconds) to a UTC Timestamp."""
    try:
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            ts = pd.Timestamp(int(value), unit="ms")
        else:
            ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot read {what} {value!r} as a time; use ISO 8601 such as 2024-01-31 or "
            "2024-01-31T12:00:00Z"
        ) from exc
    if ts is pd.NaT:
        raise ConfigError(f"{what} is NaT")
    return (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")


class Store:
    """Parquet files of bars under ``root`` (default ``$CELERIS_HOME/data``).

    Parameters
    ----------
    root : str or os.PathLike, optional
        Folder holding ``<exchange>/<SYMBOL>/<timeframe>.parquet``. Read from ``CELERIS_HOME``
        when the store is created if not given.

    Notes
    -----
    Exchange ids are lower-cased and symbols upper-cased (``binance``, ``BTC/USDT``), so keys
    are case-insensitive; ``BTC-USDT`` (the folder spelling) is read as ``BTC/USDT``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else celeris_home() / "data"

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def key(exchange: str, symbol: str, timeframe: str) -> tuple[str, str, str]:
        """Return the normalised ``(exchange, symbol, timeframe)`` or raise :class:`ConfigError`."""
        ex, sym = Store.market_key(exchange, symbol)
        if str(timeframe).strip().lower() == FUNDING:
            raise ConfigError(
                f"{ex} {sym}: funding rates are not bars; read them with "
                f"load_funding('store:{ex}/{sym}/funding') or Store().read_funding({ex!r}, {sym!r})"
            )
        return ex, sym, check_timeframe(timeframe)

    @staticmethod
    def market_key(exchange: str, symbol: str) -> tuple[str, str]:
        """Return the normalised ``(exchange, symbol)`` or raise :class:`ConfigError`."""
        ex, sym = str(exchange).strip().lower(), str(symbol).strip().upper()
        if not _EXCHANGE.match(ex):
            raise ConfigError(f"bad exchange id {exchange!r}; use a ccxt id such as 'binance'")
        if "/" not in sym and sym.count("-") == 1:
            sym = sym.replace("-", "/")  # the folder spelling, BTC-USDT, is accepted too
        if not _SYMBOL.match(sym) or ".." in sym or "/" not in sym:
            raise ConfigError(f"bad symbol {symbol!r}; use a ccxt symbol such as 'BTC/USDT'")
        return ex, sym

    def path(self, exchange: str, symbol: str, timeframe: str) -> Path:
        """Return the Parquet file of a key (it need not exist)."""
        ex, sym, tf = self.key(exchange, symbol, timeframe)
        return self.root / ex / sym.replace("/", "-") / f"{tf}.parquet"

    def exists(self, exchange: str, symbol: str, timeframe: str) -> bool:
        """Return whether bars are stored for the key."""
        return self.path(exchange, symbol, timeframe).is_file()

    def funding_path(self, exchange: str, symbol: str) -> Path:
        """Return the Parquet file of a market's funding rates, beside its bars (need not exist)."""
        ex, sym = self.market_key(exchange, symbol)
        return self.root / ex / sym.replace("/", "-") / f"{FUNDING}.parquet"

    # -- writing -----------------------------------------------------------------------------

    def save(self, df: pd.DataFrame, exchange: str, symbol: str, timeframe: str) -> Path:
        """Merge bars into the stored file for the key, atomically.

        The result is the union by timestamp of the stored bars and ``df``, sorted and unique.
        Where both have a bar at the same time, the bar in ``df`` wins (a re-download replaces
        a bar that was still forming, or a corrected one).

        Parameters
        ----------
        df : pandas.DataFrame
            A bar frame with only the bar columns; it is validated.
        exchange, symbol, timeframe : str
            The key, e.g. ``"binance", "BTC/USDT", "1h"``.

        Returns
        -------
        pathlib.Path
            The file written.

        Raises
        ------
        DataError
            ``df`` is not a valid bar frame or has extra columns.
        StoreError
            The file could not be read or written; the previous file is left intact.
        """
        ex, sym, tf = self.key(exchange, symbol, timeframe)
        bars = validate(df)
        extra = [c for c in bars.columns if c not in BAR_COLUMNS]
        if extra:
            raise DataError(
                f"the store holds only {', '.join(BAR_COLUMNS)}; drop extra column(s) {extra}"
            )
        meta = {"exchange": ex, "symbol": sym, "timeframe": tf, "version": 1}
        return self._merge_write(self.path(ex, sym, tf), bars, meta, validate)

    def save_funding(self, funding: pd.DataFrame | pd.Series, exchange: str, symbol: str) -> Path:
        """Merge funding rates into the stored file of a market, atomically, as :meth:`save`.

        Where both have a funding time, the new row wins, except that a new row without a mark
        price (NaN, or a Series or frame without ``mark_price``) keeps the stored one. Rows are
        stored with both columns ``rate, mark_price`` (NaN mark prices where unknown).

        Parameters
        ----------
        funding : pandas.DataFrame or pandas.Series
            A funding frame (``rate[, mark_price]``) or a Series of rates; it is validated
            (:func:`~celeris.data.funding_schema.validate_funding`).
        exchange, symbol : str
            The market, e.g. ``"binance", "BTC/USDT:USDT"``.

        Returns
        -------
        pathlib.Path
            The file written (``<exchange>/<SYMBOL>/funding.parquet``).

        Raises
        ------
        DataError
            ``funding`` breaks a rule of a funding frame.
        StoreError
            The file could not be read or written; the previous file is left intact.
        """
        ex, sym = self.market_key(exchange, symbol)
        source = f"funding of {ex} {sym}"
        rows = _with_mark_price(validate_funding(funding, source))
        meta = {"exchange": ex, "symbol": sym, "timeframe": FUNDING, "version": 1}
        return self._merge_write(
            self.funding_path(ex, sym),
            rows,
            meta,
            lambda f: _with_mark_price(validate_funding(f, source)),
            keep_known=True,
        )

    def _merge_write(
        self,
        path: Path,
        rows: pd.DataFrame,
        meta: dict[str, Any],
        check: Any,
        *,
        keep_known: bool = False,
    ) -> Path:
        """Union ``rows`` with the stored file by time (``rows`` win), ``check`` it, write.

        With ``keep_known``, a NaN cell of a new row keeps the stored value of that time (a
        funding row saved without a mark price does not wipe the stored one).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc}") from exc
        with _locked(path):
            # temporary files of writers killed mid-write (a live writer's are kept)
            sweep_temp_files(path)
            if path.exists():
                old = self._read_all(path)
                if keep_known:
                    merged = rows.combine_first(old)[list(rows.columns)]
                else:
                    merged = pd.concat([old, rows])
                    merged = merged[~merged.index.duplicated(keep="last")]
                merged = merged.sort_index()
                rows = check(merged)
            _atomic_write(rows, path, meta)
        return path

    # -- reading -----------------------------------------------------------------------------

    def read(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        start: TimeLike = None,
        end: TimeLike = None,
    ) -> pd.DataFrame:
        """Read stored bars with ``start <= time < end`` through DuckDB.

        Parameters
        ----------
        exchange, symbol, timeframe : str
            The key.
        start, end : str, datetime or pandas.Timestamp, optional
            Half-open time range (naive means UTC); open-ended when omitted.

        Returns
        -------
        pandas.DataFrame
            A bar frame; empty (with the bar columns) when no stored bar is in the range.

        Raises
        ------
        StoreError
            Nothing is stored for the key (the message lists what is), or the file is unreadable.
        """
        path = self.path(exchange, symbol, timeframe)
        if not path.is_file():
            stored = [f"{e} {s} {t}" for e, s, t in self._keys()]
            wanted = " ".join(self.key(exchange, symbol, timeframe))
            raise StoreError(
                f"no bars stored for {wanted} (no file {path})"
                f"{did_you_mean(wanted, stored)}; stored: {', '.join(stored) or 'nothing'}; "
                f"fetch them with `celeris data download {exchange} {symbol} --timeframe "
                f"{timeframe} --since ...`"
            )
        out = _select(path, BAR_COLUMNS, start, end)
        return validate(out) if len(out) else out

    def read_funding(
        self, exchange: str, symbol: str, start: TimeLike = None, end: TimeLike = None
    ) -> pd.DataFrame:
        """Read a market's stored funding rates with ``start <= time < end``.

        Parameters
        ----------
        exchange, symbol : str
            The market, e.g. ``"binance", "BTC/USDT:USDT"``.
        start, end : str, datetime or pandas.Timestamp, optional
            Half-open time range (naive means UTC); open-ended when omitted.

        Returns
        -------
        pandas.DataFrame
            A funding frame with columns ``rate, mark_price``; empty when no stored funding
            time is in the range.

        Raises
        ------
        StoreError
            No funding is stored for the market (the message says how to download it), or
            the file is unreadable.
        """
        ex, sym = self.market_key(exchange, symbol)
        path = self.funding_path(ex, sym)
        if not path.is_file():
            stored = [f"{e} {s}" for e, s, t in self._keys() if t == FUNDING]
            raise StoreError(
                f"no funding rates stored for {ex} {sym} (no file {path})"
                f"{did_you_mean(f'{ex} {sym}', stored)}; stored: {', '.join(stored) or 'none'}; "
                f"fetch them with `celeris data download {ex} {sym} --funding --since ...`"
            )
        out = _select(path, FUNDING_COLUMNS, start, end)
        return validate_funding(out, f"{path}") if len(out) else out

    def funding_bounds(
        self, exchange: str, symbol: str
    ) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """Return the first and last stored funding times of a market, or None."""
        return _bounds(self.funding_path(exchange, symbol))

    def bounds(
        self, exchange: str, symbol: str, timeframe: str
    ) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """Return the first and last stored bar times of a key, or None if nothing is stored."""
        return _bounds(self.path(exchange, symbol, timeframe))

    def list(self) -> pd.DataFrame:
        """Return one row per stored key.

        Returns
        -------
        pandas.DataFrame
            Columns ``exchange, symbol, timeframe, rows, first, last, missing, path``;
            ``missing`` counts the bars absent between ``first`` and ``last`` for fixed
            timeframes (NA for months).
        """
        files = sorted(self.root.glob("*/*/*.parquet"))
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in LIST_COLUMNS})
        try:
            rows = (
                _duckdb()
                .execute(
                    "SELECT filename, count(*), min(time), max(time) "
                    "FROM read_parquet(?, filename=true) GROUP BY filename",
                    [[str(f) for f in files]],
                )
                .fetchall()
            )
        except Exception as exc:
            raise StoreError(f"cannot read the store at {self.root}: {exc}") from exc
        stats = {str(r[0]): r[1:] for r in rows}
        records: list[dict[str, Any]] = []
        for f in files:
            ex, sym, tf = _key_of(f)
            count, first, last = stats.get(str(f), (0, None, None))
            first_ts: Any = pd.NaT
            last_ts: Any = pd.NaT
            missing: Any = pd.NA
            if count and first is not None and last is not None:
                first_ts = pd.Timestamp(first).tz_convert("UTC")
                last_ts = pd.Timestamp(last).tz_convert("UTC")
                with contextlib.suppress(ConfigError):
                    step = timeframe_to_timedelta(tf)
                    missing = int((last_ts - first_ts) // step) + 1 - int(count)
            records.append(
                {
                    "exchange": ex,
                    "symbol": sym,
                    "timeframe": tf,
                    "rows": int(count),
                    "first": first_ts,
                    "last": last_ts,
                    "missing": missing,
                    "path": str(f),
                }
            )
        return pd.DataFrame.from_records(records, columns=list(LIST_COLUMNS))

    # -- helpers -----------------------------------------------------------------------------

    def _keys(self) -> Iterator[tuple[str, str, str]]:
        for f in sorted(self.root.glob("*/*/*.parquet")):
            yield _key_of(f)

    @staticmethod
    def _read_all(path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        return frame


def _with_mark_price(funding: pd.DataFrame) -> pd.DataFrame:
    """Return ``funding`` with both columns ``rate, mark_price`` (NaN where not known)."""
    if "mark_price" not in funding.columns:
        funding = funding.assign(mark_price=np.nan)
    return funding[list(FUNDING_COLUMNS)]


def _select(path: Path, columns: tuple[str, ...], start: TimeLike, end: TimeLike) -> pd.DataFrame:
    """Read ``columns`` of the rows with ``start <= time < end`` from a stored file (DuckDB)."""
    lo = to_utc(start, "start") if start is not None else None
    hi = to_utc(end, "end") if end is not None else None
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(f"start {lo} must be before end {hi}")
    where, params = [], [str(path)]
    for op, bound in ((">=", lo), ("<", hi)):
        if bound is not None:
            where.append(f"time {op} CAST(? AS TIMESTAMPTZ_NS)")
            params.append(bound.isoformat())
    sql = f"SELECT time, {', '.join(columns)} FROM read_parquet(?)"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time"
    try:
        out = _duckdb().execute(sql, params).df()
    except Exception as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    index = pd.DatetimeIndex(out.pop("time"), name="time")
    index = (index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")).as_unit(
        "ns"
    )
    out.index = index
    return out.astype(np.float64)


def _bounds(path: Path) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """Return the first and last ``time`` of a stored file, or None if it is absent or empty."""
    if not path.is_file():
        return None
    row = _duckdb().execute("SELECT min(time), max(time) FROM read_parquet(?)", [str(path)])
    first, last = row.fetchone() or (None, None)
    if first is None:
        return None
    return to_utc(pd.Timestamp(first), "first"), to_utc(pd.Timestamp(last), "last")  # type: ignore[arg-type]


def _key_of(path: Path) -> tuple[str, str, str]:
    """Return the key of a stored file from its metadata (falling back to its path)."""
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        info = json.loads(meta[_META_KEY])
        return info["exchange"], info["symbol"], info["timeframe"]
    except Exception:
        return path.parent.parent.name, path.parent.name.replace("-", "/", 1), path.stem


def _duckdb() -> Any:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    return con


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_parquet(bars: pd.DataFrame, target: str, meta: dict[str, Any]) -> None:
    """Write ``bars`` as Parquet to ``target`` with Celeris metadata in the schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(bars, preserve_index=True)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[_META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_meta)
    pq.write_table(table, target, compression="zstd", row_group_size=1_000_000)


def _atomic_write(bars: pd.DataFrame, path: Path, meta: dict[str, Any]) -> None:
    """Write through a temporary sibling, fsync, ``os.replace`` (:func:`atomic_path`)."""
    try:
        with atomic_path(path) as tmp:
            _write_parquet(bars, str(tmp), meta)
    except Exception as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot write {path}: {exc}; the previous file is unchanged") from exc

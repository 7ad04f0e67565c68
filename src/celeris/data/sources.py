"""Load bars from files, bundled samples and the local store: :func:`load`."""

from __future__ import annotations

import csv
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.data.schema import (
    BAR_COLUMNS,
    NanPolicy,
    check_nan_policy,
    oldest_first,
    validate,
)
from celeris.errors import DataError, did_you_mean

SAMPLES: dict[str, str] = {
    "sp500": "S&P 500 index, daily OHLCV 1999-01-04 to 2018-12-31 (5,031 bars), from the arch package",
    "nasdaq": "NASDAQ Composite index, daily OHLCV 1999-01-04 to 2018-12-31 (5,031 bars), from the arch package",
}
"""Bundled real data sets for ``load("sample:NAME")``, each with a one-line description."""

# Normalised spelling (lower case, no spaces, dots, dashes or underscores) -> bar column.
# 'adjclose' is deliberately absent: an adjusted close is not the traded close.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(("open", "o", "openprice", "opening", "first"), "open"),
    **dict.fromkeys(("high", "h", "highprice", "max"), "high"),
    **dict.fromkeys(("low", "l", "lowprice", "min"), "low"),
    **dict.fromkeys(("close", "c", "closeprice", "closing", "last"), "close"),
    **dict.fromkeys(("volume", "vol", "v", "basevolume", "qty", "quantity"), "volume"),
}
# 'price' is the close only when no close column exists (investing.com exports: Date, Price, Open...).
_CLOSE_FALLBACK = "price"
_TIME_NAMES = (
    "time",
    "timestamp",
    "date",
    "datetime",
    "opentime",
    "ts",
    "t",
    "datetimeutc",
    "timeutc",
    "dateutc",
    "unix",
    "unixtimestamp",
    "index",
)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt", ".tsv")
_UTC_SUFFIX = re.compile(r"\s*(UTC|GMT)$", re.IGNORECASE)


def _norm(name: Any) -> str:
    return re.sub(r"[\s._\-()]+", "", str(name)).lower()


def load(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    nan_policy: NanPolicy = "error",
    keep_extra: bool = False,
) -> pd.DataFrame:
    """Load bars from a file, a bundled sample or the local store, and validate them.

    Sources:

    - ``path.csv`` (also ``.csv.gz``/``.bz2``/``.zip``/``.xz``, ``.tsv``, ``.txt``) and
      ``path.parquet``/``path.pq``;
    - ``sample:NAME``: a real data set listed in :data:`SAMPLES` (nothing is downloaded);
    - ``store:EXCHANGE/SYMBOL/TIMEFRAME``, e.g. ``store:binance/BTC/USDT/1h``, read from the
      local store (see :class:`celeris.data.Store`);
    - a DataFrame, to which the same column recognition is applied.

    Column recognition is case-insensitive and ignores spaces, dots, dashes and underscores:
    ``Open/o``, ``High/h``, ``Low/l``, ``Close/c`` (``Price`` only when there is no close
    column), ``Volume/vol/v``. ``Adj Close`` is *not* the close. Unrecognised columns (``Adj
    Close``, trade counts...) are dropped unless ``keep_extra=True``; this is the only place
    Celeris drops columns.

    Time comes from a column named ``time``, ``timestamp``, ``date``, ``datetime``,
    ``open_time`` (any case), else from a ``DatetimeIndex``, else from the first column. It may
    be ISO 8601 text, datetimes, or epoch numbers whose unit (s, ms, us or ns) is detected from
    their magnitude. Time-zone-aware values are converted to UTC; naive values are taken to be
    UTC already. A file in strictly descending time order (as many vendors export) is reversed;
    any other disorder is an error, as for :func:`validate`.

    Parameters
    ----------
    source : str, os.PathLike or pandas.DataFrame
        Where the bars are.
    nan_policy : {"error", "ffill", "drop"}
        Passed to :func:`validate`.
    keep_extra : bool
        Keep unrecognised columns (after the bar columns) instead of dropping them.

    Returns
    -------
    pandas.DataFrame
        A validated bar frame.

    Raises
    ------
    DataError
        The file is missing or unreadable, or the bars break a rule.
    """
    check_nan_policy(nan_policy)
    if isinstance(source, pd.DataFrame):
        return _from_frame(source, "DataFrame", nan_policy, keep_extra)
    text = os.fspath(source)
    if isinstance(text, bytes):  # pragma: no cover - os.PathLike[bytes]
        text = text.decode()
    if text.startswith("sample:"):
        return _from_frame(_read_sample(text[len("sample:") :]), text, nan_policy, keep_extra)
    if text.startswith("store:"):
        from celeris.data.store import Store

        exchange, symbol, timeframe = parse_store_key(text[len("store:") :])
        bars = Store().read(exchange, symbol, timeframe)
        return validate(bars if keep_extra else bars[list(BAR_COLUMNS)], nan_policy=nan_policy)
    return _from_frame(_read_file(Path(text)), text, nan_policy, keep_extra)


def parse_store_key(key: str) -> tuple[str, str, str]:
    """Split ``EXCHANGE/SYMBOL/TIMEFRAME`` (``binance/BTC/USDT/1h``) into its three parts."""
    parts = [p for p in key.split("/") if p]
    if len(parts) < 3:
        raise DataError(
            f"bad store source 'store:{key}'; write store:EXCHANGE/SYMBOL/TIMEFRAME, "
            "e.g. store:binance/BTC/USDT/1h"
        )
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def _read_sample(name: str) -> pd.DataFrame:
    if name not in SAMPLES:
        raise DataError(
            f"unknown sample {name!r}{did_you_mean(name, SAMPLES)}; "
            f"available: {', '.join('sample:' + s for s in SAMPLES)}"
        )
    import importlib

    module = importlib.import_module(f"arch.data.{name}")
    frame: pd.DataFrame = module.load()
    return frame


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def check_regular_file(path: str | os.PathLike[str], what: str = "a file") -> Path:
    """Return ``path`` if it names a regular file (links followed), else raise a DataError.

    Reading a FIFO blocks until a writer comes and ``/dev/zero`` never ends, so every input
    file Celeris reads is checked first. ``what`` names the expected content in the message.
    """
    out = Path(path)
    try:
        mode = out.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"no such file: {out}") from None
    except OSError as exc:
        raise DataError(f"cannot read {out}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{out} is {_file_kind(mode)}, not {what}")
    return out


def _read_file(path: Path) -> pd.DataFrame:
    check_regular_file(path, "a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"bar rule 'frame is not empty' broken: {path} is an empty file")
    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(path)
        if name.endswith(_CSV_SUFFIXES):
            sep = "\t" if name.endswith(".tsv") else None
            return pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")
    except csv.Error as exc:  # the delimiter sniffer: a blank or one-column file
        raise DataError(f"cannot read {path} as CSV: {exc} (is it empty or blank?)") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    raise DataError(
        f"cannot tell the format of {path}; use a .csv, .csv.gz, .parquet or .pq file name"
    )


def _from_frame(
    raw: pd.DataFrame, origin: str, nan_policy: NanPolicy, keep_extra: bool
) -> pd.DataFrame:
    if len(raw) == 0:
        raise DataError(f"bar rule 'frame is not empty' broken: {origin} has no rows")
    frame, time = _split_time(raw, origin)
    mapping = _recognise_columns(list(frame.columns), origin)
    bars = pd.DataFrame(
        {target: frame[source].to_numpy() for target, source in mapping.items()},
        index=pd.DatetimeIndex(time, name="time"),
    )
    bars = bars[[c for c in BAR_COLUMNS if c in bars.columns]]
    if keep_extra:
        used = set(mapping.values())
        for c in frame.columns:
            if c not in used:
                bars[c] = frame[c].to_numpy()
    return validate(oldest_first(bars), nan_policy=nan_policy)


def _recognise_columns(columns: list[Any], origin: str) -> dict[str, Any]:
    found: dict[str, list[Any]] = {}
    for c in columns:
        target = _ALIASES.get(_norm(c))
        if target is not None:
            found.setdefault(target, []).append(c)
    if "close" not in found:
        price = [c for c in columns if _norm(c) == _CLOSE_FALLBACK]
        if price:
            found["close"] = price
    for target, sources in found.items():
        if len(sources) > 1:
            raise DataError(
                f"{origin}: columns {sources} all look like {target!r}; keep one of them"
            )
    missing = [c for c in BAR_COLUMNS if c not in found]
    if missing:
        names = [str(c) for c in columns]
        hints = []
        for m in missing:
            if m == "close" and any(_norm(c) == "adjclose" for c in columns):
                hints.append("'close' ('Adj Close' is an adjusted price, not the close)")
            else:
                hints.append(f"{m!r}{did_you_mean(m, [n.lower() for n in names])}")
        raise DataError(
            f"bar rule 'bar columns exist' broken: {origin} has no column for "
            f"{', '.join(hints)}; found columns {names}"
        )
    return {target: sources[0] for target, sources in found.items()}


def _split_time(raw: pd.DataFrame, origin: str) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Find the time column (or index) and return (frame without it, UTC index)."""
    by_norm = {_norm(c): c for c in raw.columns}
    for name in _TIME_NAMES:
        if name in by_norm:
            col = by_norm[name]
            return raw.drop(columns=[col]), parse_times(raw[col], f"{origin} column {col!r}")
    if isinstance(raw.index, pd.DatetimeIndex) or (
        raw.index.name is not None and _norm(raw.index.name) in _TIME_NAMES
    ):
        return raw, parse_times(raw.index.to_series(), f"{origin} index")
    first = raw.columns[0]
    if _norm(first) in _ALIASES or _norm(first) == _CLOSE_FALLBACK:
        raise DataError(
            f"{origin}: no time column (looked for {', '.join(_TIME_NAMES[:5])}, open_time "
            f"or a datetime index); found columns {[str(c) for c in raw.columns]}"
        )
    return raw.drop(columns=[first]), parse_times(raw[first], f"{origin} column {first!r}")


def parse_times(values: pd.Series | pd.Index, what: str) -> pd.DatetimeIndex:
    """Parse timestamps to a UTC ``DatetimeIndex`` (naive taken as UTC, epoch unit by magnitude).

    Parameters
    ----------
    values : pandas.Series or pandas.Index
        ISO 8601 strings, datetimes (naive or aware) or epoch numbers in s, ms, us or ns.
    what : str
        How to name the values in an error message.

    Returns
    -------
    pandas.DatetimeIndex
        ``datetime64[ns, UTC]``.
    """
    s = pd.Series(values).reset_index(drop=True)
    try:
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out = pd.to_datetime(s, utc=True)
        elif pd.api.types.is_bool_dtype(s.dtype):
            raise DataError(f"{what} holds booleans, not timestamps")
        elif pd.api.types.is_numeric_dtype(s.dtype):
            out = _parse_epoch(s, what)
        else:
            out = _parse_text(s, what)
    except (ValueError, OverflowError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {what} as timestamps: {exc}") from exc
    index = pd.DatetimeIndex(out).as_unit("ns")
    if index.hasnans:
        pos = int(np.flatnonzero(index.isna())[0])
        raise DataError(f"{what} has a missing timestamp at row {pos}")
    return index


def _parse_epoch(s: pd.Series, what: str) -> pd.Series:
    arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(arr).any():
        pos = int(np.flatnonzero(np.isnan(arr))[0])
        raise DataError(f"{what} has a missing timestamp at row {pos}")
    # Magnitude thresholds: 1e11 s is the year 5138, 1e11 ms is 1973; so values above 1e11 are
    # not seconds, above 1e14 not ms, above 1e17 not us. Data before 1973 in ms is misread.
    biggest = float(np.abs(arr).max())
    unit: Any = (
        "s" if biggest < 1e11 else "ms" if biggest < 1e14 else "us" if biggest < 1e17 else "ns"
    )
    if unit == "ns" or (unit != "s" and pd.api.types.is_integer_dtype(s.dtype)):
        return pd.to_datetime(s.astype("int64"), unit=unit, utc=True)
    return pd.to_datetime(s, unit=unit, utc=True)


def _parse_text(s: pd.Series, what: str) -> pd.Series:
    text = s.astype("string").str.strip()
    if text.isna().any():
        pos = int(np.flatnonzero(text.isna().to_numpy())[0])
        raise DataError(f"{what} has a missing timestamp at row {pos}")
    if text.str.fullmatch(r"-?\d+(\.\d+)?").all():
        return _parse_epoch(pd.to_numeric(text), what)
    text = text.str.replace(_UTC_SUFFIX, "+00:00", regex=True)
    try:
        return pd.to_datetime(text, utc=True, format="ISO8601")
    except ValueError:
        pass
    bad = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").isna().to_numpy()
    pos = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    raise DataError(
        f"cannot read {what} as timestamps: {text.iloc[pos]!r} at row {pos} is not ISO 8601 "
        "(e.g. 2024-01-31 13:00:00+00:00) or an epoch number; ambiguous formats such as "
        "01/02/2024 are refused"
    )

"""Perpetual-futures funding rates: read them (a CSV file or the store), align them to bars.

:func:`load_funding` reads a CSV file or the funding rates the local store keeps beside the bars
(``store:EXCHANGE/SYMBOL/funding``, written by :func:`celeris.data.download_funding`);
:func:`align_funding` puts funding rates on a bar index, zero between funding times, as a perp
backtest consumes them. The funding frame itself (columns, bounds) is
:mod:`celeris.data.funding_schema`.

The CSV file has a header and exactly the columns ``timestamp,rate``; ``timestamp`` is ISO 8601
(naive means UTC) or epoch seconds/ms, strictly increasing; ``rate`` is the funding rate of
that interval as a fraction (``0.0001`` = 0.01%)::

    timestamp,rate
    2024-01-01T00:00:00Z,0.0001
    2024-01-01T08:00:00Z,0.000085

Bad input raises :class:`~celeris.errors.DataError` naming the file, the line and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from celeris.data.funding_schema import MAX_ABS_RATE, first_bad_rate, validate_funding
from celeris.data.sources import check_regular_file, parse_store_key, parse_times
from celeris.data.store import FUNDING, Store
from celeris.errors import DataError

__all__ = ["align_funding", "load_funding"]


def load_funding(path: str | Path) -> pd.Series:
    """Read funding rates from a CSV file with the columns ``timestamp,rate``, or from the store.

    ``store:EXCHANGE/SYMBOL/funding`` (e.g. ``store:binance/BTC/USDT:USDT/funding``) reads the
    rates the local store keeps beside that market's bars (:meth:`Store.read_funding`; the mark
    prices stay there). Anything else is a CSV file path.

    In a CSV file, ``timestamp`` is ISO 8601 (naive = UTC, ``Z`` accepted) or an epoch number (s or ms,
    told apart by magnitude), strictly increasing; ``rate`` is a fraction per funding interval
    (``0.0001`` = 0.01%). Lines are counted as in an editor: the header is line 1.

    Parameters
    ----------
    path : str or Path
        The CSV file, or ``store:EXCHANGE/SYMBOL/funding``.

    Returns
    -------
    pandas.Series
        float64 rates named ``rate`` on a UTC DatetimeIndex named ``time``.

    Raises
    ------
    DataError
        Naming the file, the line and the problem: a missing file or one that is not a regular
        file (a directory, a FIFO), other columns, an unreadable
        timestamp, a duplicate or out-of-order timestamp, a NaN or non-numeric rate, or a rate
        beyond ``+-MAX_ABS_RATE`` (10%) per interval, the bound of every funding frame (almost
        surely percent written as a fraction); a store
        source that does not end in ``/funding``.
    StoreError
        No funding rates are stored for that market.
    """
    if isinstance(path, str) and path.startswith("store:"):
        return _from_store(path)
    path = check_regular_file(path, "a funding CSV file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    columns = [str(c).strip().lower() for c in raw.columns]
    if sorted(columns) != ["rate", "timestamp"]:
        raise DataError(
            f"{path}: a funding file has exactly the columns timestamp,rate; found {','.join(map(str, raw.columns))}"
        )
    raw.columns = pd.Index(columns)
    if raw.empty:
        raise DataError(f"{path}: no funding rows after the header")
    text = raw["timestamp"].str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        index = parse_times(numeric, f"{path} column 'timestamp'")
    else:
        parsed = pd.to_datetime(
            text.str.replace(r"[zZ]$", "+00:00", regex=True),
            utc=True,
            format="ISO8601",
            errors="coerce",
        )
        if parsed.isna().any():
            pos = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise DataError(
                f"{path}, line {pos + 2}: timestamp {text.iloc[pos]!r} is not ISO 8601 "
                "(e.g. 2024-01-01T08:00:00Z) or an epoch number"
            )
        index = pd.DatetimeIndex(parsed).as_unit("ns")
    rates = pd.to_numeric(raw["rate"].str.strip(), errors="coerce").to_numpy(np.float64)
    found = first_bad_rate(rates)
    if found is not None and not found[1]:
        pos = found[0]
        raise DataError(
            f"{path}, line {pos + 2}: rate {raw['rate'].iloc[pos]!r} is not a finite number"
        )
    if found is not None:
        pos = found[0]
        raise DataError(
            f"{path}, line {pos + 2}: rate {rates[pos]} is beyond +-{MAX_ABS_RATE} "
            f"({MAX_ABS_RATE:.0%}) per interval, more than any exchange's funding cap; rates "
            "are fractions (0.0001 = 0.01%)"
        )
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        pos = int(np.flatnonzero(steps <= 0)[0]) + 1
        problem = "duplicates" if steps[pos - 1] == 0 else "is earlier than"
        raise DataError(
            f"{path}, line {pos + 2}: timestamp {index[pos]} {problem} the previous one "
            f"({index[pos - 1]}, line {pos + 1}); timestamps must be strictly increasing"
        )
    return pd.Series(rates, index=index.rename("time"), name="rate")


def _from_store(source: str) -> pd.Series:
    exchange, symbol, last = parse_store_key(source[len("store:") :])
    if last.lower() != FUNDING:
        raise DataError(
            f"bad funding source {source!r}; write store:EXCHANGE/SYMBOL/funding, "
            "e.g. store:binance/BTC/USDT:USDT/funding"
        )
    rates = Store().read_funding(exchange, symbol)["rate"]
    return rates.rename("rate")


def align_funding(
    funding: pd.Series | pd.DataFrame, bars: pd.DatetimeIndex | pd.DataFrame
) -> pd.Series | pd.DataFrame:
    """Put funding rates on a bar index: the rate at each funding time, 0 between them.

    A funding time must be a bar time: the payment is charged on the bar labelled with the
    funding time (bars are labelled by their open, so the bar that starts when funding
    settles). That is what a perp backtest reads: ``notional x rate`` on those bars, nothing
    on the others.

    Parameters
    ----------
    funding : pandas.Series or pandas.DataFrame
        Rates on a UTC index (:func:`load_funding`, :func:`~celeris.data.synthetic_funding`),
        or a funding frame with ``rate`` and optionally ``mark_price``
        (:func:`~celeris.data.download_funding`, :meth:`Store.read_funding`).
    bars : pandas.DatetimeIndex or pandas.DataFrame
        The bar index (or bars, whose index is used): UTC, strictly increasing.

    Returns
    -------
    pandas.Series or pandas.DataFrame
        On the bar index: a Series named ``rate`` for a Series, else a frame whose ``rate`` is
        0.0 between funding times and whose ``mark_price`` (when given) is NaN there.

    Raises
    ------
    DataError
        Naming the timestamp: a funding time before the first or after the last bar (slice the
        funding to the bars first), or one that falls between two bars (the bars are coarser
        than the funding interval, or a bar is missing); a bar index that is not UTC or not
        strictly increasing; a funding frame that breaks a rule of
        :func:`~celeris.data.funding_schema.validate_funding`.
    """
    frame = validate_funding(funding, "funding")
    index = bars.index if isinstance(bars, pd.DataFrame) else bars
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        raise DataError(f"align_funding: the bars need a UTC DatetimeIndex, got {index!r:.80}")
    index = index.as_unit("ns")
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        pos = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(
            f"align_funding: bar time {index[pos]} is not after the one before ({index[pos - 1]})"
        )
    if len(frame) and len(index) == 0:
        raise DataError(f"align_funding: no bars to put funding time {frame.index[0]} on")
    _check_on_bars(pd.DatetimeIndex(frame.index), index)
    positions = index.get_indexer(frame.index)
    rate = np.zeros(len(index))
    rate[positions] = frame["rate"].to_numpy()
    if isinstance(funding, pd.Series):
        return pd.Series(rate, index=index.rename("time"), name="rate")
    out = pd.DataFrame({"rate": rate}, index=index.rename("time"))
    if "mark_price" in frame.columns:
        mark = np.full(len(index), np.nan)
        mark[positions] = frame["mark_price"].to_numpy()
        out["mark_price"] = mark
    return out


def _check_on_bars(times: pd.DatetimeIndex, index: pd.DatetimeIndex) -> None:
    """Raise a DataError naming the first funding time outside the bars or between two."""
    if not len(times):
        return
    first, last = index[0], index[-1]
    outside = (times < first) | (times > last)
    if outside.any():
        t = times[np.flatnonzero(outside)[0]]
        raise DataError(
            f"align_funding: funding time {t} is outside the bars ({first} to {last}); "
            "slice the funding first: funding.loc[bars.index[0]:bars.index[-1]]"
        )
    missing = index.get_indexer(times) < 0
    if missing.any():
        t = times[np.flatnonzero(missing)[0]]
        pos = int(index.searchsorted(t))
        raise DataError(
            f"align_funding: funding time {t} falls between the bars at {index[pos - 1]} and "
            f"{index[pos]}; funding is charged on the bar that opens at the funding time "
            "(bars coarser than the funding interval, or a missing bar)"
        )

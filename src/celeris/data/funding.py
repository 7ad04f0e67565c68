"""Perpetual-futures funding rates from a user's CSV file.

The file has a header and exactly the columns ``timestamp,rate``; ``timestamp`` is ISO 8601
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

from celeris.data.sources import check_regular_file, parse_times
from celeris.errors import DataError

__all__ = ["load_funding"]


def load_funding(path: str | Path) -> pd.Series:
    """Read funding rates from a CSV file with the columns ``timestamp,rate``.

    ``timestamp`` is ISO 8601 (naive = UTC, ``Z`` accepted) or an epoch number (s or ms,
    told apart by magnitude), strictly increasing; ``rate`` is a fraction per funding interval
    (``0.0001`` = 0.01%). Lines are counted as in an editor: the header is line 1.

    Parameters
    ----------
    path : str or Path
        The CSV file.

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
        of 100% or more per interval (almost surely percent written as a fraction).
    """
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
    bad = ~np.isfinite(rates)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}, line {pos + 2}: rate {raw['rate'].iloc[pos]!r} is not a finite number"
        )
    big = np.abs(rates) >= 1.0
    if big.any():
        pos = int(np.flatnonzero(big)[0])
        raise DataError(
            f"{path}, line {pos + 2}: rate {rates[pos]} is 100% or more per interval; rates are "
            "fractions (0.0001 = 0.01%)"
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

"""The funding-rate frame: its columns, its bounds and its validation (``schema.py`` for bars).

A funding frame is a pandas DataFrame on a UTC ``DatetimeIndex`` named ``time`` holding one row
per funding time (the instant the exchange settles funding: 00:00, 08:00 and 16:00 UTC for
most Binance perpetuals, every 4 or 1 hours for some symbols), sorted and unique, with float64
columns:

- ``rate``: the funding rate of that interval as a fraction (``0.0001`` = 0.01%); a long pays
  ``notional x rate``, a short receives it;
- ``mark_price`` (optional): the mark price the exchange settled at, NaN where it did not say.

It lives in its own module so that the store (which validates what it writes) and the readers
(:mod:`celeris.data.funding`, which also reads the store) import it without an import cycle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from celeris.errors import DataError

__all__ = ["FUNDING_COLUMNS", "MAX_ABS_RATE", "funding_interval", "validate_funding"]

FUNDING_COLUMNS = ("rate", "mark_price")

MAX_ABS_RATE = 0.1
"""Largest ``|rate|`` per interval accepted from an exchange, the store or a generator.

Exchanges clamp every funding rate to a published cap of a few percent per interval at most
(Binance's funding formula ends in ``clamp(rate, -cap, cap)`` with a per-symbol cap); 10% per
interval is beyond every cap, so a larger value is a unit mistake (percent written as a
fraction) or garbage, never a funding rate. CSV files read by :func:`load_funding` keep their
own, older bound of 100%.
"""


def validate_funding(frame: pd.DataFrame | pd.Series, source: str = "funding") -> pd.DataFrame:
    """Check a funding frame and return it as float64 columns ``rate[, mark_price]``.

    Rules, in order, each error naming ``source``, the rule, the column and the first bad
    timestamp: a UTC ``DatetimeIndex``; strictly increasing times; only the columns
    ``rate`` and ``mark_price``, with ``rate`` present; ``rate`` finite and ``|rate| <=``
    :data:`MAX_ABS_RATE`; ``mark_price`` NaN (unknown) or finite and positive.

    Parameters
    ----------
    frame : pandas.DataFrame or pandas.Series
        A funding frame, or a Series of rates (taken as the ``rate`` column).
    source : str
        Where the data came from, for the messages (``"binance BTC/USDT:USDT"``, a path).

    Returns
    -------
    pandas.DataFrame
        A copy with float64 columns in the order of :data:`FUNDING_COLUMNS` and the index
        named ``time``.

    Raises
    ------
    DataError
        A rule is broken.
    """
    if isinstance(frame, pd.Series):
        frame = frame.rename("rate").to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{source}: funding must be a DataFrame or Series, got {type(frame).__name__}"
        )
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        kind = f"tz {index.tz}" if isinstance(index, pd.DatetimeIndex) else type(index).__name__
        raise DataError(f"{source}: funding needs a UTC DatetimeIndex, got {kind}")
    _check_increasing(index, source)
    extra = [str(c) for c in frame.columns if c not in FUNDING_COLUMNS]
    if extra or "rate" not in frame.columns:
        raise DataError(
            f"{source}: funding has the column rate and optionally mark_price; "
            f"found {', '.join(map(str, frame.columns)) or 'no columns'}"
        )
    out = pd.DataFrame(index=index.rename("time").as_unit("ns"))
    for column in (c for c in FUNDING_COLUMNS if c in frame.columns):
        try:
            values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: column {column!r} is not numeric ({exc})") from None
        out[column] = values
    _check_values(out, source)
    return out


def _check_increasing(index: pd.DatetimeIndex, source: str) -> None:
    steps = np.diff(index.as_unit("ns").asi8)
    if (steps <= 0).any():
        pos = int(np.flatnonzero(steps <= 0)[0]) + 1
        problem = "duplicates" if steps[pos - 1] == 0 else "is earlier than"
        raise DataError(
            f"{source}: funding time {index[pos]} {problem} the one before ({index[pos - 1]}); "
            "funding times must be strictly increasing"
        )


def first_bad_rate(rates: np.ndarray) -> tuple[int, bool] | None:
    """``(position, finite)`` of the first rate that is not finite (``finite`` False) or beyond
    :data:`MAX_ABS_RATE` (``finite`` True); None when every rate is good. Callers name the
    place their own way (a CSV line, a timestamp)."""
    bad = ~np.isfinite(rates)
    if bad.any():
        return int(np.flatnonzero(bad)[0]), False
    big = np.abs(rates) > MAX_ABS_RATE
    if big.any():
        return int(np.flatnonzero(big)[0]), True
    return None


def _check_values(out: pd.DataFrame, source: str) -> None:
    rate = out["rate"].to_numpy()
    found = first_bad_rate(rate)
    if found is not None and not found[1]:
        pos = found[0]
        raise DataError(
            f"{source}: rate at {out.index[pos]} is {float(rate[pos])}, not a finite number"
        )
    if found is not None:
        pos = found[0]
        raise DataError(
            f"{source}: rate at {out.index[pos]} is {float(rate[pos])!r}, beyond +-{MAX_ABS_RATE} per "
            "interval (no exchange's funding cap is that large; rates are fractions, "
            "0.0001 = 0.01%)"
        )
    if "mark_price" in out.columns:
        mark = out["mark_price"].to_numpy()
        bad = ~np.isnan(mark) & ~(np.isfinite(mark) & (mark > 0))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source}: mark_price at {out.index[pos]} is {float(mark[pos])}; a mark price is "
                "positive and finite (NaN when unknown)"
            )


def funding_interval(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """Return the most common spacing of funding times (the shortest on a tie), or None.

    Binance settles most perpetuals every 8 hours, some every 4 or 1 hours, and has moved
    symbols from one interval to another; the most common spacing is the interval the gaps
    are measured in (after a change from 8 h to 4 h, the 8 h part shows as gaps).
    """
    if len(index) < 2:
        return None
    steps = np.diff(pd.DatetimeIndex(index).as_unit("ns").asi8)
    values, counts = np.unique(steps, return_counts=True)
    best = values[counts == counts.max()].min()  # np.unique sorts: the shortest of the modes
    return pd.Timedelta(int(best), unit="ns")

"""Timeframe strings (``1m``, ``4h``, ``1d``: the exchange spelling) and gap detection."""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from celeris.errors import ConfigError

_TIMEFRAME = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


class Gap(NamedTuple):
    """A run of missing bars: ``start`` and ``end`` are the first and last missing bar times."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing: int


def timeframe_to_timedelta(timeframe: str) -> pd.Timedelta:
    """Return the fixed duration of an exchange timeframe such as ``"1m"``, ``"4h"`` or ``"1w"``.

    Parameters
    ----------
    timeframe : str
        ``<n><unit>`` with unit ``s``, ``m`` (minutes), ``h``, ``d`` or ``w``. Months (``1M``)
        have no fixed length and are refused.

    Returns
    -------
    pandas.Timedelta
        The bar length.
    """
    m = _TIMEFRAME.match(str(timeframe))
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(
            f"bad timeframe {timeframe!r}; write <n><unit> with unit s, m, h, d or w, e.g. '1m', '4h', '1d'"
        )
    if m.group(2) == "M":
        raise ConfigError(f"timeframe {timeframe!r} (months) has no fixed length")
    return pd.Timedelta(seconds=int(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def check_timeframe(timeframe: str) -> str:
    """Return ``timeframe`` if it is a well-formed exchange timeframe (months allowed)."""
    m = _TIMEFRAME.match(str(timeframe))
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(
            f"bad timeframe {timeframe!r}; write <n><unit> with unit s, m, h, d, w or M, "
            "e.g. '1m', '4h', '1d'"
        )
    return timeframe


def find_gaps(df: pd.DataFrame | pd.DatetimeIndex, timeframe: str | pd.Timedelta) -> list[Gap]:
    """List the runs of bars missing between the first and the last bar.

    Parameters
    ----------
    df : pandas.DataFrame or pandas.DatetimeIndex
        Bars (only the index is used), sorted.
    timeframe : str or pandas.Timedelta
        The bar length: ``"1m"``, ``"1h"``... or a Timedelta.

    Returns
    -------
    list of Gap
        ``Gap(start, end, missing)`` per run, oldest first; empty when the bars are contiguous.
        Bars off the ``first + k * timeframe`` grid are not gaps and are not reported here.
    """
    step = timeframe if isinstance(timeframe, pd.Timedelta) else timeframe_to_timedelta(timeframe)
    index = df.index if isinstance(df, pd.DataFrame) else df
    if len(index) < 2:
        return []
    t = pd.DatetimeIndex(index).as_unit("ns").asi8
    step_ns = int(step.value)
    diff = np.diff(t)
    where = np.flatnonzero(diff > step_ns)
    tz = pd.DatetimeIndex(index).tz
    gaps = []
    for i in where:
        missing = int((diff[i] - 1) // step_ns)
        if missing <= 0:
            continue
        start = pd.Timestamp(int(t[i]) + step_ns, tz=tz)
        end = pd.Timestamp(int(t[i]) + missing * step_ns, tz=tz)
        gaps.append(Gap(start, end, missing))
    return gaps


def gaps_frame(gaps: list[Gap]) -> pd.DataFrame:
    """Return gaps as a DataFrame with columns ``start, end, missing``."""
    return pd.DataFrame(
        {
            "start": [g.start for g in gaps],
            "end": [g.end for g in gaps],
            "missing": np.array([g.missing for g in gaps], dtype=np.int64),
        }
    )

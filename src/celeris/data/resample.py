"""Bars to coarser bars (:func:`resample`) and trades to bars (:func:`bars_from_ticks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from celeris.data.schema import BAR_COLUMNS, check_utc_index, validate
from celeris.errors import ConfigError, DataError

_OHLCV_AGG: dict[str, str] = {
    "open": "first",
    "high": "max",
    "low": "min",
    "close": "last",
    "volume": "sum",
}
_SIZE_NAMES = ("size", "amount", "qty", "quantity", "volume")
_AGGS = ("first", "last", "max", "min", "sum", "mean", "median", "count")


def _to_offset(rule: str | pd.DateOffset | pd.Timedelta) -> Any:
    try:
        offset = pd.tseries.frequencies.to_offset(rule)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bad resample rule {rule!r}: use a pandas frequency such as '5min', '1h', '4h', "
            "'1D', 'W' or 'MS'"
        ) from exc
    if offset is None:
        raise ConfigError(f"bad resample rule {rule!r}")
    name = type(offset).__name__
    if name.endswith("End"):
        raise ConfigError(
            f"resample rule {rule!r} is anchored at period ends; bars are labelled by their "
            f"start, so use the start-anchored rule (e.g. 'MS' for months, 'QS', 'YS')"
        )
    if isinstance(offset, pd.offsets.Tick) and offset.n <= 0:
        raise ConfigError(f"resample rule {rule!r} must be positive")
    return offset


def resample(
    df: pd.DataFrame,
    rule: str | pd.DateOffset | pd.Timedelta,
    *,
    how: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Aggregate bars into coarser bars: open first, high max, low min, close last, volume sum.

    Bins are left-closed and labelled by their start (``closed="left", label="left"``), with
    pandas' default origin (midnight of the first day) for fixed rules, so ``"4h"`` bars start
    at 00:00, 04:00... UTC. Bins without any input bar are dropped, not filled: a missing hour
    stays missing (use :func:`celeris.data.find_gaps` to list them). Upsampling (a rule finer
    than the input's bar spacing) is refused.

    Parameters
    ----------
    df : pandas.DataFrame
        A bar frame; it is validated first.
    rule : str, pandas.DateOffset or pandas.Timedelta
        Target bar length: ``"5min"``, ``"1h"``, ``"1D"``, ``"W"`` (weeks from Sunday),
        ``"MS"`` (calendar months). End-anchored rules (``"ME"``) are refused.
    how : mapping of str to str, optional
        Aggregation of extra columns, e.g. ``{"trades": "sum"}``; one of ``first``, ``last``,
        ``max``, ``min``, ``sum``, ``mean``, ``median``, ``count``. Every extra column needs one;
        the bar columns cannot be overridden.

    Returns
    -------
    pandas.DataFrame
        A validated bar frame.

    Raises
    ------
    ConfigError
        The rule is invalid, end-anchored or finer than the data, or ``how`` is incomplete.
    DataError
        ``df`` is not a valid bar frame.
    """
    offset = _to_offset(rule)
    bars = validate(df)
    extras = [c for c in bars.columns if c not in BAR_COLUMNS]
    how = dict(how or {})
    agg = dict(_OHLCV_AGG)
    for c, fn in how.items():
        if c in BAR_COLUMNS:
            raise ConfigError(f"how: the aggregation of bar column {c!r} is fixed")
        if c not in extras:
            raise ConfigError(f"how: no extra column {c!r}; extra columns are {extras}")
        if fn not in _AGGS:
            raise ConfigError(f"how: unknown aggregation {fn!r} for {c!r}; choose one of {_AGGS}")
        agg[c] = fn
    unset = [c for c in extras if c not in how]
    if unset:
        raise ConfigError(
            f"extra column(s) {unset} need an aggregation: pass how={{{unset[0]!r}: 'sum'}} "
            "(or 'last', 'mean', ...), or drop them first"
        )
    if isinstance(offset, pd.offsets.Tick) and len(bars) > 1:
        spacing = pd.Timedelta(int(np.min(np.diff(pd.DatetimeIndex(bars.index).asi8))), unit="ns")
        if pd.Timedelta(offset) < spacing:
            raise ConfigError(
                f"resample rule {rule!r} is finer than the bar spacing ({spacing}); "
                "upsampling would invent bars"
            )
    grouped = bars.resample(offset, closed="left", label="left")
    out = grouped.agg(agg)
    counts = grouped["close"].count()
    out = out.loc[counts.to_numpy() > 0]
    out.index.name = "time"
    return validate(out)


def _tick_arrays(ticks: pd.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, str]:
    if not isinstance(ticks, pd.DataFrame):
        raise DataError(f"ticks must be a DataFrame, got {type(ticks).__name__}")
    if len(ticks) == 0:
        raise DataError("tick rule 'ticks are not empty' broken: the frame has no rows")
    if isinstance(ticks.index, pd.DatetimeIndex):
        index = check_utc_index(ticks.index, "ticks index")
    elif "time" in ticks.columns:
        index = check_utc_index(pd.DatetimeIndex(ticks["time"]), "ticks 'time' column")
    else:
        raise DataError(
            "tick rule 'ticks have a time' broken: use a UTC DatetimeIndex or a 'time' column; "
            f"found columns {list(map(str, ticks.columns))}"
        )
    if "price" not in ticks.columns:
        raise DataError(
            f"tick rule 'ticks have a price' broken: no 'price' column in {list(map(str, ticks.columns))}"
        )
    size_col = next((c for c in _SIZE_NAMES if c in ticks.columns), None)
    if size_col is None:
        raise DataError(
            "tick rule 'ticks have a size' broken: no column named "
            f"{', '.join(_SIZE_NAMES)} in {list(map(str, ticks.columns))}"
        )
    arrays = []
    for name in ("price", size_col):
        col = ticks[name]
        if pd.api.types.is_bool_dtype(col.dtype) or not pd.api.types.is_numeric_dtype(col.dtype):
            raise DataError(
                f"tick rule 'ticks are numeric' broken: column {name!r} has dtype {col.dtype}"
            )
        arrays.append(np.ascontiguousarray(col.to_numpy(dtype=np.float64, na_value=np.nan)))
    return index, arrays[0], arrays[1], size_col


def bars_from_ticks(ticks: pd.DataFrame, rule: str | pd.Timedelta) -> pd.DataFrame:
    """Aggregate trades into OHLCV bars in one compiled pass.

    Bins are left-closed, labelled by their start and aligned like pandas' default
    (``origin="start_day"``: midnight UTC of the first tick's day). Bins without trades are
    dropped, not filled. The result equals ``ticks.resample(rule, closed="left",
    label="left").agg(...)`` with empty bins dropped; volume is the sum of trade sizes.

    Parameters
    ----------
    ticks : pandas.DataFrame
        Trades with a UTC ``DatetimeIndex`` (or a ``time`` column), a ``price`` column and a
        size column named ``size``, ``amount``, ``qty``, ``quantity`` or ``volume``. Ticks
        must be in time order (equal times allowed), prices finite and > 0, sizes finite and
        >= 0, and nothing NaN.
    rule : str or pandas.Timedelta
        A fixed bar length such as ``"1s"``, ``"1min"``, ``"1h"``, ``"1D"``.

    Returns
    -------
    pandas.DataFrame
        A validated bar frame.

    Raises
    ------
    ConfigError
        The rule is invalid or not of fixed length.
    DataError
        A tick breaks a rule; the message names the rule, the column and the timestamp.
    """
    offset = _to_offset(rule)
    if not isinstance(offset, pd.offsets.Tick):
        raise ConfigError(
            f"bars_from_ticks needs a fixed bar length such as '1min' or '1h', got {rule!r}; "
            "resample the result for calendar bars"
        )
    width = int(pd.Timedelta(offset).value)
    index, price, size, size_col = _tick_arrays(ticks)
    from celeris.data import nb

    t = index.asi8
    status, pos = nb.check_ticks_nb(t, price, size)
    if status != nb.TICKS_OK:
        rules = {
            nb.TICKS_UNSORTED: (
                "ticks are in time order",
                "time",
                "comes before the previous tick",
            ),
            nb.TICKS_NAN_PRICE: ("ticks have no NaN", "price", "is NaN"),
            nb.TICKS_BAD_PRICE: ("prices are finite and > 0", "price", f"is {float(price[pos])!r}"),
            nb.TICKS_NAN_SIZE: ("ticks have no NaN", size_col, "is NaN"),
            nb.TICKS_BAD_SIZE: ("sizes are finite and >= 0", size_col, f"is {float(size[pos])!r}"),
        }
        name, column, what = rules[status]
        raise DataError(f"tick rule '{name}' broken: column {column!r} {what} at {index[pos]}")
    origin = int(index[0].normalize().value)
    span = (int(t[-1]) - origin) // width - (int(t[0]) - origin) // width + 1
    max_bars = int(min(len(t), span))
    label, o, h, lo, c, v = nb.bars_from_ticks_nb(t, price, size, origin, width, max_bars)
    bars = pd.DataFrame(
        {"open": o, "high": h, "low": lo, "close": c, "volume": v},
        index=pd.DatetimeIndex(pd.to_datetime(label, unit="ns", utc=True), name="time"),
    )
    return validate(bars)

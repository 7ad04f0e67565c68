"""The bar schema and :func:`validate`, the single gate every bar frame passes through.

A bar frame is a pandas DataFrame with a UTC ``DatetimeIndex`` named ``time`` (nanosecond
resolution, sorted, unique) and float64 columns ``open, high, low, close, volume`` in that order.
Extra columns are kept, untouched, after the five bar columns.

This module is the one place where bars and time indexes are checked: :func:`validate` for bar
frames (or, with ``columns=``, only some bar columns), :func:`check_time_index` for a time index
on its own (the backtest's close index, the LLM summaries' series).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd

from celeris.errors import ConfigError, DataError, did_you_mean

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NAN_POLICIES: tuple[str, ...] = ("error", "ffill", "drop")

NanPolicy = Literal["error", "ffill", "drop"]

_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "utc", "tzutc()", "UTC+00:00", "Z", "Etc/Universal"})


def _fail(rule: str, detail: str) -> DataError:
    return DataError(f"bar rule '{rule}' broken: {detail}")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _first_ts(index: pd.Index, mask: np.ndarray) -> Any:
    pos = int(np.flatnonzero(mask)[0])
    return index[pos]


def _is_utc(tz: Any) -> bool:
    if tz is None:
        return False
    if tz is _dt.UTC:
        return True
    return str(getattr(tz, "key", None) or getattr(tz, "zone", None) or tz) in _UTC_NAMES


def check_utc_index(index: Any, what: str = "index") -> pd.DatetimeIndex:
    """Return ``index`` as a nanosecond UTC ``DatetimeIndex`` or raise :class:`DataError`.

    Order is not checked here (ticks may arrive out of order); :func:`check_time_index` adds it.

    Parameters
    ----------
    index : Any
        The candidate index (``df.index``).
    what : str
        How to name it in the error message.

    Returns
    -------
    pandas.DatetimeIndex
        The same instants, ``datetime64[ns, UTC]``.
    """
    _check_datetime(index, what)
    if index.tz is None:
        raise _fail(
            "index is UTC",
            f"{what} is tz-naive; if the timestamps are UTC, fix it with df.tz_localize('UTC')",
        )
    if not _is_utc(index.tz):
        raise _fail(
            "index is UTC",
            f"{what} is in time zone {index.tz}; convert it with df.tz_convert('UTC')",
        )
    _check_no_nat(index, what)
    return index.tz_convert("UTC").as_unit("ns")


def check_time_index(index: Any, what: str = "index", *, utc: bool = True) -> pd.DatetimeIndex:
    """Return ``index`` if it is a time index as the bar schema wants it, else raise.

    The index rules of :func:`validate`, in its order: a ``DatetimeIndex`` without NaT, in UTC
    (only when ``utc``), sorted ascending, no timestamp twice. Every message names ``what``, the
    rule and the first offending timestamp.

    Parameters
    ----------
    index : Any
        The candidate index (``df.index``).
    what : str
        How to name it in the error message (``"close index"``, ``"funding"``).
    utc : bool
        Require UTC and return the index as ``datetime64[ns, UTC]``; ``False`` accepts any time
        zone (or none) and returns the index as given.

    Returns
    -------
    pandas.DatetimeIndex
        The checked index.

    Raises
    ------
    DataError
        A rule is broken.
    """
    if utc:
        index = check_utc_index(index, what)
    else:
        _check_datetime(index, what)
        _check_no_nat(index, what)
    _check_sorted(index, what)
    _check_unique(index, what)
    return index


def _check_datetime(index: Any, what: str) -> None:
    if not isinstance(index, pd.DatetimeIndex):
        raise _fail(
            "index is a DatetimeIndex",
            f"{what} is a {type(index).__name__} of dtype {index.dtype}; set a datetime index, "
            "e.g. df.set_index(pd.to_datetime(df['time'], utc=True))",
        )


def _check_no_nat(index: pd.DatetimeIndex, what: str) -> None:
    if index.hasnans:
        pos = int(np.flatnonzero(index.isna())[0])
        raise _fail("index has no NaT", f"{what} has NaT at position {pos}")


def _check_sorted(index: pd.DatetimeIndex, what: str) -> None:
    if not index.is_monotonic_increasing:
        bad = np.flatnonzero(np.diff(index.asi8) < 0)[0] + 1
        raise _fail(
            "index is sorted",
            f"{what} is not sorted by time: timestamp {index[bad]} comes after {index[bad - 1]}; "
            "sort with df.sort_index()",
        )


def _check_unique(index: pd.DatetimeIndex, what: str) -> None:
    if not index.is_unique:
        dup = index.duplicated()
        raise _fail(
            "timestamps are unique",
            f"{what} has duplicate timestamps: {_first_ts(index, dup)} appears more than once "
            f"({_rows(int(dup.sum()))} duplicated)",
        )


def oldest_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` in time order if its index runs strictly newest first, else as given.

    Exchange exports often list the newest bar first; that one order is recognised and turned
    round. Any other disorder is left for :func:`validate` to refuse.
    """
    index = frame.index
    if len(frame) > 1 and index.is_monotonic_decreasing and index.is_unique:
        return frame.iloc[::-1]
    return frame


def check_nan_policy(nan_policy: str) -> str:
    """Return ``nan_policy`` if known, else raise :class:`ConfigError` with a hint."""
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"unknown nan_policy {nan_policy!r}{did_you_mean(str(nan_policy), NAN_POLICIES)}; "
            "choose 'error' (refuse NaN), 'ffill' (carry the last value forward) or "
            "'drop' (drop rows with any NaN)"
        )
    return nan_policy


def validate(
    df: pd.DataFrame,
    *,
    nan_policy: NanPolicy = "error",
    columns: Sequence[str] | None = None,
    utc: bool = True,
) -> pd.DataFrame:
    """Check a bar frame against the bar schema and return a validated copy.

    The copy has a ``datetime64[ns, UTC]`` index named ``time`` (its ``freq`` cleared) and
    float64 columns ``open, high, low, close, volume`` first; any extra columns follow
    unchanged (they are neither checked nor cast). The input is never modified.

    Rules, checked in this order (the first broken one raises):

    1. ``df`` is a DataFrame and has at least one row;
    2. the index is a ``DatetimeIndex`` without NaT, in UTC (tz-naive and other time zones are
       refused: fix them with ``df.tz_localize("UTC")`` or ``df.tz_convert("UTC")``);
    3. the index is sorted ascending and has no duplicate timestamps;
    4. the columns ``open, high, low, close, volume`` exist (case-sensitive; see
       :func:`celeris.data.load` for recognition of other spellings);
    5. they are numeric (bool and text are refused) and are cast to float64;
    6. NaN values are handled by ``nan_policy``;
    7. no value is infinite; prices are > 0; volume is >= 0;
    8. ``high >= low``, ``high >= max(open, close)`` and ``low <= min(open, close)``.

    Parameters
    ----------
    df : pandas.DataFrame
        Bars indexed by time.
    nan_policy : {"error", "ffill", "drop"}
        What to do with NaN in the bar columns: ``"error"`` raises naming the column and the
        first timestamp; ``"ffill"`` carries the previous value of the same column forward
        (``df.ffill()``) and raises if NaN remain at the start; ``"drop"`` drops every row that
        has a NaN in a bar column.
    columns : sequence of bar column names, optional
        Validate only these bar columns (for frames that need not carry all five, such as
        ``("high", "low", "close")``): rules 4-7 apply to them alone, a rule of 8 only when
        every column it names is among them, and the other columns are kept unchecked after
        them. Default: all five.
    utc : bool
        ``False`` lets the index be tz-naive or in any time zone (kept as it is; rule 2 then
        asks only for a ``DatetimeIndex`` without NaT): for callers that only read the bars,
        such as the LLM market summaries, which print the timestamps they are given.

    Returns
    -------
    pandas.DataFrame
        The validated copy.

    Raises
    ------
    DataError
        A rule is broken; the message names the rule, the column and the first offending
        timestamp.
    ConfigError
        ``nan_policy`` is unknown, or ``columns`` names something that is not a bar column.
    """
    check_nan_policy(nan_policy)
    names = BAR_COLUMNS if columns is None else _check_columns_arg(columns)
    if not isinstance(df, pd.DataFrame):
        raise _fail(
            "input is a DataFrame", f"got {type(df).__name__}; pass a pandas DataFrame of bars"
        )
    if len(df) == 0:
        raise _fail("frame is not empty", "the frame has no rows")
    index = check_time_index(df.index, utc=utc)
    _require_columns(df, names)
    out = _float_copy(df, index, names)
    out, cols = _apply_nan_policy(out, names, nan_policy)
    _check_values(out.index, cols)
    _check_relations(out.index, cols)
    return out


def _check_columns_arg(columns: Sequence[str]) -> tuple[str, ...]:
    if isinstance(columns, str):
        columns = (columns,)
    unknown = [c for c in columns if c not in BAR_COLUMNS]
    if unknown:
        raise ConfigError(
            f"columns: {unknown[0]!r} is not a bar column"
            f"{did_you_mean(str(unknown[0]), BAR_COLUMNS)}; choose from {', '.join(BAR_COLUMNS)}"
        )
    if not columns:
        raise ConfigError(f"columns is empty; name bar columns from {', '.join(BAR_COLUMNS)}")
    return tuple(c for c in BAR_COLUMNS if c in columns)  # the schema's order, each once


def _require_columns(df: pd.DataFrame, names: Sequence[str]) -> None:
    """Rule 4: the bar columns exist (with a hint for near misses and adjusted closes)."""
    columns = [str(c) for c in df.columns]
    missing = [c for c in names if c not in columns]
    if missing:
        adjusted = [c for c in columns if c.lower().replace(" ", "").replace("_", "") == "adjclose"]
        hints = "".join(
            f" ({adjusted[0]!r} is an adjusted price, not the traded close)"
            if m == "close" and adjusted
            else did_you_mean(m, columns)
            for m in missing
        )
        raise _fail(
            "bar columns exist",
            f"missing column(s) {', '.join(map(repr, missing))}{hints}; "
            f"found {columns}. celeris.data.load() recognises other spellings",
        )


def _float_copy(df: pd.DataFrame, index: pd.DatetimeIndex, names: Sequence[str]) -> pd.DataFrame:
    """Rule 5: the bar columns as float64, first; the others after them, unchanged."""
    data: dict[Any, np.ndarray] = {}
    for name in names:
        col = df[name]
        if isinstance(col, pd.DataFrame):
            raise _fail("bar columns exist", f"column {name!r} appears more than once")
        if pd.api.types.is_bool_dtype(col.dtype) or not pd.api.types.is_numeric_dtype(col.dtype):
            _raise_not_numeric(index, name, col)
        data[name] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    for extra in df.columns:
        if str(extra) not in names:
            data[extra] = df[extra].to_numpy()
    # freq is cleared so that frames from every source compare equal; it is derivable anyway.
    # One constructor call: one copy, one float64 block (cheaper than column-wise setitem).
    time_index = pd.DatetimeIndex(index, name="time", freq=None)  # type: ignore[arg-type]
    return pd.DataFrame(data, index=time_index, copy=True)


def _raise_not_numeric(index: pd.Index, name: str, col: pd.Series) -> NoReturn:
    numeric = pd.to_numeric(col, errors="coerce")
    bad_mask = numeric.isna().to_numpy() & col.notna().to_numpy()
    where = (
        f"; first non-numeric value {col.iloc[int(np.flatnonzero(bad_mask)[0])]!r} at "
        f"{_first_ts(index, bad_mask)}"
        if bad_mask.any()
        else ""
    )
    raise _fail(
        "bar columns are numeric",
        f"column {name!r} has dtype {col.dtype}{where}; convert it with pd.to_numeric",
    )


def _apply_nan_policy(
    out: pd.DataFrame, names: Sequence[str], nan_policy: str
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rule 6: refuse, forward-fill or drop NaN; return the frame and its bar columns."""
    cols = {name: out[name].to_numpy() for name in names}
    if not any(np.isnan(a).any() for a in cols.values()):
        return out, cols
    if nan_policy == "error":
        _raise_first(
            out.index,
            cols,
            np.isnan,
            "bars have no NaN",
            "is NaN",
            hint="; pass nan_policy='ffill' or 'drop'",
        )
    if nan_policy == "ffill":
        out[list(names)] = out[list(names)].ffill()
        cols = {name: out[name].to_numpy() for name in names}
        if any(np.isnan(a).any() for a in cols.values()):
            _raise_first(
                out.index,
                cols,
                np.isnan,
                "bars have no NaN",
                "is NaN with no earlier value to forward-fill",
                hint="; drop the leading rows or use nan_policy='drop'",
            )
        return out, cols
    keep = ~out[list(names)].isna().any(axis=1).to_numpy()
    out = out.loc[keep]
    if len(out) == 0:
        raise _fail("frame is not empty", "every row has a NaN (nan_policy='drop')")
    return out, {name: out[name].to_numpy() for name in names}


def _check_values(idx: pd.Index, cols: dict[str, np.ndarray]) -> None:
    """Rule 7: finite values, prices > 0, volume >= 0."""
    if any(np.isinf(a).any() for a in cols.values()):
        _raise_first(idx, cols, np.isinf, "values are finite", "is infinite")
    prices = {name: a for name, a in cols.items() if name in PRICE_COLUMNS}
    if any((a <= 0).any() for a in prices.values()):
        _raise_first(idx, prices, lambda a: a <= 0, "prices are > 0", "is <= 0", show=True)
    vol = cols.get("volume")
    if vol is not None and (vol < 0).any():
        mask = vol < 0
        raise _fail(
            "volume >= 0",
            f"column 'volume' is {float(vol[mask][0])!r} at {_first_ts(idx, mask)} "
            f"({_rows(int(mask.sum()))})",
        )


def _check_relations(idx: pd.Index, cols: dict[str, np.ndarray]) -> None:
    """Rule 8, each relation only when every column it names was validated."""
    h, lo = cols.get("high"), cols.get("low")
    o, c = cols.get("open"), cols.get("close")
    if h is not None and lo is not None:
        _check_relation(idx, h < lo, "high >= low", "high", {"high": h, "low": lo})
    if o is None or c is None:
        return
    if h is not None:
        _check_relation(
            idx,
            h < np.maximum(o, c),
            "high >= max(open, close)",
            "high",
            {"high": h, "open": o, "close": c},
        )
    if lo is not None:
        _check_relation(
            idx,
            lo > np.minimum(o, c),
            "low <= min(open, close)",
            "low",
            {"low": lo, "open": o, "close": c},
        )


def _raise_first(
    index: pd.Index,
    cols: dict[str, np.ndarray],
    predicate: Callable[[np.ndarray], np.ndarray],
    rule: str,
    what: str,
    *,
    hint: str = "",
    show: bool = False,
) -> NoReturn:
    """Raise for the earliest row where ``predicate`` holds in any of ``cols``."""
    names = list(cols)
    mask = np.column_stack([predicate(cols[n]) for n in names])  # [T, C], only on the error path
    rows = np.flatnonzero(mask.any(axis=1))
    row = int(rows[0])
    col = int(np.flatnonzero(mask[row])[0])
    shown = f" ({float(cols[names[col]][row])!r})" if show else ""
    raise _fail(
        rule,
        f"column {names[col]!r} {what}{shown} at {index[row]} "
        f"({_rows(int(mask[:, col].sum()))} in that column, {_rows(len(rows))} in all){hint}",
    )


def _check_relation(
    index: pd.Index, mask: np.ndarray, rule: str, column: str, cols: dict[str, np.ndarray]
) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        shown = ", ".join(f"{k}={float(v[row])!r}" for k, v in cols.items())
        raise _fail(
            rule,
            f"column {column!r} at {index[row]} ({shown}); {_rows(int(mask.sum()))} break it",
        )

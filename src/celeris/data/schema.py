"""The bar schema and :func:`validate`, the single gate every bar frame passes through.

A bar frame is a pandas DataFrame with a UTC ``DatetimeIndex`` named ``time`` (nanosecond
resolution, sorted, unique) and float64 columns ``open, high, low, close, volume`` in that order.
Extra columns are kept, untouched, after the five bar columns.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
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
    if not isinstance(index, pd.DatetimeIndex):
        raise _fail(
            "index is a DatetimeIndex",
            f"{what} is a {type(index).__name__} of dtype {index.dtype}; set a datetime index, "
            "e.g. df.set_index(pd.to_datetime(df['time'], utc=True))",
        )
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
    if index.hasnans:
        pos = int(np.flatnonzero(index.isna())[0])
        raise _fail("index has no NaT", f"{what} has NaT at position {pos}")
    return index.tz_convert("UTC").as_unit("ns")


def check_nan_policy(nan_policy: str) -> str:
    """Return ``nan_policy`` if known, else raise :class:`ConfigError` with a hint."""
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"unknown nan_policy {nan_policy!r}{did_you_mean(str(nan_policy), NAN_POLICIES)}; "
            "choose 'error' (refuse NaN), 'ffill' (carry the last value forward) or "
            "'drop' (drop rows with any NaN)"
        )
    return nan_policy


def validate(df: pd.DataFrame, *, nan_policy: NanPolicy = "error") -> pd.DataFrame:
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
        ``nan_policy`` is unknown.
    """
    check_nan_policy(nan_policy)
    if not isinstance(df, pd.DataFrame):
        raise _fail(
            "input is a DataFrame", f"got {type(df).__name__}; pass a pandas DataFrame of bars"
        )
    if len(df) == 0:
        raise _fail("frame is not empty", "the frame has no rows")
    index = check_utc_index(df.index)

    if not index.is_monotonic_increasing:
        bad = np.flatnonzero(np.diff(index.asi8) < 0)[0] + 1
        raise _fail(
            "index is sorted",
            f"timestamp {index[bad]} comes after {index[bad - 1]}; sort with df.sort_index()",
        )
    if not index.is_unique:
        dup = index.duplicated()
        raise _fail(
            "timestamps are unique",
            f"timestamp {_first_ts(index, dup)} appears more than once "
            f"({_rows(int(dup.sum()))} duplicated)",
        )

    columns = [str(c) for c in df.columns]
    missing = [c for c in BAR_COLUMNS if c not in columns]
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

    # freq is cleared so that frames from every source compare equal; it is derivable anyway.
    data: dict[Any, np.ndarray] = {}
    for name in BAR_COLUMNS:
        col = df[name]
        if isinstance(col, pd.DataFrame):
            raise _fail("bar columns exist", f"column {name!r} appears more than once")
        if pd.api.types.is_bool_dtype(col.dtype) or not pd.api.types.is_numeric_dtype(col.dtype):
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
        data[name] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    for extra in df.columns:
        if str(extra) not in BAR_COLUMNS:
            data[extra] = df[extra].to_numpy()
    # One constructor call: one copy, one float64 block (cheaper than column-wise setitem).
    time_index = pd.DatetimeIndex(index, name="time", freq=None)  # type: ignore[arg-type]
    out = pd.DataFrame(data, index=time_index, copy=True)

    cols = {name: out[name].to_numpy() for name in BAR_COLUMNS}
    if any(np.isnan(a).any() for a in cols.values()):
        if nan_policy == "error":
            _raise_first(
                out.index,
                cols,
                np.isnan,
                "bars have no NaN",
                "is NaN",
                hint="; pass nan_policy='ffill' or 'drop'",
            )
        elif nan_policy == "ffill":
            out[list(BAR_COLUMNS)] = out[list(BAR_COLUMNS)].ffill()
            cols = {name: out[name].to_numpy() for name in BAR_COLUMNS}
            if any(np.isnan(a).any() for a in cols.values()):
                _raise_first(
                    out.index,
                    cols,
                    np.isnan,
                    "bars have no NaN",
                    "is NaN with no earlier value to forward-fill",
                    hint="; drop the leading rows or use nan_policy='drop'",
                )
        else:
            keep = ~out[list(BAR_COLUMNS)].isna().any(axis=1).to_numpy()
            out = out.loc[keep]
            if len(out) == 0:
                raise _fail("frame is not empty", "every row has a NaN (nan_policy='drop')")
            cols = {name: out[name].to_numpy() for name in BAR_COLUMNS}

    idx = out.index
    if any(np.isinf(a).any() for a in cols.values()):
        _raise_first(idx, cols, np.isinf, "values are finite", "is infinite")
    prices = {name: cols[name] for name in PRICE_COLUMNS}
    if any((a <= 0).any() for a in prices.values()):
        _raise_first(idx, prices, lambda a: a <= 0, "prices are > 0", "is <= 0", show=True)
    vol = cols["volume"]
    if (vol < 0).any():
        mask = vol < 0
        raise _fail(
            "volume >= 0",
            f"column 'volume' is {float(vol[mask][0])!r} at {_first_ts(idx, mask)} "
            f"({_rows(int(mask.sum()))})",
        )
    o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
    _check_relation(idx, h < lo, "high >= low", "high", {"high": h, "low": lo})
    _check_relation(
        idx,
        h < np.maximum(o, c),
        "high >= max(open, close)",
        "high",
        {"high": h, "open": o, "close": c},
    )
    _check_relation(
        idx,
        lo > np.minimum(o, c),
        "low <= min(open, close)",
        "low",
        {"low": lo, "open": o, "close": c},
    )
    return out


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

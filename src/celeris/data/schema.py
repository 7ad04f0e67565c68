"""The bar schema and :func:`validate`, the single gate every bar frame passes through.

A bar frame is a pandas DataFrame with a UTC ``DatetimeIndex`` named ``time`` (nanosecond
resolution, sorted, unique) and float64 columns ``open, high, low, close, volume`` in that order.
Extra columns are kept, untouched, after the five bar columns.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

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
            f"({int(dup.sum())} duplicate rows)",
        )

    columns = [str(c) for c in df.columns]
    missing = [c for c in BAR_COLUMNS if c not in columns]
    if missing:
        hints = "".join(did_you_mean(m, columns) for m in missing)
        raise _fail(
            "bar columns exist",
            f"missing column(s) {', '.join(map(repr, missing))}{hints}; "
            f"found {columns}. celeris.data.load() recognises other spellings",
        )

    # freq is cleared so that frames from every source compare equal; it is derivable anyway.
    out = pd.DataFrame(index=pd.DatetimeIndex(index, name="time", freq=None))
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
        out[name] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    extras = [c for c in df.columns if str(c) not in BAR_COLUMNS]
    for c in extras:
        out[c] = df[c].to_numpy()

    values = out[list(BAR_COLUMNS)].to_numpy()  # [T, 5]
    nan = np.isnan(values)
    if nan.any():
        if nan_policy == "error":
            _raise_first(out.index, nan, "bars have no NaN", "is NaN", hint="; pass nan_policy='ffill' or 'drop'")
        elif nan_policy == "ffill":
            out[list(BAR_COLUMNS)] = out[list(BAR_COLUMNS)].ffill()
            values = out[list(BAR_COLUMNS)].to_numpy()
            nan = np.isnan(values)
            if nan.any():
                _raise_first(
                    out.index,
                    nan,
                    "bars have no NaN",
                    "is NaN with no earlier value to forward-fill",
                    hint="; drop the leading rows or use nan_policy='drop'",
                )
        else:
            keep = ~nan.any(axis=1)
            out = out.loc[keep]
            if len(out) == 0:
                raise _fail("frame is not empty", "every row has a NaN (nan_policy='drop')")
            values = out[list(BAR_COLUMNS)].to_numpy()

    idx = out.index
    inf = np.isinf(values)
    if inf.any():
        _raise_first(idx, inf, "values are finite", "is infinite")
    prices = values[:, :4]
    if (prices <= 0).any():
        _raise_first(idx, prices <= 0, "prices are > 0", "is <= 0", values=prices)
    vol = values[:, 4]
    if (vol < 0).any():
        mask = vol < 0
        raise _fail(
            "volume >= 0",
            f"column 'volume' is {float(vol[mask][0])!r} at {_first_ts(idx, mask)} "
            f"({int(mask.sum())} rows)",
        )
    o, h, lo, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    _check_relation(idx, h < lo, "high >= low", "high", {"high": h, "low": lo})
    _check_relation(
        idx, h < np.maximum(o, c), "high >= max(open, close)", "high", {"high": h, "open": o, "close": c}
    )
    _check_relation(
        idx, lo > np.minimum(o, c), "low <= min(open, close)", "low", {"low": lo, "open": o, "close": c}
    )
    return out


def _raise_first(
    index: pd.DatetimeIndex,
    mask: np.ndarray,
    rule: str,
    what: str,
    *,
    hint: str = "",
    values: np.ndarray | None = None,
) -> None:
    """Raise for the earliest row of a [T, C] mask over the bar columns."""
    rows = np.flatnonzero(mask.any(axis=1))
    row = int(rows[0])
    col = int(np.flatnonzero(mask[row])[0])
    shown = "" if values is None else f" ({float(values[row, col])!r})"
    raise _fail(
        rule,
        f"column {BAR_COLUMNS[col]!r} {what}{shown} at {index[row]} "
        f"({int(mask[:, col].sum())} rows in that column, "
        f"{len(rows)} rows in all){hint}",
    )


def _check_relation(
    index: pd.DatetimeIndex, mask: np.ndarray, rule: str, column: str, cols: dict[str, np.ndarray]
) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        shown = ", ".join(f"{k}={float(v[row])!r}" for k, v in cols.items())
        raise _fail(
            rule,
            f"column {column!r} at {index[row]} ({shown}); {int(mask.sum())} rows break it",
        )

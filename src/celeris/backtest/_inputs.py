"""Validation and broadcasting of ``from_signals`` inputs (pandas lives here, not in kernels)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays, resolve_year_days
from celeris.data.schema import check_time_index
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice

DIRECTIONS = {"longonly": K.LONG_ONLY, "shortonly": K.SHORT_ONLY, "both": K.BOTH}
SIZE_TYPES = {"amount": K.AMOUNT, "value": K.VALUE, "percent": K.PERCENT}
STOP_EXIT_PRICES = {"stop": K.STOP_LIMIT, "stopmarket": K.STOP_MARKET, "close": K.STOP_CLOSE}
EXECUTIONS = ("close", "next_open")


def as_2d_float(
    name: str, data: Any, n_bars: int | None = None, *, copy: bool = True
) -> np.ndarray:
    """Return ``data`` as a float64 (n_bars, k) array; check it is finite and > 0.

    With ``copy`` the result never shares memory with the caller's object, so that changing it
    later cannot change a portfolio's curves and records (which are recomputed on demand).
    """
    arr = np.asarray(data.to_numpy() if isinstance(data, pd.Series | pd.DataFrame) else data)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise CelerisTypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if copy and np.shares_memory(
        arr, data.to_numpy() if isinstance(data, pd.Series | pd.DataFrame) else data
    ):
        arr = arr.copy()
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{name} must be 1-D or 2-D (bars x columns), got {arr.ndim}-D")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty")
    if n_bars is not None and arr.shape[0] != n_bars:
        raise DataError(f"{name} has {arr.shape[0]} bars but close has {n_bars}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        value = arr[row, col]
        what = "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else f"{value!r} <= 0")
        where = cell_label(data, row, col)
        raise DataError(f"{name} must be finite and > 0: {what} at {where}")
    return arr


def cell_label(data: Any, row: int, col: int) -> str:
    if isinstance(data, pd.Series | pd.DataFrame):
        label = data.index[row]
        if isinstance(data, pd.DataFrame) and data.shape[1] > 1:
            return f"{label} (column {data.columns[col]!r})"
        return str(label)
    return f"row {row}" + (f", column {col}" if np.ndim(data) == 2 else "")


def as_2d_bool(
    name: str, data: Any, n_bars: int, index: pd.Index | None, *, copy: bool = True
) -> np.ndarray:
    """Return signals as a bool (n_bars, k) array; refuse NaN, non-0/1 values and misalignment."""
    if isinstance(data, pd.Series | pd.DataFrame) and len(data) != n_bars:
        raise DataError(f"{name} has {len(data)} bars but close has {n_bars}")
    if (
        isinstance(data, pd.Series | pd.DataFrame)
        and index is not None
        and not data.index.equals(index)
    ):
        raise DataError(
            f"{name} index does not match close's index (first differing label: "
            f"{_first_difference(data.index, index)}); align them explicitly, nothing is aligned silently"
        )
    arr = np.asarray(data.to_numpy() if isinstance(data, pd.Series | pd.DataFrame) else data)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataError(f"{name} must be 1-D or 2-D (bars x columns), got {arr.ndim}-D")
    if arr.shape[0] != n_bars:
        raise DataError(f"{name} has {arr.shape[0]} bars but close has {n_bars}")
    if arr.dtype != np.bool_:
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise CelerisTypeError(f"{name} must be boolean, got dtype {arr.dtype}")
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(
                f"{name} must be boolean (or 0/1): {arr[row, col]!r} at {cell_label(data, row, col)}"
            )
        arr = arr.astype(np.bool_)
    elif copy:
        arr = arr.copy(order="K")
    return arr


def _first_difference(a: pd.Index, b: pd.Index) -> str:
    if len(a) != len(b):
        return f"lengths {len(a)} vs {len(b)}"
    diff = np.flatnonzero(np.asarray(a) != np.asarray(b))
    return repr(a[diff[0]]) if diff.size else "dtype/tz"


def check_index(index: pd.Index) -> None:
    """A datetime index must follow the bar schema's index rules (any time zone, or none)."""
    if isinstance(index, pd.DatetimeIndex):
        check_time_index(index, "close index", utc=False)


def param_values(name: str, value: Any) -> np.ndarray:
    """Return a parameter as a 1-D float array (length 1 for scalars)."""
    if isinstance(value, str):
        raise CelerisTypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")
    if value is None:
        return np.array([np.nan])
    arr = np.asarray(value, dtype=object if isinstance(value, Sequence) else None)
    try:
        arr = np.asarray(arr, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise CelerisTypeError(f"{name} must be numeric, got {value!r}") from None
    if arr.size == 0:
        raise ConfigError(f"{name} is an empty sequence")
    if np.ndim(value) > 1:
        raise ConfigError(
            f"{name} must be a scalar or a 1-D sequence (one value per column), got {np.ndim(value)}-D"
        )
    return arr


def check_range(
    name: str,
    arr: np.ndarray,
    *,
    low: float,
    high: float = np.inf,
    low_inclusive: bool = True,
    allow_nan: bool = False,
    allow_inf: bool = False,
) -> None:
    vals = arr[~np.isnan(arr)] if allow_nan else arr
    if not allow_nan and np.isnan(arr).any():
        raise ConfigError(f"{name} must not be NaN")
    if not allow_inf and np.isinf(vals).any():
        raise ConfigError(f"{name} must be finite, got {vals[np.isinf(vals)][0]}")
    too_low = vals < low if low_inclusive else vals <= low
    if too_low.any() or (vals[np.isfinite(vals)] > high).any():
        bad = vals[too_low | (np.isfinite(vals) & (vals > high))][0]
        lo = "[" if low_inclusive else "("
        raise ConfigError(f"{name} must be in {lo}{low}, {high}], got {bad}")


def choice_codes(name: str, value: Any, mapping: Mapping[str, int]) -> np.ndarray:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list | tuple | np.ndarray | pd.Index):
        values = list(value)
        if not values:
            raise ConfigError(f"{name} is an empty sequence")
    else:
        raise CelerisTypeError(
            f"{name} must be one of {', '.join(map(repr, mapping))} (or a list), got {value!r}"
        )
    return np.array([mapping[check_choice(name, v, mapping)] for v in values], dtype=np.float64)


def broadcast_width(named: dict[str, int]) -> int:
    """Common column count of inputs whose widths are 1 or N; name the offender otherwise."""
    widths = {w for w in named.values() if w != 1}
    if len(widths) > 1:
        detail = ", ".join(f"{k}={w}" for k, w in named.items() if w != 1)
        raise DataError(f"cannot broadcast columns: {detail} (each must be 1 or the same N)")
    return widths.pop() if widths else 1


# Average length of calendar offsets that have no fixed duration (for annualising only).
_CALENDAR_DAYS = {
    "B": 1.0,
    "C": 1.0,
    "W": 7.0,
    "M": 365.2425 / 12,
    "Q": 365.2425 / 4,
    "Y": 365.2425,
    "A": 365.2425,
}


def _offset_span(freq: str) -> pd.Timedelta:
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        return pd.Timedelta(offset.nanos, unit="ns")
    except ValueError:
        code = offset.name.lstrip("0123456789")[:1].upper()
        if code not in _CALENDAR_DAYS:
            raise
        return pd.Timedelta(days=_CALENDAR_DAYS[code] * offset.n)


def infer_freq(index: pd.Index, freq: Any) -> pd.Timedelta | None:
    """Bar spacing: ``freq`` if given, else the median spacing of a datetime index."""
    if freq is not None:
        try:
            td = _offset_span(freq) if isinstance(freq, str) else pd.Timedelta(freq)
        except (ValueError, TypeError):
            try:
                td = pd.Timedelta(freq)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"freq {freq!r} is not a valid frequency (e.g. '1min', '1h', '1D')"
                ) from None
        if td <= pd.Timedelta(0):
            raise ConfigError(f"freq must be positive, got {freq!r}")
        return td
    if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
        return pd.Timedelta(np.median(np.diff(index.asi8)), unit=index.unit)
    return None


def annualise(
    index: pd.Index, freq: Any, year_days: Any
) -> tuple[pd.Timedelta | None, YearDays, float]:
    """Bar spacing, days per year and bars per year (NaN when the spacing is unknown).

    ``ann_factor = year_days * 1 day / freq``; ``freq`` given or inferred from a datetime index
    (:func:`infer_freq`), ``year_days`` by :func:`~celeris.backtest.annualisation.resolve_year_days`.
    """
    td = infer_freq(index, freq)
    annual = resolve_year_days(index if isinstance(index, pd.DatetimeIndex) else None, year_days)
    ann_factor = float(annual.days * pd.Timedelta(days=1) / td) if td is not None else float("nan")
    return td, annual, ann_factor


def columns_from(candidates: list[Any], width: int, param_axes: dict[str, np.ndarray]) -> pd.Index:
    """Column labels: those of a width-N frame input, else named parameter axes, else a range."""
    for obj in candidates:
        if isinstance(obj, pd.DataFrame) and obj.shape[1] == width and width > 1:
            return obj.columns
    axes = {k: v for k, v in param_axes.items() if v.size == width and width > 1}
    if axes:
        if len(axes) == 1:
            ((name, vals),) = axes.items()
            return pd.Index(vals, name=name)
        return pd.MultiIndex.from_arrays(list(axes.values()), names=list(axes.keys()))
    for obj in candidates:
        if isinstance(obj, pd.DataFrame) and obj.shape[1] == width:
            return obj.columns
    return pd.RangeIndex(width, name="column")

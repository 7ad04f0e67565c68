"""Boundary checks and output shaping for the indicator wrappers.

Turns what users pass (a Series, a 1-D array, a bar frame; an int or a sequence of ints) into
the float64 / int64 arrays the kernels take, and the kernels' ``(n_bars, n_windows)`` matrices
back into a Series, array or DataFrame.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from celeris.errors import CelerisTypeError, ConfigError, DataError, did_you_mean

Output = pd.Series | pd.DataFrame | np.ndarray


@dataclass(frozen=True)
class Bars:
    """The numeric inputs of one indicator call, aligned, plus how to shape its output."""

    values: tuple[np.ndarray, ...]  # float64, 1-D, equal length
    index: pd.Index | None  # None for numpy input: return numpy


def _from_frame(frame: pd.DataFrame, param: str, field: str) -> pd.Series:
    if field in frame.columns:
        return frame[field]
    by_lower = {str(c).lower(): c for c in frame.columns}
    if field in by_lower:
        return frame[by_lower[field]]
    raise ConfigError(
        f"{param}: the frame has no {field!r} column{did_you_mean(field, map(str, frame.columns))}; "
        f"pass a bar frame with columns open, high, low, close, volume, or a Series"
    )


def _series_values(series: pd.Series, param: str) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise ConfigError(f"{param} must be numeric, got dtype {dtype}")
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    # a read-only view (pandas copy-on-write) would make numba compile a second specialisation
    return values if values.flags.writeable else values.copy()


def _array_values(array: np.ndarray, param: str) -> np.ndarray:
    if array.ndim != 1:
        raise ConfigError(f"{param} must be 1-D, got an array of shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ConfigError(f"{param} must be numeric, got dtype {array.dtype}")
    values = np.ascontiguousarray(array, dtype=np.float64)
    return values if values.flags.writeable else values.copy()


def _one_input(obj: Any, param: str, field: str) -> tuple[np.ndarray, pd.Index | None]:
    if isinstance(obj, pd.DataFrame):
        obj = _from_frame(obj, param, field)
    if isinstance(obj, pd.Series):
        return _series_values(obj, param), obj.index
    if isinstance(obj, np.ndarray):
        return _array_values(obj, param), None
    raise CelerisTypeError(
        f"{param} must be a pandas Series, a 1-D numpy array or a bar frame, "
        f"got {type(obj).__name__}"
    )


def _where(index: pd.Index | None, pos: int) -> str:
    return f"bar {pos}" if index is None else f"{index[pos]!r} (bar {pos})"


def bars(inputs: Sequence[tuple[Any, str, str]]) -> Bars:
    """Coerce and check ``(object, parameter name, bar-frame field)`` inputs of one call.

    Raises
    ------
    CelerisTypeError
        An input is not a Series, 1-D array or DataFrame.
    ConfigError
        An input is non-numeric or not 1-D, or a frame lacks the field.
    DataError
        An input is empty or holds ``inf``, or inputs differ in length or index.
    """
    values: list[np.ndarray] = []
    index: pd.Index | None = None
    first_param = ""
    for i, (obj, param, field) in enumerate(inputs):
        arr, idx = _one_input(obj, param, field)
        if arr.shape[0] == 0:
            raise DataError(f"{param} is empty: an indicator needs at least one bar")
        if i == 0:
            index, first_param = idx, param
        else:
            if arr.shape[0] != values[0].shape[0]:
                raise DataError(
                    f"{param} has {arr.shape[0]} bars but {first_param} has {values[0].shape[0]}"
                )
            if idx is not None and index is not None and not idx.equals(index):
                raise DataError(f"{param} and {first_param} have different indexes")
            if index is None:
                index = idx
        bad = np.flatnonzero(np.isinf(arr))
        if bad.size:
            raise DataError(f"{param} is infinite at {_where(idx, int(bad[0]))}")
        values.append(arr)
    return Bars(tuple(values), index)


def warn_on_gap(data: Bars, names: Sequence[str], stacklevel: int = 3) -> None:
    """Warn when a NaN follows the first valid bar: the indicator is NaN from there on."""
    if len(data.values) == 1:
        nan = np.isnan(data.values[0])
    else:
        nan = np.logical_or.reduce([np.isnan(v) for v in data.values])
    valid = np.flatnonzero(~nan)
    if valid.size == 0:
        return
    gap = np.flatnonzero(nan[valid[0] :])
    if gap.size:
        pos = int(valid[0] + gap[0])
        warnings.warn(
            f"{' / '.join(names)} has NaN at {_where(data.index, pos)} after the first valid bar; "
            "the indicator is NaN from that bar on",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def _one_int(value: Any, param: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise CelerisTypeError(f"{param} must be an int, got {value!r}")
    return int(value)


def windows(
    value: Any, param: str, n_bars: int, minimum: int = 1, floor_reason: str = ""
) -> tuple[np.ndarray, bool]:
    """Return ``(windows as int64 array, was a single int)`` after range checks.

    Raises
    ------
    CelerisTypeError
        ``value`` is neither an int nor a sequence of ints.
    ConfigError
        The sequence is empty or repeats a window, or a window is outside
        ``[minimum, n_bars]``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        items, scalar = [int(value)], True
    elif (isinstance(value, np.ndarray) and value.ndim == 1) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    ):
        items, scalar = [_one_int(v, param) for v in value], False
        if not items:
            raise ConfigError(f"{param} is an empty sequence; give at least one window")
        seen: set[int] = set()
        for w in items:
            if w in seen:
                raise ConfigError(f"{param} repeats the window {w}")
            seen.add(w)
    else:
        raise CelerisTypeError(f"{param} must be an int or a sequence of ints, got {value!r}")
    for w in items:
        if not minimum <= w <= n_bars:
            reason = floor_reason or f"it must exceed ddof={minimum - 1}"
            floor = "1" if minimum == 1 else f"{minimum} ({reason})"
            raise ConfigError(
                f"{param}={w} is out of range: it must be between {floor} and "
                f"the number of bars, {n_bars}"
            )
    return np.asarray(items, dtype=np.int64), scalar


def real(value: Any, param: str, minimum: float = 0.0) -> float:
    """Return ``value`` as a finite float ``>= minimum``, else raise."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise CelerisTypeError(f"{param} must be a real number, got {value!r}")
    out = float(value)
    if not np.isfinite(out) or out < minimum:
        raise ConfigError(f"{param}={value!r} must be finite and >= {minimum}")
    return out


def empty_columns(n_bars: int, n_columns: int) -> np.ndarray:
    """Return an uninitialised ``(n_bars, n_columns)`` float64 array with contiguous columns,
    the ``out`` the kernels fill (numpy's allocation gets huge pages where numba's does not)."""
    return np.empty((n_columns, n_bars)).T


def shape_output(
    matrix: np.ndarray, columns: pd.Index, scalar: bool, name: str, index: Any
) -> Output:
    """Turn a kernel's ``(n_bars, n_params)`` matrix into the caller's type.

    One parameter set given as scalars: a Series named ``name`` (a 1-D array for numpy
    input). Any sequence: a DataFrame with ``columns`` (a RangeIndex for numpy input).
    """
    if scalar:
        column = matrix[:, 0]
        return column.copy() if index is None else pd.Series(column, index=index, name=name)
    return pd.DataFrame(matrix, index=index, columns=columns, copy=False)

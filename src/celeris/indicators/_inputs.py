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

from celeris.checks import check_int
from celeris.errors import CelerisTypeError, ConfigError, DataError, did_you_mean

Output = pd.Series | pd.DataFrame | np.ndarray


@dataclass(frozen=True)
class Bars:
    """The numeric inputs of one indicator call, aligned, plus how to shape its output."""

    values: tuple[np.ndarray, ...]  # float64, equal shape: [T] or [T, A] with contiguous columns
    index: pd.Index | None  # None for numpy input: return numpy
    assets: pd.Index | None = None  # the asset columns of 2-D input; None for 1-D input

    @property
    def n_bars(self) -> int:
        return int(self.values[0].shape[0])


_BAR_FIELDS = frozenset({"open", "high", "low", "close", "volume"})


def _field_column(columns: pd.Index, field: str) -> Any:
    """The label of ``field`` among ``columns`` (exact, else case-insensitive), or None."""
    if field in columns:
        return field
    by_lower = {str(c).lower(): c for c in columns}
    return by_lower.get(field)


def _from_frame(frame: pd.DataFrame, param: str, field: str) -> pd.Series | pd.DataFrame:
    # Three kinds of frame: a bar frame (columns open, high, low, close, volume: take `field`,
    # 1-D), a multi-asset bar frame (MultiIndex columns (symbol, field): take `field` of every
    # symbol, 2-D), or anything else: one column per asset of this very input (2-D).
    if isinstance(frame.columns, pd.MultiIndex):
        # (symbol, field) or (field, symbol): celeris.data.panel is the one place that tells
        # them apart. Imported here so that only multi-asset frames load celeris.data.
        from celeris.data.panel import field_level

        level = field_level(frame.columns, param)
        fields = frame.columns.get_level_values(level).unique()
        label = _field_column(fields, field)
        if label is None:
            raise ConfigError(
                f"{param}: the frame's field level has no {field!r} field"
                f"{did_you_mean(field, map(str, fields))}; it has {', '.join(map(str, fields))}"
            )
        return frame.xs(label, axis=1, level=level)
    label = _field_column(frame.columns, field)
    if label is not None:
        return frame[label]
    if any(str(c).lower() in _BAR_FIELDS for c in frame.columns):
        raise ConfigError(
            f"{param}: the frame has no {field!r} column"
            f"{did_you_mean(field, map(str, frame.columns))}; pass a bar frame with columns "
            "open, high, low, close, volume, a Series, or a frame with one column per asset"
        )
    return frame


def require_bar_frame(frame: pd.DataFrame, fields: Sequence[str], func: str) -> None:
    """Refuse a single frame for a multi-input indicator unless it is a bar frame.

    ``atr(frame)`` must not read a frame of closes as high, low and close at once.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        return
    missing = [f for f in fields if _field_column(frame.columns, f) is None]
    if missing:
        raise ConfigError(
            f"{func}: the frame has no {missing[0]!r} column"
            f"{did_you_mean(missing[0], map(str, frame.columns))}; pass one bar frame (columns "
            f"{', '.join(fields)}), one frame with MultiIndex columns (symbol, field), or "
            f"{', '.join(fields)} separately (Series, or frames with one column per asset)"
        )


def _series_values(series: pd.Series, param: str) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise ConfigError(f"{param} must be numeric, got dtype {dtype}")
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    # a read-only view (pandas copy-on-write) would make numba compile a second specialisation
    return values if values.flags.writeable else values.copy()


def _frame_values(frame: pd.DataFrame, param: str) -> np.ndarray:
    for label, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise ConfigError(f"{param} column {label!r} must be numeric, got dtype {dtype}")
    # [T, A] in Fortran order: each asset's column is one contiguous 1-D array for the kernels
    return np.asfortranarray(frame.to_numpy(dtype=np.float64, na_value=np.nan))


def _array_values(array: np.ndarray, param: str) -> np.ndarray:
    if array.ndim not in (1, 2):
        raise ConfigError(
            f"{param} must be 1-D (one series) or 2-D (time x assets), got an array of shape "
            f"{array.shape}"
        )
    if array.dtype.kind not in "iuf":
        raise ConfigError(f"{param} must be numeric, got dtype {array.dtype}")
    if array.ndim == 2:
        return np.array(array, dtype=np.float64, order="F")  # a copy: columns contiguous
    values = np.ascontiguousarray(array, dtype=np.float64)
    return values if values.flags.writeable else values.copy()


def _one_input(
    obj: Any, param: str, field: str
) -> tuple[np.ndarray, pd.Index | None, pd.Index | None]:
    if isinstance(obj, pd.DataFrame):
        obj = _from_frame(obj, param, field)
    if isinstance(obj, pd.Series):
        return _series_values(obj, param), obj.index, None
    if isinstance(obj, pd.DataFrame):
        return _frame_values(obj, param), obj.index, obj.columns
    if isinstance(obj, np.ndarray):
        values = _array_values(obj, param)
        return values, None, (pd.RangeIndex(values.shape[1]) if values.ndim == 2 else None)
    raise CelerisTypeError(
        f"{param} must be a pandas Series, a 1-D or 2-D numpy array, a bar frame or a frame "
        f"with one column per asset, got {type(obj).__name__}"
    )


def _where(index: pd.Index | None, pos: int) -> str:
    return f"bar {pos}" if index is None else f"{index[pos]!r} (bar {pos})"


def _named(param: str, assets: pd.Index | None, column: int) -> str:
    return param if assets is None else f"{param}[{assets[column]!r}]"


def bars(inputs: Sequence[tuple[Any, str, str]]) -> Bars:
    """Coerce and check ``(object, parameter name, bar-frame field)`` inputs of one call.

    Every input is 1-D (a Series, a 1-D array, a bar frame's field) or every input is 2-D,
    time x assets (a 2-D array, a frame with one column per asset, a frame with MultiIndex
    columns ``(symbol, field)``), with the same assets.

    Raises
    ------
    CelerisTypeError
        An input is not a Series, array or DataFrame.
    ConfigError
        An input is non-numeric or more than 2-D, or a bar frame lacks the field.
    DataError
        An input is empty or holds ``inf``, or inputs differ in shape, index or assets.
    """
    values: list[np.ndarray] = []
    index: pd.Index | None = None
    assets: pd.Index | None = None
    first_param = ""
    for i, (obj, param, field) in enumerate(inputs):
        arr, idx, cols = _one_input(obj, param, field)
        if arr.shape[0] == 0:
            raise DataError(f"{param} is empty: an indicator needs at least one bar")
        if arr.ndim == 2 and arr.shape[1] == 0:
            raise DataError(f"{param} has no columns: give at least one asset")
        if i == 0:
            index, assets, first_param = idx, cols, param
        else:
            if arr.ndim != values[0].ndim:
                raise DataError(
                    f"{param} is {arr.ndim}-D but {first_param} is {values[0].ndim}-D; pass "
                    "every input as one series or every input as time x assets"
                )
            if arr.shape[0] != values[0].shape[0]:
                raise DataError(
                    f"{param} has {arr.shape[0]} bars but {first_param} has {values[0].shape[0]}"
                )
            if arr.ndim == 2 and arr.shape[1] != values[0].shape[1]:
                raise DataError(
                    f"{param} has {arr.shape[1]} asset columns but {first_param} has "
                    f"{values[0].shape[1]}"
                )
            if idx is not None and index is not None and not idx.equals(index):
                raise DataError(f"{param} and {first_param} have different indexes")
            if (
                cols is not None
                and assets is not None
                and not isinstance(cols, pd.RangeIndex)
                and not isinstance(assets, pd.RangeIndex)
                and not cols.equals(assets)
            ):
                raise DataError(f"{param} and {first_param} have different asset columns")
            if index is None:
                index = idx
            if isinstance(assets, pd.RangeIndex) and cols is not None:
                assets = cols
        bad = np.isinf(arr)
        if bad.any():
            flat = np.flatnonzero(bad.any(axis=1)) if arr.ndim == 2 else np.flatnonzero(bad)
            pos = int(flat[0])
            column = int(np.flatnonzero(bad[pos])[0]) if arr.ndim == 2 else 0
            raise DataError(f"{_named(param, cols, column)} is infinite at {_where(idx, pos)}")
        values.append(arr)
    return Bars(tuple(values), index, assets)


def warn_on_gap(data: Bars, names: Sequence[str], stacklevel: int = 3) -> None:
    """Warn when a NaN follows the first valid bar: the indicator is NaN from there on.

    For 2-D input each asset column is checked on its own; one warning names the first column
    with a gap and counts the others.
    """
    if len(data.values) == 1:
        nan = np.isnan(data.values[0])
    else:
        nan = np.logical_or.reduce([np.isnan(v) for v in data.values])
    columns = [nan] if nan.ndim == 1 else [nan[:, a] for a in range(nan.shape[1])]
    gaps: list[tuple[int, int]] = []  # (column, bar)
    for a, col in enumerate(columns):
        valid = np.flatnonzero(~col)
        if valid.size == 0:
            continue
        gap = np.flatnonzero(col[valid[0] :])
        if gap.size:
            gaps.append((a, int(valid[0] + gap[0])))
    if not gaps:
        return
    column, pos = gaps[0]
    what = " / ".join(names)
    if data.assets is not None:
        what += f" column {data.assets[column]!r}"
    others = f" ({len(gaps) - 1} more column(s) have a gap)" if len(gaps) > 1 else ""
    warnings.warn(
        f"{what} has NaN at {_where(data.index, pos)} after the first valid bar; "
        f"the indicator is NaN from that bar on{others}",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


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
        items, scalar = [check_int(param, v) for v in value], False
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


def empty_columns(n_bars: int, n_columns: int) -> np.ndarray:
    """Return an uninitialised ``(n_bars, n_columns)`` float64 array with contiguous columns,
    the ``out`` the kernels fill (numpy's allocation gets huge pages where numba's does not)."""
    return np.empty((n_columns, n_bars)).T


def run_kernel(
    kernel: Any, data: Bars, args: Sequence[Any], n_params: int, n_outputs: int
) -> list[np.ndarray]:
    """Run ``kernel(*inputs, *args, out)`` and return its ``n_outputs`` matrices.

    1-D input: one call, matrices ``(n_bars, n_params)``. 2-D input (``A`` assets): one call
    per asset column, each asset with its own leading-NaN span, filling views of one buffer per
    output, so the matrices are ``(n_bars, n_params * A)`` with columns ordered parameter-major
    (all assets of the first parameter set, then the next), without a copy.
    """
    n = data.n_bars
    if data.values[0].ndim == 1:
        outs = [empty_columns(n, n_params) for _ in range(n_outputs)]
        got = kernel(*data.values, *args, outs[0] if n_outputs == 1 else tuple(outs))
        return [got] if n_outputs == 1 else list(got)
    n_assets = data.values[0].shape[1]
    bufs = [np.empty((n_params, n_assets, n)) for _ in range(n_outputs)]  # [P, A, T]
    for a in range(n_assets):
        views = [buf[:, a, :].T for buf in bufs]  # [T, P] of asset a
        kernel(*(v[:, a] for v in data.values), *args, views[0] if n_outputs == 1 else tuple(views))
    return [buf.reshape(n_params * n_assets, n).T for buf in bufs]  # [T, P * A]


def shape_output(
    matrix: np.ndarray,
    columns: pd.Index,
    scalar: bool,
    name: str,
    index: Any,
    assets: pd.Index | None = None,
) -> Output:
    """Turn a kernel's ``(n_bars, n_params)`` matrix into the caller's type.

    1-D input (``assets`` None): one parameter set given as scalars gives a Series named
    ``name`` (a 1-D array for numpy input); any sequence a DataFrame with ``columns`` (a
    RangeIndex for numpy input).

    2-D input (``matrix`` of shape ``(n_bars, n_params * A)``, parameter-major): scalars give
    a time x assets DataFrame with the input's asset columns (a 2-D array for numpy input); any
    sequence a DataFrame whose columns are a MultiIndex of the parameter level(s) and the asset
    level, ``result[20]`` being the time x assets frame of window 20.
    """
    if assets is None:
        if scalar:
            column = matrix[:, 0]
            return column.copy() if index is None else pd.Series(column, index=index, name=name)
        return pd.DataFrame(matrix, index=index, columns=columns, copy=False)
    if scalar:
        if index is None:
            return matrix
        return pd.DataFrame(matrix, index=index, columns=assets.copy(), copy=False)
    params = columns.to_frame(index=False) if isinstance(columns, pd.MultiIndex) else None
    param_arrays = (
        [params[c].to_numpy() for c in params.columns]
        if params is not None
        else [columns.to_numpy()]
    )
    n_assets = len(assets)
    arrays = [np.repeat(p, n_assets) for p in param_arrays]
    arrays.append(np.tile(assets.to_numpy(), len(columns)))
    names = [*columns.names, assets.name]
    return pd.DataFrame(
        matrix, index=index, columns=pd.MultiIndex.from_arrays(arrays, names=names), copy=False
    )

"""Drawdown of a price or equity series: the one definition the backtest and the analytics share.

It lives here, in the lowest layer both may import (``celeris.backtest`` may import
``celeris.indicators``; ``celeris.analytics`` and ``celeris.llm`` import the backtest and sit
above it), and :mod:`celeris.analytics.risk` re-exports it beside VaR / CVaR. The backtest
kernel keeps its own online drawdown (one pass, no curve materialised) with this definition:
value over its running peak, first bar included.

A drawdown is a fraction ``<= 0`` (``-0.25`` = 25% below the peak).
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd

from celeris.errors import CelerisTypeError, DataError

__all__ = ["MaxDrawdown", "drawdown", "max_drawdown"]

T = TypeVar("T", np.ndarray, pd.Series, pd.DataFrame)


class MaxDrawdown(NamedTuple):
    """The deepest drawdown: its depth (``<= 0``) and the positions of its peak and trough."""

    depth: float
    peak: int
    trough: int


def _checked(values: Any, what: str = "values") -> np.ndarray:
    """``values`` as a float64 array ``[T]`` or ``[T, C]``, finite, first row > 0."""
    if isinstance(values, pd.Series | pd.DataFrame):
        arr = values.to_numpy()
    elif isinstance(values, np.ndarray | list | tuple):
        arr = np.asarray(values)
    else:
        raise CelerisTypeError(
            f"{what} must be an array, a Series or a DataFrame, got {type(values).__name__}"
        )
    if arr.ndim not in (1, 2):
        raise DataError(f"{what} must be 1-D or 2-D (time x columns), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise DataError(f"{what} is not finite ({arr[where]}) at position {where}")
    first = arr[0] if arr.ndim == 1 else arr[0].min()
    # Only the first value must be positive: then every running peak is, and an equity that
    # later falls through zero (a leveraged loss) has a drawdown below -100%, as it should.
    if first <= 0:
        raise DataError(f"{what} must start > 0 (prices or equity), got {first} on the first bar")
    return arr


def drawdown(values: T) -> T:
    """Return the drawdown of ``values`` from their running peak, ``values / peak - 1``.

    Same as ``values / values.cummax() - 1`` (``Portfolio.drawdown``'s definition), per column
    for 2-D input.

    Parameters
    ----------
    values : numpy.ndarray, pandas.Series or pandas.DataFrame
        Prices or equity, ``[T]`` or ``[T, C]``, finite, the first row > 0.

    Returns
    -------
    Same type and labels as ``values``
        float64, ``<= 0``, 0 at every new peak.

    Examples
    --------
    >>> drawdown(np.array([100.0, 120.0, 90.0, 130.0])).tolist()
    [0.0, 0.0, -0.25, 0.0]
    """
    arr = _checked(values)
    out = arr / np.maximum.accumulate(arr, axis=0) - 1.0
    if isinstance(values, pd.Series):
        return pd.Series(out, index=values.index, name=values.name)
    if isinstance(values, pd.DataFrame):
        return pd.DataFrame(out, index=values.index, columns=values.columns)
    return out


def max_drawdown(values: Any) -> MaxDrawdown:
    """Return the deepest drawdown of one series with the positions of its peak and trough.

    The trough is the first bar of the lowest drawdown; the peak the first bar of the highest
    value up to it.

    Parameters
    ----------
    values : array-like or pandas.Series
        Prices or equity, 1-D, finite, the first value > 0.

    Examples
    --------
    >>> max_drawdown([100.0, 120.0, 90.0, 130.0])
    MaxDrawdown(depth=-0.25, peak=1, trough=2)
    """
    arr = _checked(values)
    if arr.ndim != 1:
        raise DataError(f"max_drawdown takes one series, got shape {arr.shape}")
    dd = arr / np.maximum.accumulate(arr) - 1.0
    trough = int(np.argmin(dd))
    peak = int(np.argmax(arr[: trough + 1]))
    return MaxDrawdown(float(dd[trough]), peak, trough)

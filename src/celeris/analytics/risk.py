"""Risk of a return or value series: drawdowns and historical VaR / CVaR.

Plain numpy on one series (time on the only axis); the LLM's risk and price-action summaries
read their drawdown and VaR/CVaR figures from here. The backtest keeps its own online drawdown
inside the simulation kernel (one pass, no curve materialised); its definition is the same
(value over its running peak, first bar included).

Conventions: a drawdown is a fraction ``<= 0`` (``-0.25`` = 25% below the peak); VaR and CVaR
are positive losses (``0.02`` = a 2% loss).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from celeris.errors import CelerisTypeError, ConfigError, DataError

__all__ = ["MaxDrawdown", "drawdown", "historical_var_cvar", "max_drawdown"]


class MaxDrawdown(NamedTuple):
    """The deepest drawdown: its depth (``<= 0``) and the positions of its peak and trough."""

    depth: float
    peak: int
    trough: int


def _series(values: Any, what: str) -> np.ndarray:
    if not hasattr(values, "__len__") or isinstance(values, str | bytes):
        raise CelerisTypeError(f"{what} must be a 1-D array or Series, got {type(values).__name__}")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{what} is empty")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(f"{what} is not finite ({arr[bad[0]]}) at position {int(bad[0])}")
    return arr


def _values(values: Any) -> np.ndarray:
    arr = _series(values, "values")
    # Only the first value must be positive: then every running peak is, and an equity that
    # later falls through zero (a leveraged loss) has a drawdown below -100%, as it should.
    if arr[0] <= 0:
        raise DataError(f"values must start > 0 (prices or equity), got {arr[0]} at position 0")
    return arr


def drawdown(values: Any) -> np.ndarray:
    """Return the drawdown of ``values`` from their running peak, ``values / peak - 1``.

    Same as ``values / values.cummax() - 1`` (``Portfolio.drawdown``'s definition).

    Parameters
    ----------
    values : array-like
        Prices or equity, 1-D, finite, the first value > 0.

    Returns
    -------
    numpy.ndarray
        float64, ``<= 0``, 0 at every new peak.

    Examples
    --------
    >>> drawdown([100.0, 120.0, 90.0, 130.0]).tolist()
    [0.0, 0.0, -0.25, 0.0]
    """
    arr = _values(values)
    return arr / np.maximum.accumulate(arr) - 1.0


def max_drawdown(values: Any) -> MaxDrawdown:
    """Return the deepest drawdown of ``values`` with the positions of its peak and trough.

    The trough is the first bar of the lowest drawdown; the peak the first bar of the highest
    value up to it.

    Parameters
    ----------
    values : array-like
        Prices or equity, 1-D, finite, the first value > 0.

    Examples
    --------
    >>> max_drawdown([100.0, 120.0, 90.0, 130.0])
    MaxDrawdown(depth=-0.25, peak=1, trough=2)
    """
    arr = _values(values)
    dd = arr / np.maximum.accumulate(arr) - 1.0
    trough = int(np.argmin(dd))
    peak = int(np.argmax(arr[: trough + 1]))
    return MaxDrawdown(float(dd[trough]), peak, trough)


def historical_var_cvar(returns: Any, level: float = 0.95) -> tuple[float, float]:
    """Return the historical value at risk and conditional value at risk of ``returns``.

    Historical simulation, no distribution assumed: VaR is minus the ``1 - level`` quantile of
    the returns (numpy's linear interpolation); CVaR (expected shortfall) is minus the mean of
    the returns at or below that quantile.

    Parameters
    ----------
    returns : array-like
        Simple returns per bar, 1-D, finite.
    level : float
        Confidence level in ``(0, 1)``: 0.95 looks at the worst 5% of bars.

    Returns
    -------
    (float, float)
        VaR and CVaR as positive losses (negative when even the tail gains).

    Examples
    --------
    >>> var, cvar = historical_var_cvar([0.01, -0.02, 0.03, -0.05, 0.0], level=0.75)
    >>> round(var, 6), round(cvar, 6)
    (0.02, 0.035)
    """
    if isinstance(level, bool) or not isinstance(level, int | float | np.floating):
        raise CelerisTypeError(f"level must be a number in (0, 1), got {level!r}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level={level!r} must be between 0 and 1 (0.95 = the worst 5% of bars)")
    arr = _series(returns, "returns")
    q = float(np.quantile(arr, 1.0 - float(level)))
    return -q, -float(arr[arr <= q].mean())

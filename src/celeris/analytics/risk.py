"""Risk of a return or value series: drawdowns and historical VaR / CVaR.

Plain numpy; the LLM's risk and price-action summaries read their drawdown and VaR/CVaR
figures from here. :func:`drawdown` and :func:`max_drawdown` are defined in
:mod:`celeris.indicators.drawdown`, the lowest layer that the backtest (which computes
drawdowns too) may import, and re-exported here.

Conventions: a drawdown is a fraction ``<= 0`` (``-0.25`` = 25% below the peak); VaR and CVaR
are positive losses (``0.02`` = a 2% loss).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from celeris.checks import check_fraction
from celeris.errors import CelerisTypeError, DataError
from celeris.indicators.drawdown import MaxDrawdown, drawdown, max_drawdown

__all__ = ["MaxDrawdown", "drawdown", "historical_var_cvar", "max_drawdown"]


def _returns(values: Any) -> np.ndarray:
    if not hasattr(values, "__len__") or isinstance(values, str | bytes):
        raise CelerisTypeError(
            f"returns must be a 1-D array or Series, got {type(values).__name__}"
        )
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"returns must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError("returns is empty")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"returns must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(f"returns is not finite ({arr[bad[0]]}) at position {int(bad[0])}")
    return arr


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
    level = check_fraction(
        "level", level, open_low=True, open_high=True, reason="0.95 = the worst 5% of bars"
    )
    arr = _returns(returns)
    q = float(np.quantile(arr, 1.0 - level))
    return -q, -float(arr[arr <= q].mean())

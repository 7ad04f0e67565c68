"""Performance analytics: overfitting statistics for strategies selected out of many trials,
the risk of one series (drawdowns, historical VaR / CVaR), and portfolio optimisation
(covariance estimators, optimal weights for one date or every rebalance date at once).

See :mod:`celeris.analytics.overfitting` for the per-period and raw-kurtosis conventions and
:mod:`celeris.analytics.risk` for the sign conventions of drawdowns and VaR.

Names load lazily: ``celeris.analytics.risk`` (numpy only, used by the LLM's market
summaries) does not pull in scipy, which the overfitting statistics need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeris.analytics.constraints import PortfolioConstraints
    from celeris.analytics.covariance import EWMA, LedoitWolf, SampleCovariance, covariance
    from celeris.analytics.optimize import (
        OptimizationResult,
        optimize_portfolio,
        optimize_weights,
    )
    from celeris.analytics.overfitting import (
        deflated_sharpe_from_returns,
        deflated_sharpe_ratio,
        expected_max_sharpe,
        probabilistic_sharpe_ratio,
        sharpe_ratio,
    )
    from celeris.analytics.risk import (
        MaxDrawdown,
        drawdown,
        historical_var_cvar,
        max_drawdown,
    )
    from celeris.analytics.rolling import rolling_weights

_EXPORTS = {
    "deflated_sharpe_from_returns": "celeris.analytics.overfitting",
    "deflated_sharpe_ratio": "celeris.analytics.overfitting",
    "expected_max_sharpe": "celeris.analytics.overfitting",
    "probabilistic_sharpe_ratio": "celeris.analytics.overfitting",
    "sharpe_ratio": "celeris.analytics.overfitting",
    "MaxDrawdown": "celeris.analytics.risk",
    "drawdown": "celeris.analytics.risk",
    "historical_var_cvar": "celeris.analytics.risk",
    "max_drawdown": "celeris.analytics.risk",
    "PortfolioConstraints": "celeris.analytics.constraints",
    "EWMA": "celeris.analytics.covariance",
    "LedoitWolf": "celeris.analytics.covariance",
    "SampleCovariance": "celeris.analytics.covariance",
    "covariance": "celeris.analytics.covariance",
    "OptimizationResult": "celeris.analytics.optimize",
    "optimize_portfolio": "celeris.analytics.optimize",
    "optimize_weights": "celeris.analytics.optimize",
    "rolling_weights": "celeris.analytics.rolling",
}

__all__ = [
    "EWMA",
    "LedoitWolf",
    "MaxDrawdown",
    "OptimizationResult",
    "PortfolioConstraints",
    "SampleCovariance",
    "covariance",
    "deflated_sharpe_from_returns",
    "deflated_sharpe_ratio",
    "drawdown",
    "expected_max_sharpe",
    "historical_var_cvar",
    "max_drawdown",
    "optimize_portfolio",
    "optimize_weights",
    "probabilistic_sharpe_ratio",
    "rolling_weights",
    "sharpe_ratio",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'celeris.analytics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

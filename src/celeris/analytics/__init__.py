"""Performance analytics: overfitting statistics for strategies selected out of many trials,
and the risk of one series (drawdowns, historical VaR / CVaR).

See :mod:`celeris.analytics.overfitting` for the per-period and raw-kurtosis conventions and
:mod:`celeris.analytics.risk` for the sign conventions of drawdowns and VaR.

Names load lazily: ``celeris.analytics.risk`` (numpy only, used by the LLM's market
summaries) does not pull in scipy, which the overfitting statistics need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
}

__all__ = [
    "MaxDrawdown",
    "deflated_sharpe_from_returns",
    "deflated_sharpe_ratio",
    "drawdown",
    "expected_max_sharpe",
    "historical_var_cvar",
    "max_drawdown",
    "probabilistic_sharpe_ratio",
    "sharpe_ratio",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'celeris.analytics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

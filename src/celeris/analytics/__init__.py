"""Performance analytics: overfitting statistics for strategies selected out of many trials.

See :mod:`celeris.analytics.overfitting` for the per-period and raw-kurtosis conventions.
"""

from __future__ import annotations

from celeris.analytics.overfitting import (
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
)

__all__ = [
    "deflated_sharpe_from_returns",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "sharpe_ratio",
]

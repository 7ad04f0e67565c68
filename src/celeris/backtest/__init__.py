"""Vectorized backtests: ``from_signals``, :class:`Portfolio`, strategies, sweeps, walk-forward."""

from celeris.backtest.portfolio import METRICS, Portfolio, from_signals

__all__ = ["METRICS", "Portfolio", "from_signals"]

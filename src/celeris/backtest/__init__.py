"""Vectorized backtests: ``from_signals``, :class:`Portfolio`, strategies, sweeps, walk-forward."""

from celeris.backtest.portfolio import METRICS, Portfolio, from_signals
from celeris.backtest.returns import returns_metrics
from celeris.backtest.strategies import STRATEGIES, Param, Strategy, get_strategy, register
from celeris.backtest.sweep import SweepResult, sweep
from celeris.backtest.walk_forward import WalkForwardResult, walk_forward

__all__ = [
    "METRICS",
    "STRATEGIES",
    "Param",
    "Portfolio",
    "Strategy",
    "SweepResult",
    "WalkForwardResult",
    "from_signals",
    "get_strategy",
    "register",
    "returns_metrics",
    "sweep",
    "walk_forward",
]

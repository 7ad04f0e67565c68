"""Vectorized backtests: ``from_signals``, :class:`Portfolio`, strategies, sweeps, walk-forward."""

from celeris.backtest.metrics import METRICS
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.returns import returns_metrics
from celeris.backtest.signals import from_signals
from celeris.backtest.strategies import STRATEGIES, Param, Strategy, get_strategy, register
from celeris.backtest.sweep import MAX_VARIANTS, SweepEstimate, SweepResult, estimate_sweep, sweep
from celeris.backtest.walk_forward import WalkForwardResult, walk_forward

__all__ = [
    "MAX_VARIANTS",
    "METRICS",
    "STRATEGIES",
    "Param",
    "Portfolio",
    "Strategy",
    "SweepEstimate",
    "SweepResult",
    "WalkForwardResult",
    "estimate_sweep",
    "from_signals",
    "get_strategy",
    "register",
    "returns_metrics",
    "sweep",
    "walk_forward",
]

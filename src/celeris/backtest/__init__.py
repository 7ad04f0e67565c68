"""Vectorized backtests: ``from_signals``, ``from_orders``, :class:`Portfolio`, :class:`Book`, strategies, sweeps, walk-forward."""

from celeris.backtest.book import Book
from celeris.backtest.metrics import METRICS
from celeris.backtest.orders import from_orders
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.rebalance import rebalance
from celeris.backtest.returns import returns_metrics
from celeris.backtest.signals import from_signals
from celeris.backtest.strategies import STRATEGIES, Param, Strategy, get_strategy, register
from celeris.backtest.sweep import MAX_VARIANTS, SweepEstimate, SweepResult, estimate_sweep, sweep
from celeris.backtest.walk_forward import WalkForwardResult, walk_forward

__all__ = [
    "MAX_VARIANTS",
    "METRICS",
    "STRATEGIES",
    "Book",
    "Param",
    "Portfolio",
    "Strategy",
    "SweepEstimate",
    "SweepResult",
    "WalkForwardResult",
    "estimate_sweep",
    "from_orders",
    "from_signals",
    "get_strategy",
    "rebalance",
    "register",
    "returns_metrics",
    "sweep",
    "walk_forward",
]

"""The :class:`Portfolio` that :func:`~celeris.backtest.from_signals` returns."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays
from celeris.backtest.engine import KernelInputs, KernelOutputs, simulate
from celeris.backtest.metrics import (
    BENCHMARK_METRICS,
    CASH_METRICS,
    METRICS,
    PERCENT_METRICS,
    metric_slot,
    metrics_frame,
    rank_order,
)
from celeris.backtest.returns import bar_returns, returns_metrics
from celeris.checks import check_int
from celeris.errors import CelerisTypeError, CelerisWarning, ConfigError

# Metric metadata lives in celeris.backtest.metrics and from_signals in celeris.backtest.signals;
# the names stay importable from here (from_signals through the module __getattr__ below, so that
# signals.py can import Portfolio without an import cycle).
__all__ = [
    "BENCHMARK_METRICS",
    "CASH_METRICS",
    "FILL_RULES",
    "METRICS",
    "PERCENT_METRICS",
    "Portfolio",
]


#: How each ``execution`` fills an order, in words, for reports.
FILL_RULES = {
    "next_open": "fills at the next bar's open",
    "close": "fills at the signal bar's close",
}


class Portfolio:
    """Result of a simulation: metrics for every column, curves and records on request.

    Metrics are computed inside the kernel, so a large sweep costs only (n_cols x 22) floats.
    ``equity``, ``returns``, ``drawdown``, ``orders`` and ``trades`` re-run the (fast) kernel for
    the columns held and are cached; select columns first (``pf[label]`` or :meth:`best`) to keep
    them small.
    """

    def __init__(
        self,
        inputs: KernelInputs,
        index: pd.Index,
        columns: pd.Index,
        *,
        freq: pd.Timedelta | None,
        year_days: YearDays,
        execution: str,
        device: str = "auto",
        outputs: KernelOutputs | None = None,
    ) -> None:
        self._inputs = inputs
        self.index = index
        self.columns = columns
        self.freq = freq
        self.annualisation = year_days
        self.execution = execution
        self.device = device
        #: What was backtested, for report titles (``"sma_cross (fast=10, slow=50)"``); set by
        #: sweeps and the CLI, or by you.
        self.name: str | None = None
        self._outputs = outputs if outputs is not None else simulate(inputs, device=device)

    # ---- selection ----
    def __len__(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        return f"Portfolio({len(self.index)} bars x {len(self.columns)} columns)"

    def __getitem__(self, key: Any) -> Portfolio:
        """Select columns by label (a parameter tuple such as ``pf[(10, 50)]``) or label list."""
        try:
            loc = self.columns.get_indexer_for([key] if not isinstance(key, list) else key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            loc = np.array([-1])
        if (loc < 0).any():
            raise KeyError(f"no column {key!r}; columns are named {list(self.columns.names)}")
        return self.iloc(loc)

    def iloc(self, positions: Any) -> Portfolio:
        """Select columns by position."""
        arr = np.atleast_1d(np.asarray(positions))
        if arr.dtype == np.bool_:
            if arr.shape != (len(self.columns),):
                raise ConfigError(
                    f"a boolean mask must have one entry per column ({len(self.columns)})"
                )
            arr = np.flatnonzero(arr)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise CelerisTypeError(
                f"iloc takes integer positions or a boolean mask, got dtype {arr.dtype}"
            )
        n = len(self.columns)
        pos = arr.astype(np.int64)
        if ((pos < -n) | (pos >= n)).any():
            raise ConfigError(
                f"column position out of range for {n} columns: {pos[(pos < -n) | (pos >= n)][0]}"
            )
        pos = pos % n
        out = KernelOutputs(self._outputs.metrics[pos], None, None, None)
        selected = Portfolio(
            self._inputs.select(pos),
            self.index,
            self.columns[pos],
            freq=self.freq,
            year_days=self.annualisation,
            execution=self.execution,
            device=self.device,
            outputs=out,
        )
        selected.name = self.name
        return selected

    # ---- how it was simulated ----
    @property
    def year_days(self) -> float:
        """Days per year used to annualise (see :attr:`annualisation` for where it came from)."""
        return self.annualisation.days

    @property
    def fill_rule(self) -> str:
        """How orders filled, in words (``"fills at the next bar's open"``)."""
        return FILL_RULES[self.execution]

    def describe(self) -> str:
        """One line naming the fill rule and the annualisation, for report titles and tables."""
        return f"{self.execution} ({self.fill_rule}); {self.annualisation.describe()}"

    # ---- metrics ----
    @property
    def ann_factor(self) -> float:
        """Bars per year used to annualise (``year_days * 1 day / freq``)."""
        return self._inputs.ann_factor

    @property
    def init_cash(self) -> pd.Series:
        return pd.Series(
            self._inputs.params[:, K.P_INIT_CASH], index=self.columns, name="init_cash"
        )

    @property
    def metric_values(self) -> np.ndarray:
        """The kernel's metrics, (n_cols, len(METRICS)) float64; column ``METRICS[name][0]``.

        What :meth:`stats` is built from, without the frame: sweeps collect it chunk by chunk.
        A read-only view (recompute nothing, change nothing).
        """
        view = self._outputs.metrics.view()
        view.flags.writeable = False
        return view

    def stats(self, group_by: Any = None) -> pd.DataFrame:
        """Return one row per column with every metric (see :data:`METRICS` for definitions).

        ``group_by`` (``True``, a column level name, or one label per column) takes columns
        together as vectorbt's regrouping does: each kept its own cash, and a group's row is the
        metrics of the sum of their values (:mod:`celeris.backtest.regroup`); trades count
        over its columns. To share one balance, simulate a book (``cash_sharing=True``).

        Returns are fractions (0.12 = 12%); ``max_drawdown_duration`` is a Timedelta when the bar
        spacing is known, else a bar count. ``benchmark_return``, ``benchmark_sharpe`` and
        ``benchmark_max_drawdown`` are those of buying and holding the same bars (first close
        to last close, no costs); ``execution`` and ``year_days`` say how orders filled and how
        the figures were annualised (``stats().attrs["setup"]`` says it in words). Without a datetime index or ``freq=`` the bar spacing
        is unknown and the annualised metrics (cagr, volatility, sharpe, sortino, calmar) are NaN,
        with a :class:`~celeris.errors.CelerisWarning`.
        """
        if np.isnan(self.ann_factor):
            warnings.warn(
                "bar spacing unknown (no datetime index and no freq=...): annualised metrics are NaN; "
                "pass freq='1h' (or the data's spacing) to from_signals",
                CelerisWarning,
                stacklevel=2,
            )
        if group_by is not None and group_by is not False:
            from celeris.backtest.regroup import regrouped_stats

            return regrouped_stats(self, group_by)
        frame = metrics_frame(self._outputs.metrics, self.columns, self.freq)
        frame.insert(0, "start_value", self._inputs.params[:, K.P_INIT_CASH])
        frame.insert(0, "end", self.index[-1])
        frame.insert(0, "start", self.index[0])
        for name, values in self._benchmark().items():
            frame[name] = values
        frame["execution"] = self.execution
        frame["year_days"] = self.annualisation.days
        frame.attrs["setup"] = self.describe()
        return frame

    def _benchmark(self) -> dict[str, np.ndarray]:
        """Buy-and-hold of the same bars: hold from the first close to the last, no costs."""
        close = self._inputs.close  # [n_bars, 1 or n_cols]
        out = {name: np.empty(close.shape[1]) for name in BENCHMARK_METRICS}
        for j in range(close.shape[1]):
            rets = np.empty(close.shape[0])
            rets[0] = 0.0
            rets[1:] = close[1:, j] / close[:-1, j] - 1.0
            m = returns_metrics(rets, self.ann_factor)
            for name in BENCHMARK_METRICS:
                key = name.removeprefix("benchmark_")
                out[name][j] = m["total_return" if key == "return" else key]
        return {k: np.broadcast_to(v, (len(self.columns),)) for k, v in out.items()}

    def best(self, metric: str = "sharpe", n: int = 10) -> pd.DataFrame:
        """Return the ``n`` best columns by ``metric`` (lowest first for drawdown-like metrics)."""
        slot = metric_slot(metric)
        n = check_int("n", n, minimum=1)
        return self.stats().iloc[rank_order(self._outputs.metrics[:, slot], metric)[:n]]

    # ---- curves and records (re-run on demand) ----
    @cached_property
    def _full(self) -> KernelOutputs:
        return simulate(self._inputs, device=self.device, keep_equity=True, keep_records=True)

    @property
    def arrays(self) -> KernelOutputs:
        """The full run's raw arrays: metrics, equity (bars x columns), order and trade records
        (rows of ``kernel.O_*``/``kernel.T_*`` fields), computed once and cached."""
        return self._full

    @property
    def equity(self) -> pd.DataFrame:
        """Portfolio value (cash + position x close) at each bar's close."""
        equity = self._full.equity
        assert equity is not None
        return pd.DataFrame(equity, index=self.index, columns=self.columns)

    @property
    def returns(self) -> pd.DataFrame:
        """Bar returns of the equity curve; the first bar is measured against ``init_cash``."""
        return bar_returns(self.equity, self._inputs.params[:, K.P_INIT_CASH])

    @property
    def drawdown(self) -> pd.DataFrame:
        """Drawdown of the equity curve from its running peak (<= 0)."""
        equity = self.equity
        return equity / equity.cummax() - 1.0

    @property
    def orders(self) -> pd.DataFrame:
        """Filled orders: column, time, side, size, fill price (after slippage), fees, stop flag."""
        rec = self._full.orders
        assert rec is not None
        cols = rec[:, K.O_COL].astype(np.int64)
        idx = rec[:, K.O_IDX].astype(np.int64)
        return pd.DataFrame(
            {
                "column": self._labels(cols),
                "time": self.index[idx],
                "bar": idx,
                "side": np.where(rec[:, K.O_SIDE] == K.BUY, "buy", "sell"),
                "size": rec[:, K.O_SIZE],
                "price": rec[:, K.O_PRICE],
                "fees": rec[:, K.O_FEES],
                "stop": rec[:, K.O_STOP] == 1.0,
            }
        )

    @property
    def trades(self) -> pd.DataFrame:
        """Trades as vectorbt's exit trades: one per exit (an open trade is valued at the last close)."""
        rec = self._full.trades
        assert rec is not None
        cols = rec[:, K.T_COL].astype(np.int64)
        entry = rec[:, K.T_ENTRY_IDX].astype(np.int64)
        exit_ = rec[:, K.T_EXIT_IDX].astype(np.int64)
        return pd.DataFrame(
            {
                "column": self._labels(cols),
                "direction": np.where(rec[:, K.T_DIRECTION] == K.TRADE_LONG, "long", "short"),
                "status": np.where(rec[:, K.T_STATUS] == K.TRADE_CLOSED, "closed", "open"),
                "size": rec[:, K.T_SIZE],
                "entry_time": self.index[entry],
                "entry_bar": entry,
                "entry_price": rec[:, K.T_ENTRY_PRICE],
                "entry_fees": rec[:, K.T_ENTRY_FEES],
                "exit_time": self.index[exit_],
                "exit_bar": exit_,
                "exit_price": rec[:, K.T_EXIT_PRICE],
                "exit_fees": rec[:, K.T_EXIT_FEES],
                "pnl": rec[:, K.T_PNL],
                "return": rec[:, K.T_RETURN],
                "position_id": rec[:, K.T_POSITION_ID].astype(np.int64),
            }
        )

    def _labels(self, positions: np.ndarray) -> list[Any]:
        return list(self.columns[positions]) if len(positions) else []

    @property
    def close(self) -> pd.DataFrame:
        """Close prices broadcast to the portfolio's columns."""
        arr = np.broadcast_to(self._inputs.close, (len(self.index), len(self.columns)))
        return pd.DataFrame(arr, index=self.index, columns=self.columns)

    # ---- reports ----
    def to_html(self, path: str | Path, *, column: Any = None, title: str | None = None) -> Path:
        """Write an interactive HTML report (price with trades, equity, drawdown, stats; a heat-map
        of the sweep when the columns have two parameter levels). Return the path."""
        from celeris.backtest.report import write_html

        return write_html(self, Path(path), column=column, title=title)

    def plot(self, *, column: Any = None, title: str | None = None) -> Any:
        """Return a plotly Figure of price with trades, equity and drawdown for one column.

        For notebooks: nothing is written (``fig.show()`` draws it, ``fig.write_html`` saves
        it). The default column is the only one, else the best by Sharpe ratio; the title names
        what was backtested, the period, the fill rule and the annualisation.
        """
        from celeris.backtest.report import figure

        return figure(self, column=column, title=title)

    def plot_png(self, path: str | Path, *, column: Any = None, title: str | None = None) -> Path:
        """Write a PNG of price with trades, equity and drawdown for one column. Return the path."""
        from celeris.backtest.report import write_png

        return write_png(self, Path(path), column=column, title=title)


def __getattr__(name: str) -> Any:
    """``celeris.backtest.portfolio.from_signals``: the function of :mod:`celeris.backtest.signals`."""
    if name == "from_signals":
        from celeris.backtest.signals import from_signals

        return from_signals
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Parameter sweeps: thousands of strategy variants, chunked over columns, metrics only."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.backtest.annualisation import resolve_year_days
from celeris.backtest.metrics import HIGHER_IS_WORSE, metric_slot, metrics_frame, rank_order
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.signals import OPTIONS, from_signals
from celeris.backtest.strategies import Strategy, check_bars, get_strategy
from celeris.checks import check_int
from celeris.compute import resolve_device
from celeris.errors import ConfigError, did_you_mean
from celeris.progress import progress_bar

#: Bytes of one signal matrix per chunk (entries and exits each): bounds memory on any sweep size.
CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 1024 * 2**20}
#: Most variants a sweep runs unless told otherwise (``max_variants=``, ``--max-variants``).
#: 1M variants keep ~0.2 GB of metrics and take ~20 s per 5,000 bars on two CPU threads.
MAX_VARIANTS = 1_000_000
#: Rough warm throughput in bar-variants per second, for estimates only: 2 CPU threads measured
#: 242-256 M/s on the MA-crossover sweep (benchmarks/RESULTS.md); a GPU is taken as 10x that.
_RATE = {"cpu": 2.0e8, "cuda": 2.0e9}


@dataclass(frozen=True)
class SweepEstimate:
    """What a sweep will cost, known before it starts."""

    strategy: str
    combinations: int  # product of the value lists
    variants: int  # admissible combinations (estimated when a large grid has a constraint)
    bars: int
    device: str
    seconds: float  # rough: bar-variants / a measured throughput
    memory_bytes: int  # metrics + parameters + indicators + one chunk of signal buffers

    def describe(self) -> str:
        """``"2,035 variants x 5,031 bars = 10.2 M bar-variants, ~0.1 s, ~41 MB (cpu)"``."""
        bar_variants = self.variants * self.bars
        return (
            f"{self.variants:,} variants x {self.bars:,} bars = {bar_variants / 1e6:,.1f} M "
            f"bar-variants, est. ~{_duration(self.seconds)} and ~{self.memory_bytes / 2**20:,.0f} "
            f"MB ({self.device})"
        )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_sweep(
    data: Any,
    strategy: str | Strategy,
    grid: Mapping[str, Any] | None = None,
    *,
    device: str = "auto",
) -> SweepEstimate:
    """Estimate a sweep's variants, time and memory from the grid's value lists, building nothing.

    Memory counts the metrics (22 floats per variant), the parameter frame, the indicator
    matrices (one float column per distinct value, a bound for window-based strategies) and
    the chunked signal buffers; time divides bar-variants by a measured throughput. Both are
    rough guides, shown before a sweep starts.
    """
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    engine = resolve_device(device)
    axes = strat.axes(grid)
    total, variants = strat.count(grid)
    n_bars = len(bars)
    distinct = sum(len(a) for a in axes)
    chunk = min(variants, max(8, CHUNK_BYTES[engine] // max(n_bars, 1)))
    memory = (
        variants * (K.N_METRICS + 3 * len(axes)) * 8
        + distinct * n_bars * 8
        + 4 * chunk * n_bars
        + bars.memory_usage(deep=False).sum()
    )
    seconds = variants * n_bars / _RATE[engine]
    return SweepEstimate(strat.name, total, variants, n_bars, engine, seconds, int(memory))


#: The ``from_signals`` options a sweep passes on: the per-column ones and the run-wide ones.
PORTFOLIO_OPTIONS = (
    *(o.name for o in OPTIONS),
    "stop_exit_price",
    "execution",
    "freq",
    "year_days",
)


def check_portfolio_options(
    options: Mapping[str, Any], bars: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Refuse unknown ``from_signals`` options early, with a did-you-mean hint.

    With ``bars``, also fix the defaults that depend on the data once for the whole run:
    ``year_days`` by :func:`~celeris.backtest.annualisation.resolve_year_days` on all the bars
    (so every window of a walk-forward annualises alike) and ``execution`` (next open).
    """
    for name in options:
        if name not in PORTFOLIO_OPTIONS:
            raise ConfigError(
                f"unknown backtest option {name!r}{did_you_mean(name, PORTFOLIO_OPTIONS)}"
            )
        value = options[name]
        if not (value is None or isinstance(value, str | pd.Timedelta) or np.isscalar(value)):
            raise ConfigError(
                f"backtest option {name} must be a single value in a sweep (got {value!r}); "
                "put values to explore in the strategy grid"
            )
    out = dict(options)
    if bars is not None:
        out["year_days"] = resolve_year_days(bars.index, out.get("year_days"))
        out["execution"] = out.get("execution") or "next_open"
    return out


@dataclass
class SweepResult:
    """Metrics of every parameter combination of a sweep (one row each)."""

    strategy: Strategy
    combos: pd.DataFrame
    metrics: np.ndarray
    bars: pd.DataFrame
    options: dict[str, Any]
    freq: pd.Timedelta | None
    device: str

    @property
    def index(self) -> pd.Index:
        if self.combos.shape[1] == 1:
            return pd.Index(self.combos.iloc[:, 0], name=self.combos.columns[0])
        return pd.MultiIndex.from_frame(self.combos)

    def stats(self) -> pd.DataFrame:
        """One row per combination with every metric of :data:`celeris.backtest.METRICS`."""
        frame = metrics_frame(self.metrics, self.index, self.freq)
        frame.insert(0, "start_value", float(self.options.get("init_cash", 100_000.0)))
        return frame

    def best(self, metric: str = "sharpe", n: int = 10) -> pd.DataFrame:
        """The ``n`` best combinations by ``metric`` (NaN last, drawdowns ascending)."""
        slot = metric_slot(metric)
        n = check_int("n", n, minimum=1)
        return self.stats().iloc[rank_order(self.metrics[:, slot], metric)[:n]]

    def best_position(self, metric: str = "sharpe") -> int:
        """Row (in ``combos``/``metrics``) of the best combination by ``metric``."""
        order = rank_order(self.metrics[:, metric_slot(metric)], metric)
        if not order.size:
            raise ConfigError(f"no combination has a finite {metric} (too few trades?)")
        return int(order[0])

    def best_params(self, metric: str = "sharpe") -> dict[str, Any]:
        """Parameters of the best combination by ``metric``."""
        pos = self.best_position(metric)
        return {
            str(k): v.item() if hasattr(v, "item") else v for k, v in self.combos.iloc[pos].items()
        }

    def portfolio(
        self, params: Mapping[str, Any] | None = None, metric: str = "sharpe"
    ) -> Portfolio:
        """Re-run one combination (default: the best by ``metric``) as a full :class:`Portfolio`."""
        params = dict(params) if params is not None else self.best_params(metric)
        entries, exits = self.strategy.signals(self.bars, params)
        pf = from_signals(self.bars, entries, exits, device=self.device, **self.options)
        full = self.strategy.grid({k: [v] for k, v in params.items()}).iloc[0]
        pf.name = f"{self.strategy.name} ({', '.join(f'{k}={v:g}' for k, v in full.items())})"
        return pf

    def heatmap(
        self, metric: str = "sharpe", x: str | None = None, y: str | None = None
    ) -> pd.DataFrame:
        """Metric as a 2-D table over two parameters (others at their best value)."""
        names = list(self.combos.columns)
        if len(names) < 2:
            raise ConfigError("a heat-map needs two parameters")
        x = x or names[0]
        y = y or names[1]
        frame = self.combos.assign(_value=self.metrics[:, metric_slot(metric)])
        # With more than two parameters a cell shows its best value (lowest for drawdown-like metrics).
        if metric in HIGHER_IS_WORSE:
            return frame.pivot_table(index=y, columns=x, values="_value", aggfunc="min")
        return frame.pivot_table(index=y, columns=x, values="_value", aggfunc="max")

    def on_edge(self, metric: str = "sharpe") -> dict[str, str]:
        """Parameters whose best value (by ``metric``) is the smallest or largest one tried.

        ``{"slow": "largest"}`` means the optimum may lie beyond the grid: widen it before
        trusting the result. Only parameters swept over three or more values are judged.
        """
        params = self.best_params(metric)
        out = {}
        for name in self.combos.columns:
            values = np.unique(self.combos[name].to_numpy())
            if len(values) < 3:
                continue
            if params[str(name)] == values[0]:
                out[str(name)] = "smallest"
            elif params[str(name)] == values[-1]:
                out[str(name)] = "largest"
        return out

    def edge_note(self, metric: str = "sharpe") -> str:
        """A warning line when the best combination sits on the edge of the grid, else ``""``."""
        edge = self.on_edge(metric)
        if not edge:
            return ""
        params = self.best_params(metric)
        where = ", ".join(
            f"{k}={params[k]:g} is the {side} value tried" for k, side in edge.items()
        )
        return (
            f"the best by {metric} sits on the edge of the grid ({where}): the optimum may lie "
            "outside it; widen the grid before trusting it"
        )

    def to_html(
        self, path: str | Path, metric: str = "sharpe", *, title: str | None = None
    ) -> Path:
        """Interactive report of the best combination plus the sweep heat-map."""
        from celeris.backtest.report import write_html

        pf = self.portfolio(metric=metric)
        return write_html(pf, Path(path), sweep=self, metric=metric, title=title)


def sweep(
    data: Any,
    strategy: str | Strategy,
    grid: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    chunk_size: int | None = None,
    max_variants: int | None = MAX_VARIANTS,
    progress: bool = True,
    device: str = "auto",
    **options: Any,
) -> SweepResult:
    """Backtest every admissible combination of ``grid`` and return their metrics.

    ``grid`` maps parameter names to value lists (the product is taken, then the strategy's
    constraint such as ``fast < slow`` is applied); ``options`` are :func:`from_signals` keywords
    shared by all variants (``fees``, ``slippage``, ``sl_stop``, ``direction``...).

    Indicators are computed once per distinct window; signals are generated and simulated in
    column chunks of bounded size, and only metrics are kept, so memory does not grow with the
    number of combinations (a 1M-bar x 2,000-variant sweep stays well under 2 GB).

    A grid with more than ``max_variants`` admissible combinations (default
    :data:`MAX_VARIANTS`, one million) is refused with a :class:`~celeris.errors.ConfigError`
    before anything is built; ``max_variants=None`` lifts the limit. :func:`estimate_sweep`
    gives the cost up front and :meth:`SweepResult.on_edge` flags a best result on the edge of
    the grid.
    """
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    options = check_portfolio_options(options, bars)
    combos = strat.grid(grid, max_variants=max_variants)
    engine = resolve_device(device)
    n_bars, n_combos = len(bars), len(combos)
    if chunk_size is None:
        chunk_size = max(8, CHUNK_BYTES[engine] // max(n_bars, 1))
    signals = strat.prepare(bars, combos)
    metrics = np.empty((n_combos, K.N_METRICS))
    freq = None
    starts = range(0, n_combos, chunk_size)
    with progress_bar(progress) or nullcontext(None) as bar:
        task = (
            bar.add_task(f"{strat.name}: {n_combos:,} variants x {n_bars:,} bars", total=n_combos)
            if bar
            else None
        )
        for start in starts:
            rows = slice(start, min(start + chunk_size, n_combos))
            entries, exits = signals(rows)
            # Buffers are reused for the next chunk only after this portfolio's metrics are taken.
            pf = from_signals(bars, entries, exits, device=engine, _copy=False, **options)
            metrics[rows] = pf.metric_values
            freq = pf.freq
            if bar is not None and task is not None:
                bar.update(task, advance=rows.stop - rows.start)
    return SweepResult(strat, combos, metrics, bars, options, freq, engine)

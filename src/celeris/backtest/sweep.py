"""Parameter sweeps: thousands of strategy variants, chunked over columns, metrics only.

A grid's axes are the strategy's parameters and, as vectorbt broadcasts them, the per-column
options of :func:`~celeris.backtest.from_signals` (the table
:data:`celeris.backtest.signals.OPTIONS`: ``fees``, ``sl_stop``, ``init_cash``...). Signals
depend on the strategy parameters only, so they are built once per distinct strategy
combination and reused for every option value (:func:`sweep_grid`, :func:`_chunks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.backtest import signals as _signals
from celeris.backtest import signals_nb as S
from celeris.backtest.annualisation import resolve_year_days
from celeris.backtest.metrics import HIGHER_IS_WORSE, metric_slot, metrics_frame, rank_order
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.signals import OPTIONS, Option, from_signals
from celeris.backtest.strategies import (
    SignalFn,
    Strategy,
    check_bars,
    check_limit,
    get_strategy,
    parse_numbers,
    parse_values,
)
from celeris.checks import check_int
from celeris.compute import resolve_device
from celeris.compute.ray_exec import (
    RayExecutor,
    connect,
    default_tasks,
    resolve_executor,
    run_tasks,
)
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

    Option axes (``{"sl_stop": [0.02, 0.05]}``) multiply the count of strategy combinations.
    Memory counts the metrics (22 floats per variant), the parameter frame, the indicator
    matrices (one float column per distinct value, a bound for window-based strategies) and
    the chunked signal buffers; time divides bar-variants by a measured throughput. Both are
    rough guides, shown before a sweep starts.
    """
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    engine = resolve_device(device)
    param_grid, option_grid = _split_grid(strat, grid)
    axes = strat.axes(param_grid)
    n_options = math.prod(len(v) for v in option_grid.values())
    total, variants = strat.count(param_grid)
    total, variants = total * n_options, variants * n_options
    n_bars = len(bars)
    distinct = sum(len(a) for a in axes)
    chunk = min(variants, max(8, CHUNK_BYTES[engine] // max(n_bars, 1)))
    # Without option axes: the strategy's entries/exits and from_signals' shifted copies, four
    # chunk-wide bool matrices. With them, the copies out to one column per variant are chunk
    # wide and the strategy's own two are 1/n_options of a chunk.
    built = -(-chunk // n_options) if option_grid else 0
    memory = (
        variants * (K.N_METRICS + 3 * (len(axes) + len(option_grid))) * 8
        + distinct * n_bars * 8
        + (4 * chunk + 2 * built) * n_bars
        + bars.memory_usage(deep=False).sum()
    )
    seconds = variants * n_bars / _RATE[engine]
    return SweepEstimate(strat.name, total, variants, n_bars, engine, seconds, int(memory))


#: ``from_signals`` options that hold for a whole run: one value, never a grid axis.
RUN_OPTIONS = ("stop_exit_price", "execution", "freq", "year_days")
#: Run-wide ``from_signals`` inputs given as data on the bar index (or a tier table): passed as
#: they are to every chunk of a sweep.
DATA_OPTIONS = ("funding_rate", "mark_price", "maintenance_margin", "limit_price", "limit_expiry")
#: ``from_signals`` keywords of multi-asset books: a sweep runs one asset's variants, each its
#: own account, so it refuses them by name (``celeris sweep --cash-sharing`` sweeps books).
BOOK_OPTIONS = ("group_by", "cash_sharing", "call_seq")
#: The options of the grouped kernel (perpetuals, limit orders): a sweep takes them as axes and
#: options, whose variants then run on that kernel; a walk-forward does not take them yet.
GROUPED_KERNEL_OPTIONS = (*(o.name for o in _signals.BOOK_AXES), *DATA_OPTIONS)
#: The ``from_signals`` options a sweep passes on: the per-column ones and the run-wide ones.
PORTFOLIO_OPTIONS = (
    *(o.name for o in OPTIONS),
    *(o.name for o in _signals.BOOK_AXES),
    *RUN_OPTIONS,
    *DATA_OPTIONS,
)


def _book_only(name: str) -> str:
    return (
        f"{name} is a from_signals option of multi-asset books; a sweep runs one asset's "
        "variants, each its own account (`celeris sweep --data A --data B --cash-sharing` "
        "sweeps books)"
    )


def option_axes() -> dict[str, Option]:
    """The ``from_signals`` options a grid may sweep as axes, by name.

    Every per-column option of :data:`celeris.backtest.signals.OPTIONS` and of the grouped
    kernel (:data:`celeris.backtest.signals.BOOK_AXES`: ``leverage``, ``instrument``...), read
    when called, so an option added to a table is an axis without further work.
    """
    return {o.name: o for o in (*_signals.OPTIONS, *_signals.BOOK_AXES)}


def is_single(value: Any) -> bool:
    """Whether an option value is one value (not a list of values for several columns)."""
    return value is None or isinstance(value, str | pd.Timedelta) or bool(np.isscalar(value))


def check_portfolio_options(
    options: Mapping[str, Any], bars: pd.DataFrame | None = None, *, grid: bool = False
) -> dict[str, Any]:
    """Refuse unknown ``from_signals`` options early, with a did-you-mean hint, and lists.

    With ``bars``, also fix the defaults that depend on the data once for the whole run:
    ``year_days`` by :func:`~celeris.backtest.annualisation.resolve_year_days` on all the bars
    (so every window of a walk-forward annualises alike) and ``execution`` (next open).
    ``grid=True`` (sweeps, walk-forward) points a list of values to the caller's grid.
    """
    for name in options:
        if name in BOOK_OPTIONS:
            raise ConfigError(_book_only(name))
        if name not in PORTFOLIO_OPTIONS:
            raise ConfigError(
                f"unknown backtest option {name!r}{did_you_mean(name, PORTFOLIO_OPTIONS)}"
            )
        value = options[name]
        if not is_single(value) and name not in DATA_OPTIONS:
            if name not in option_axes():
                where = "it holds for the whole run"
            elif grid:
                where = (
                    f"put the values to explore in the grid as an axis ({{{name!r}: [...]}}, "
                    f"--grid {name}=...)"
                )
            else:
                where = "sweep and walk_forward take a list of values as a grid axis"
            raise ConfigError(
                f"backtest option {name} must be a single value here (got {value!r}); {where}"
            )
    out = dict(options)
    if bars is not None:
        out["year_days"] = resolve_year_days(bars.index, out.get("year_days"))
        out["execution"] = out.get("execution") or "next_open"
    return out


# ---- grids: strategy parameters crossed with option axes --------------------------------------


@dataclass(frozen=True)
class SweepGrid:
    """The variants of a sweep, and the distinct strategy combinations their signals come from."""

    combos: pd.DataFrame  # [n_variants, params + axes]: one row per variant
    params: pd.DataFrame  # [n_distinct, params]: what the strategy builds signals for
    param_row: np.ndarray  # [n_variants] int64: the row of ``params`` each variant trades
    axes: tuple[str, ...]  # the option axes (columns of ``combos`` after the parameters)


def _option_names(strategy: Strategy, names: Iterable[Any]) -> list[str]:
    """The names among ``names`` that are option axes; refuse those that are neither a
    parameter of ``strategy`` nor a per-column option (a strategy parameter wins a tie)."""
    table = option_axes()
    out = []
    for name in names:
        if name in strategy.param_names:
            continue
        if name in table:
            out.append(str(name))
        elif name in BOOK_OPTIONS:
            raise ConfigError(_book_only(str(name)))
        elif name in RUN_OPTIONS:
            raise ConfigError(
                f"{name} is a run-wide backtest option (one value for the whole sweep), not a grid "
                f"axis: pass it as {name}=... (--{name.replace('_', '-')} on the command line)"
            )
        else:
            raise ConfigError(
                f"{name!r} is neither a parameter of {strategy.name} nor a backtest option"
                f"{did_you_mean(str(name), [*strategy.param_names, *table])}; its parameters: "
                f"{', '.join(strategy.param_names)}; options that sweep as axes: {', '.join(table)}"
            )
    return out


def _split_grid(
    strategy: Strategy, grid: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``grid`` as ``(strategy parameter value lists, option axes with checked values)``."""
    grid = dict(grid or {})
    table = option_axes()
    axes = _option_names(strategy, grid)
    options = {}
    for name in axes:
        values = grid.pop(name)
        one = values is None or isinstance(values, str) or np.isscalar(values)
        options[name] = _distinct(_axis_values(table[name], [values] if one else list(values)))
    return grid, options


def _axis_values(option: Option, values: list[Any]) -> list[Any]:
    """Check the values of one option axis with the option's own rules; return them as a
    variant row holds them: a name for a choice (``"both"``), a bool for a flag, else a float
    (NaN for "off", given as None or NaN)."""
    if not values:
        raise ConfigError(f"grid axis {option.name} has an empty list of values")
    if option.choices is not None:
        option.parse(values)
        return [str(v) for v in values]
    if option.flag:
        option.parse(values)
        return [bool(v) for v in values]
    floats = [np.nan if v is None else v for v in values]
    option.parse(floats)
    return [float(v) for v in floats]


def _distinct(values: list[Any]) -> list[Any]:
    """``values`` without repeats, in order (NaN counts once)."""
    out: list[Any] = []
    for v in values:
        is_nan = isinstance(v, float) and math.isnan(v)
        if not any((isinstance(u, float) and math.isnan(u)) if is_nan else u == v for u in out):
            out.append(v)
    return out


def _axis_column(option: Option, values: list[Any]) -> np.ndarray:
    """A variant column of an option axis: object for names, bool for flags, else float64."""
    if option.choices is not None:
        return np.array(values, dtype=object)
    return np.array(values, dtype=np.bool_ if option.flag else np.float64)


def sweep_grid(
    strategy: str | Strategy,
    grid: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    max_variants: int | None = MAX_VARIANTS,
) -> SweepGrid:
    """The variants of a sweep: strategy parameters crossed with option axes.

    A mapping takes the product of its value lists; the strategy's constraint (``fast < slow``)
    applies to its parameters only, and every admissible strategy combination is crossed with
    every combination of option values (options vary fastest). A frame lists variants row by
    row (parameters it leaves out take their default). More than ``max_variants`` variants in
    all are refused before anything is built.

    Raises
    ------
    ConfigError
        A name that is neither a strategy parameter nor a per-column option (did-you-mean over
        both), a value out of its bounds, no admissible combination, or too many variants.
    """
    strat = get_strategy(strategy)
    if isinstance(grid, pd.DataFrame):
        return _frame_grid(strat, grid, max_variants)
    param_grid, option_grid = _split_grid(strat, grid)
    if not option_grid:
        params = strat.grid(param_grid, max_variants=max_variants)
        return SweepGrid(params, params, np.arange(len(params), dtype=np.int64), ())
    table = option_axes()
    shape = tuple(len(v) for v in option_grid.values())
    n_options = math.prod(shape)
    total, admissible = strat.count(param_grid)

    def detail(combinations: int, approx: bool) -> str:
        return (
            f" ({'~' if approx else ''}{combinations:,} parameter combinations x "
            f"{n_options:,} option values)"
        )

    approx = admissible != total
    check_limit(
        total * n_options, admissible * n_options, max_variants, strat, detail(admissible, approx)
    )
    params = strat.grid(param_grid)
    n_variants = len(params) * n_options
    check_limit(n_variants, n_variants, max_variants, strat, detail(len(params), False))
    param_row = np.repeat(np.arange(len(params), dtype=np.int64), n_options)
    positions = np.unravel_index(np.tile(np.arange(n_options), len(params)), shape)
    combos = params.iloc[param_row].reset_index(drop=True)
    for (name, values), pos in zip(option_grid.items(), positions, strict=True):
        combos[name] = _axis_column(table[name], values)[pos]
    return SweepGrid(combos, params, param_row, tuple(option_grid))


def _frame_grid(strat: Strategy, frame: pd.DataFrame, max_variants: int | None) -> SweepGrid:
    """:func:`sweep_grid` of a frame of variants (rows failing the constraint are dropped)."""
    axes = _option_names(strat, frame.columns)
    if not axes:
        params = strat.grid(frame, max_variants=max_variants)
        return SweepGrid(params, params, np.arange(len(params), dtype=np.int64), ())
    table = option_axes()
    n = len(frame)
    given = pd.DataFrame(
        {
            p.name: frame[p.name].to_numpy() if p.name in frame else np.full(n, p.default)
            for p in strat.params
        }
    )
    # Checks every value against its bounds and applies the constraint to the distinct rows.
    params = strat.grid(given.drop_duplicates(ignore_index=True))
    for p in strat.params:
        given[p.name] = given[p.name].astype(np.float64)
        if p.integer:
            given[p.name] = given[p.name].astype(np.int64)
    rows = given.merge(
        params.assign(_row=np.arange(len(params))), how="left", on=list(strat.param_names)
    )["_row"].to_numpy(dtype=np.float64)
    keep = ~np.isnan(rows)  # the rows whose parameters pass the constraint
    combos = params.iloc[rows[keep].astype(np.int64)].reset_index(drop=True)
    for name in axes:
        values = _axis_values(table[name], list(frame[name].to_numpy()[keep]))
        combos[name] = _axis_column(table[name], values)
    unique = ~combos.duplicated().to_numpy()
    combos = combos[unique].reset_index(drop=True)
    param_row = rows[keep][unique].astype(np.int64)
    check_limit(len(combos), len(combos), max_variants, strat)
    return SweepGrid(combos, params, param_row, tuple(axes))


def check_axes_apart(axes: Iterable[str], options: Mapping[str, Any]) -> None:
    """Refuse an option that is both a grid axis and a keyword option."""
    both = [name for name in axes if name in options]
    if both:
        raise ConfigError(
            f"{both[0]} is both a grid axis and an option ({both[0]}={options[both[0]]!r}): "
            "give it in one place"
        )


def split_params(
    strategy: Strategy, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One variant's values (a :meth:`SweepResult.best_params` dict) as ``(strategy
    parameters, from_signals options)``."""
    table = option_axes()
    axes = _option_names(strategy, params)
    options = {name: _axis_values(table[name], [params[name]])[0] for name in axes}
    return {k: v for k, v in params.items() if k not in options}, options


def parse_grid(items: Iterable[str], strategy: Strategy) -> dict[str, list[Any]]:
    """Parse CLI ``--grid NAME=SPEC`` items: strategy parameters and option axes.

    A number, a list ``0.02,0.05`` or a range ``start:stop[:step]`` (stop included) as for
    parameters; a choice option takes names (``direction=longonly,both``), a flag
    ``true,false``, and a stop ``none`` for "off" (``sl_stop=none,0.02,0.05``).
    """
    table = option_axes()
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}")
        name, spec = (part.strip() for part in item.split("=", 1))
        if name in strategy.param_names:
            grid[name] = parse_values(spec, strategy.param(name))
            continue
        _option_names(strategy, [name])  # refuses a name that is neither
        grid[name] = _distinct(_axis_values(table[name], _option_tokens(spec, table[name])))
    return grid


_FLAGS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _option_tokens(spec: str, option: Option) -> list[Any]:
    """The raw values of an option axis written on the command line."""
    if option.choices is not None:
        return [t.strip() for t in spec.split(",") if t.strip()]
    if option.flag:
        tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
        bad = [t for t in tokens if t not in _FLAGS]
        if bad or not tokens:
            raise ConfigError(f"cannot read {spec!r} for {option.name}: use true, false or both")
        return [_FLAGS[t] for t in tokens]
    if option.allow_nan and ":" not in spec:
        tokens = [t.strip() for t in spec.split(",") if t.strip()]
        off = [t for t in tokens if t.lower() in ("none", "off")]
        rest = ",".join(t for t in tokens if t.lower() not in ("none", "off"))
        return [None] * bool(off) + (parse_numbers(rest, option.name) if rest else [])
    return list(parse_numbers(spec, option.name))


def _label(value: Any) -> str:
    if isinstance(value, bool | np.bool_ | str):
        return str(value)
    return f"{value:g}"


@dataclass
class SweepResult:
    """Metrics of every parameter combination of a sweep (one row each).

    ``combos`` has one column per strategy parameter, then one per option axis (``axes``).
    """

    strategy: Strategy
    combos: pd.DataFrame
    metrics: np.ndarray
    bars: pd.DataFrame
    options: dict[str, Any]
    freq: pd.Timedelta | None
    device: str
    axes: tuple[str, ...] = ()

    @property
    def index(self) -> pd.Index:
        if self.combos.shape[1] == 1:
            return pd.Index(self.combos.iloc[:, 0], name=self.combos.columns[0])
        return pd.MultiIndex.from_frame(self.combos)

    def stats(self) -> pd.DataFrame:
        """One row per combination with every metric of :data:`celeris.backtest.METRICS`."""
        frame = metrics_frame(self.metrics, self.index, self.freq)
        start = (
            self.combos["init_cash"].to_numpy(dtype=np.float64)
            if "init_cash" in self.axes
            else float(self.options.get("init_cash", 100_000.0))
        )
        frame.insert(0, "start_value", start)
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
        """Parameters and option-axis values of the best combination by ``metric``."""
        pos = self.best_position(metric)
        # Column by column: a row of mixed dtypes would turn integer parameters into floats.
        values: dict[str, Any] = {str(k): self.combos[k].iat[pos] for k in self.combos.columns}
        return {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}

    def portfolio(
        self, params: Mapping[str, Any] | None = None, metric: str = "sharpe"
    ) -> Portfolio:
        """Re-run one combination (default: the best by ``metric``) as a full :class:`Portfolio`.

        ``params`` may hold option values (``{"fast": 10, "slow": 50, "sl_stop": 0.02}``); they
        replace the sweep's options for this run.
        """
        params = dict(params) if params is not None else self.best_params(metric)
        strategy_params, chosen = split_params(self.strategy, params)
        entries, exits = self.strategy.signals(self.bars, strategy_params)
        options = {**self.options, **chosen}
        pf = from_signals(self.bars, entries, exits, device=self.device, **options)
        full = self.strategy.grid({k: [v] for k, v in strategy_params.items()}).iloc[0]
        shown = [*full.items(), *chosen.items()]
        pf.name = f"{self.strategy.name} ({', '.join(f'{k}={_label(v)}' for k, v in shown)})"
        return pf

    def heatmap(
        self, metric: str = "sharpe", x: str | None = None, y: str | None = None
    ) -> pd.DataFrame:
        """Metric as a 2-D table over two parameters or option axes (others at their best value)."""
        names = [str(n) for n in self.combos.columns]
        if len(names) < 2:
            raise ConfigError("a heat-map needs two parameters")
        x = x or names[0]
        y = y or names[1]
        for axis in (x, y):
            if axis not in names:
                raise ConfigError(
                    f"no parameter or option axis {axis!r} in this sweep"
                    f"{did_you_mean(axis, names)}; it has {', '.join(names)}"
                )
        frame = self.combos.assign(_value=self.metrics[:, metric_slot(metric)])
        # An axis value NaN ("stop off") is a row or column of its own, not dropped.
        keep_nan = bool(frame[[x, y]].isna().to_numpy().any())
        # With more than two parameters a cell shows its best value (lowest for drawdown-like metrics).
        if metric in HIGHER_IS_WORSE:
            return frame.pivot_table(
                index=y, columns=x, values="_value", aggfunc="min", dropna=not keep_nan
            )
        return frame.pivot_table(
            index=y, columns=x, values="_value", aggfunc="max", dropna=not keep_nan
        )

    def on_edge(self, metric: str = "sharpe") -> dict[str, str]:
        """Parameters whose best value (by ``metric``) is the smallest or largest one tried.

        ``{"slow": "largest"}`` means the optimum may lie beyond the grid: widen it before
        trusting the result. Only numeric parameters and option axes swept over three or more
        values are judged (a NaN option value, "off", is not a value on a scale).
        """
        params = self.best_params(metric)
        out = {}
        for name in self.combos.columns:
            column = self.combos[name]
            if column.dtype.kind not in "iuf":
                continue
            values = np.unique(column.to_numpy()[column.notna().to_numpy()])
            best = params[str(name)]
            if len(values) < 3 or best != best:  # NaN: the option was off
                continue
            if best == values[0]:
                out[str(name)] = "smallest"
            elif best == values[-1]:
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
    executor: str | RayExecutor | None = "local",
    **options: Any,
) -> SweepResult:
    """Backtest every admissible combination of ``grid`` and return their metrics.

    ``grid`` maps names to value lists: strategy parameters and, as axes of their own, the
    per-column options of :func:`from_signals` (``fees``, ``sl_stop``, ``init_cash``,
    ``direction``...; the table :data:`celeris.backtest.signals.OPTIONS`). The product is taken
    over both; the strategy's constraint such as ``fast < slow`` applies to its parameters only.
    A frame lists the variants row by row instead. ``options`` are :func:`from_signals`
    keywords shared by all variants; an option may be an axis or a keyword, not both.

    Indicators are computed once per distinct window; signals are generated once per distinct
    strategy combination (never again per option value) and simulated in column chunks of
    bounded size, and only metrics are kept, so memory does not grow with the number of
    combinations (a 1M-bar x 2,000-variant sweep stays well under 2 GB). The metrics equal
    those of :func:`from_signals` run on each variant alone.

    A grid with more than ``max_variants`` admissible combinations in all (default
    :data:`MAX_VARIANTS`, one million) is refused with a :class:`~celeris.errors.ConfigError`
    before anything is built; ``max_variants=None`` lifts the limit. :func:`estimate_sweep`
    gives the cost up front and :meth:`SweepResult.on_edge` flags a best result on the edge of
    the grid.

    ``executor="ray"`` (or a :class:`~celeris.compute.ray_exec.RayExecutor` naming the cluster
    and the task size) runs blocks of variants as Ray tasks: the bars and the plan are put in
    the object store once, metrics stream back as tasks finish, a task whose worker dies is run
    again, and the result is identical to the local run's (docs/ray.md).
    """
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    remote = resolve_executor(executor)
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    options = check_portfolio_options(options, bars, grid=True)
    plan = sweep_grid(strat, grid, max_variants=max_variants)
    check_axes_apart(plan.axes, options)
    engine = resolve_device(device)
    n_bars, n_combos = len(bars), len(plan.combos)
    if chunk_size is None:
        chunk_size = max(8, CHUNK_BYTES[engine] // max(n_bars, 1))
    label = f"{strat.name}: {n_combos:,} variants x {n_bars:,} bars"
    job = _SweepJob(bars, strat, plan, options, engine, chunk_size)
    if remote is not None:
        metrics, freq = _sweep_on_ray(job, remote, label, progress)
    else:
        metrics = np.empty((n_combos, K.N_METRICS))
        with progress_bar(progress) or nullcontext(None) as bar:
            task = bar.add_task(label, total=n_combos) if bar else None

            def advance(k: int) -> None:
                if bar is not None and task is not None:
                    bar.update(task, advance=k)

            freq = _run_plan(job, plan, metrics, advance)
    return SweepResult(strat, plan.combos, metrics, bars, options, freq, engine, plan.axes)


@dataclass(frozen=True)
class _SweepJob:
    """What every chunk of a sweep reads: put in Ray's object store once on a cluster."""

    bars: pd.DataFrame
    strategy: Strategy
    plan: SweepGrid
    options: dict[str, Any]
    engine: str
    chunk_size: int


def _run_plan(
    job: _SweepJob, plan: SweepGrid, metrics: np.ndarray, advance: Any = None
) -> pd.Timedelta | None:
    """Simulate ``plan`` chunk by chunk into ``metrics`` (one row per variant); return the
    bars' frequency."""
    freq = None
    signals = job.strategy.prepare(job.bars, plan.params)
    n_bars = len(job.bars)
    for rows, entries, exits, values in _chunks(plan, signals, job.chunk_size, n_bars):
        # Buffers are reused for the next chunk only after this portfolio's metrics are taken.
        run: dict[str, Any] = {**job.options, **values}  # option axes: one value per column
        pf = from_signals(job.bars, entries, exits, device=job.engine, _copy=False, **run)
        metrics[rows] = pf.metric_values
        freq = pf.freq
        if advance is not None:
            advance(entries.shape[1])
    return freq


#: Least work per Ray task, in bar-variants (~0.1-0.2 s on one core): a task costs ~1-2 ms of
#: scheduling and transfer (benchmarks/RESULTS.md), so tasks this size lose under 2% to it.
MIN_TASK_BAR_VARIANTS = 20_000_000


def _task_rows(plan: SweepGrid, n_bars: int, per_task: int | None, tasks: int) -> list[np.ndarray]:
    """The variant rows of each Ray task, grouped by strategy combination as :func:`_chunks`
    takes them; a task holds whole groups when the groups are of equal size (a product), so no
    strategy combination's signals are built on two nodes."""
    n = len(plan.combos)
    if per_task is None:
        per_task = max(-(-n // tasks), -(-MIN_TASK_BAR_VARIANTS // max(n_bars, 1)))
    order = np.argsort(plan.param_row, kind="stable")
    per = np.bincount(plan.param_row)
    if plan.axes and per.min() == per.max():
        group = int(per[0])
        per_task = max(group, per_task - per_task % group)
    return [order[start : start + per_task] for start in range(0, n, per_task)]


def _sub_plan(plan: SweepGrid, rows: np.ndarray) -> SweepGrid:
    """The variants ``rows`` of ``plan`` (grouped by strategy combination) as a plan of their own."""
    used, param_row = np.unique(plan.param_row[rows], return_inverse=True)
    combos = plan.combos.iloc[rows].reset_index(drop=True)
    if not plan.axes:  # the plan's combinations are its strategy parameters
        return SweepGrid(combos, combos, np.arange(len(rows), dtype=np.int64), ())
    params = plan.params.iloc[used].reset_index(drop=True)
    return SweepGrid(combos, params, param_row.astype(np.int64), plan.axes)


def _sweep_task(job: _SweepJob, rows: np.ndarray) -> tuple[np.ndarray, pd.Timedelta | None]:
    """One Ray task of a sweep: the metrics of the variants ``rows``, as the local run
    computes them (each variant's metrics depend on its own column only)."""
    sub = _sub_plan(job.plan, rows)
    metrics = np.empty((len(rows), K.N_METRICS))
    return metrics, _run_plan(job, sub, metrics)


def _sweep_on_ray(
    job: _SweepJob, executor: RayExecutor, label: str, progress: bool
) -> tuple[np.ndarray, pd.Timedelta | None]:
    """Run ``job`` as Ray tasks of whole variant blocks; metrics land in the local run's rows."""
    if job.engine == "cuda" and executor.num_gpus == 0:
        executor = executor.model_copy(update={"num_gpus": 1.0})  # the kernels need one
    ray = connect(executor.address)
    blocks = _task_rows(job.plan, len(job.bars), executor.task_size, default_tasks(ray, executor))
    metrics = np.empty((len(job.plan.combos), K.N_METRICS))
    freqs: list[pd.Timedelta | None] = []

    def take(i: int, result: tuple[np.ndarray, pd.Timedelta | None]) -> None:
        metrics[blocks[i]] = result[0]
        freqs.append(result[1])

    run_tasks(
        _sweep_task, job, blocks, take, executor=executor,
        units=[len(b) for b in blocks], label=f"{label} on Ray", progress=progress,
    )  # fmt: skip
    return metrics, freqs[0] if freqs else None


def _chunks(
    plan: SweepGrid, signals: SignalFn, chunk_size: int, n_bars: int
) -> Iterator[tuple[slice | np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """``(rows, entries, exits, option values)`` of each chunk of at most ``chunk_size`` variants.

    Without option axes a chunk is a slice of the strategy combinations, as the strategy builds
    them. With them, the variants are taken grouped by strategy combination; each chunk asks the
    strategy for the signals of the combinations it covers (once each: chunks hold whole groups
    when the groups are of equal size, as in a product) and copies them out to one column per
    variant, beside one value per column of each option axis.
    """
    n = len(plan.combos)
    if not plan.axes:
        for start in range(0, n, chunk_size):
            rows = slice(start, min(start + chunk_size, n))
            entries, exits = signals(rows)
            yield rows, entries, exits, {}
        return
    order = np.argsort(plan.param_row, kind="stable")
    own = plan.param_row[order]  # [n] strategy row of each variant, non-decreasing
    per = np.bincount(plan.param_row)
    if per.min() == per.max() <= chunk_size:
        chunk_size -= chunk_size % int(per[0])  # whole groups: no combination built twice
    values = {name: plan.combos[name].to_numpy() for name in plan.axes}
    buffers = S.SignalBuffers(n_bars)
    for start in range(0, n, chunk_size):
        picked = order[start : start + chunk_size]
        k = len(picked)
        first, last = int(own[start]), int(own[start + k - 1])
        entries, exits = signals(slice(first, last + 1))  # [n_bars, distinct combinations]
        local = own[start : start + k] - first  # [k] column of each variant in them
        out_entries, out_exits = buffers.take(k)  # [n_bars, k]
        _spread(entries, local, out_entries)
        _spread(exits, local, out_exits)
        yield picked, out_entries, out_exits, {name: v[picked] for name, v in values.items()}


def _spread(signal: np.ndarray, local: np.ndarray, out: np.ndarray) -> None:
    """``out[:, i] = signal[:, local[i]]`` for non-decreasing ``local``, one run at a time.

    Each run is one column broadcast over contiguous Fortran columns; ``np.take(axis=1)`` does
    the same 30x slower (measured: 0.47 s vs 0.016 s for 670 columns of 100k bars).
    """
    starts = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
    ends = np.r_[starts[1:], len(local)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        col = int(local[lo])
        out[:, lo:hi] = signal[:, col : col + 1]

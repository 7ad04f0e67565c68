"""Walk-forward analysis: choose parameters in sample, judge them on the next, unseen window."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest.metrics import metric_slot
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.returns import returns_metrics
from celeris.backtest.signals import from_signals
from celeris.backtest.strategies import Strategy, check_bars, get_strategy
from celeris.backtest.sweep import (
    GROUPED_KERNEL_OPTIONS,
    MAX_VARIANTS,
    check_axes_apart,
    check_portfolio_options,
    split_params,
    sweep,
    sweep_grid,
)
from celeris.checks import check_int
from celeris.compute.ray_exec import RayExecutor, resolve_executor, run_tasks
from celeris.errors import ConfigError
from celeris.progress import progress_bar


@dataclass
class WalkForwardResult:
    """Per-window choices and the stitched out-of-sample record."""

    windows: pd.DataFrame
    oos_returns: pd.Series
    oos_equity: pd.Series
    summary: pd.Series
    metric: str

    def __repr__(self) -> str:
        return (
            f"WalkForwardResult({len(self.windows)} windows, out-of-sample "
            f"{self.metric}={self.summary.get(self.metric, float('nan')):.3f}, "
            f"total_return={self.summary['total_return']:.2%})"
        )


def _to_bars(spec: int | str, index: pd.Index, what: str) -> int:
    """A window length in bars from an int or a duration such as ``"365D"``."""
    if not isinstance(spec, str | datetime.timedelta | np.timedelta64):
        return check_int(what, spec, minimum=2, reason="a bar count, or a duration like '365D'")
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(f"{what}={spec!r} as a duration needs a datetime index; pass a bar count")
    try:
        span = pd.Timedelta(spec)
    except ValueError:
        raise ConfigError(
            f"{what}={spec!r} is neither a bar count nor a duration like '365D'"
        ) from None
    # As many bars as the first `span` of the data holds (calendar time, not bar spacing).
    n = int(np.searchsorted(index.asi8, (index[0] + span).as_unit(index.unit).asm8.view("i8")))
    if n < 2:
        raise ConfigError(f"{what} must cover at least 2 bars, got {spec!r}")
    return n


def window_plan(
    index: pd.Index, train: int | str, test: int | str, partial: bool
) -> tuple[int, int, list[int]]:
    """Bars per training and test span, and the first bar of each window: every window whose
    training span fits, stepping by ``test``; the last test span may be shorter (``partial``)."""
    n_train = _to_bars(train, index, "train")
    n_test = _to_bars(test, index, "test")
    if n_train + n_test > len(index):
        raise ConfigError(
            f"train ({n_train} bars) + test ({n_test} bars) exceed the data ({len(index)} bars)"
        )
    last = len(index) - n_train if partial else len(index) - n_train - n_test + 1
    return n_train, n_test, list(range(0, last, n_test))


def window_span(
    k: int, index: pd.Index, train_start: int, train_end: int, test_end: int
) -> dict[str, Any]:
    """The first columns of a walk-forward row: window number, training and test dates, test
    bars (the rule and the model walk-forward report windows alike)."""
    return {
        "window": k,
        "train_start": index[train_start],
        "train_end": index[train_end - 1],
        "test_start": index[train_end],
        "test_end": index[test_end - 1],
        "test_bars": test_end - train_end,
    }


def chain_out_of_sample(
    pieces: list[pd.Series], ann_factor: float, init_cash: float
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Chain the test windows' bar returns into one out-of-sample curve: ``(returns, equity,
    summary metrics)``."""
    oos_returns = pd.concat(pieces).rename("oos_return")
    oos_equity = (init_cash * (1.0 + oos_returns).cumprod()).rename("oos_equity")
    summary = pd.Series(
        returns_metrics(oos_returns.to_numpy(), ann_factor, init_cash), name="out_of_sample"
    )
    return oos_returns, oos_equity, summary


def backtest_window(
    bars: pd.DataFrame,
    strategy: Strategy,
    params: Mapping[str, Any],
    start: int,
    end: int,
    *,
    device: str = "auto",
    **options: Any,
) -> Portfolio:
    """Backtest ``params`` on ``bars[start:end]`` as an unseen test window, and return it.

    The window is a fresh account (``init_cash`` at ``start``) that starts in the position the
    parameters hold there, as a live system switching to them at ``start`` would: signals are
    computed on every bar before ``end`` (past data only, so nothing after the window can change
    it), the bars before ``start`` are simulated with the same options to find the position held
    at the window's start (long, short or flat; stops included), and that position is opened at
    the window's first fill, the open of its first bar (``execution="next_open"``) or its close
    (``"close"``), unless the signal that fills there says otherwise. The carried position is
    sized and its stops measured from that fill.
    """
    if not 0 <= start < end <= len(bars):
        raise ConfigError(f"test window [{start}, {end}) is not inside the data's {len(bars)} bars")
    entries, exits = strategy.signals(bars.iloc[:end], params)
    first = _first_signals(bars, entries, exits, start, device, options)
    return from_signals(
        bars.iloc[start:end],
        entries.iloc[start:],
        exits.iloc[start:],
        device=device,
        _first_signals=first,
        **options,
    )


def held_position(
    bars: pd.DataFrame,
    entries: pd.Series,
    exits: pd.Series,
    start: int,
    device: str = "auto",
    **options: Any,
) -> int:
    """Position (+1 long, -1 short, 0 flat) that ``entries``/``exits`` hold after bar ``start - 1``.

    The bars before ``start`` are simulated with ``options`` (stops included); with next-open
    execution a signal on bar ``start - 1`` has not filled yet and is not counted.
    """
    if start <= 0:
        return 0
    pf = from_signals(
        bars.iloc[:start], entries.iloc[:start], exits.iloc[:start], device=device, **options
    )
    trades = pf.trades
    still_open = trades[trades["status"] == "open"]
    if still_open.empty:
        return 0
    return 1 if still_open["direction"].iloc[-1] == "long" else -1


def _first_signals(
    bars: pd.DataFrame,
    entries: pd.Series,
    exits: pd.Series,
    start: int,
    device: str,
    options: Mapping[str, Any],
) -> dict[str, bool]:
    """The signal row the window's account acts on first: its own, or the carried position."""
    next_open = options.get("execution", "next_open") == "next_open"
    # With next-open fills the window's first order comes from the bar before it.
    row = start - 1 if next_open else start
    own_entry = bool(entries.iloc[row]) if row >= 0 else False
    own_exit = bool(exits.iloc[row]) if row >= 0 else False
    if own_entry != own_exit:
        # One signal decides the position after this fill from any starting position.
        return {"entries": own_entry, "exits": own_exit}
    held = held_position(bars, entries, exits, start, device, **options)
    direction = options.get("direction", "longonly")
    if held > 0:
        return {"entries": True, "exits": False}
    if held < 0:
        # direction="both": an exit opens a short; "shortonly": an entry does.
        return {"entries": direction == "shortonly", "exits": direction != "shortonly"}
    return {"entries": False, "exits": False}


def walk_forward(
    data: Any,
    strategy: str | Strategy,
    grid: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    train: int | str,
    test: int | str,
    metric: str = "sharpe",
    anchored: bool = False,
    partial: bool = True,
    max_variants: int | None = MAX_VARIANTS,
    progress: bool = True,
    device: str = "auto",
    executor: str | RayExecutor | None = "local",
    **options: Any,
) -> WalkForwardResult:
    """Roll a train window and the test window after it through the data.

    In each step the whole ``grid`` is swept on the training window, the combination with the
    best ``metric`` is taken, and it is backtested on the following ``test`` window, which it
    has never seen; then both windows move forward by ``test`` bars (``anchored=True`` keeps the
    training start fixed). Each test window is a fresh account that starts in the position the
    chosen parameters hold at its first bar, computed from the bars before it only (see
    :func:`backtest_window`), so a rule that stays long through a window is long in it. The
    last test window runs to the end of the data even when it is shorter than ``test``
    (``partial=False`` drops it); ``windows["test_bars"]`` says how long each is. The test
    windows' returns are chained into one out-of-sample equity curve.

    ``max_variants`` limits the grid as in :func:`~celeris.backtest.sweep`. As there, the grid
    may sweep per-column backtest options as axes (``{"fast": [...], "sl_stop": [0.02, 0.05]}``):
    each window then chooses its option values with its parameters and trades its test window
    with them (``windows`` has a column for each).

    ``train``/``test`` are bar counts or durations (``"730D"``); a duration becomes the number
    of bars that the first such span of the data holds (e.g. ~252 daily equity bars per "365D").

    ``executor="ray"`` (or a :class:`~celeris.compute.ray_exec.RayExecutor`) runs the windows
    as Ray tasks, one window each (``task_size`` windows: its in-sample sweep and its test
    backtest), the bars put in
    the object store once; the result is identical to the local run's (docs/ray.md).
    """
    metric_slot(metric)  # an unknown metric is refused before any work
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    _refuse_grouped_kernel(options, grid)
    options = check_portfolio_options(options, bars, grid=True)
    n_train, n_test, starts = window_plan(bars.index, train, test, partial)
    plan = sweep_grid(strat, grid, max_variants=max_variants)
    check_axes_apart(plan.axes, options)
    job = _WindowJob(bars, strat, plan.combos, options, device, metric, n_train, n_test, anchored)
    remote = resolve_executor(executor)
    steps: list[_WindowStep | None] = [None] * len(starts)
    label = f"walk-forward: {len(starts)} windows"
    if remote is not None:
        windows = list(enumerate(starts))
        per = remote.task_size or 1
        blocks = [windows[i : i + per] for i in range(0, len(windows), per)]

        def take(i: int, block: list[_WindowStep]) -> None:
            for (k, _), step in zip(blocks[i], block, strict=True):
                steps[k] = step

        run_tasks(
            _window_tasks, job, blocks, take, executor=remote,
            units=[len(b) for b in blocks], label=f"{label} on Ray", progress=progress,
        )  # fmt: skip
    else:
        with progress_bar(progress) or nullcontext(None) as bar:
            task = bar.add_task(label, total=len(starts)) if bar else None
            for k, start in enumerate(starts):
                steps[k] = _window_step(job, k, start)
                if bar is not None and task is not None:
                    bar.update(task, advance=1)
    done = [step for step in steps if step is not None]
    init_cash = float(options.get("init_cash", 100_000.0))
    if done and "init_cash" in done[0].chosen:  # the out-of-sample curve starts with it
        init_cash = float(done[0].chosen["init_cash"])
    return WalkForwardResult(
        pd.DataFrame([step.row for step in done]).set_index("window"),
        *chain_out_of_sample([step.returns for step in done], done[-1].ann_factor, init_cash),
        metric,
    )


@dataclass(frozen=True)
class _WindowJob:
    """What every window of a walk-forward reads: put in Ray's object store once on a cluster."""

    bars: pd.DataFrame
    strategy: Strategy
    combos: pd.DataFrame
    options: dict[str, Any]
    device: str
    metric: str
    n_train: int
    n_test: int
    anchored: bool


@dataclass(frozen=True)
class _WindowStep:
    """One window's choice and its out-of-sample record."""

    row: dict[str, Any]  # a row of WalkForwardResult.windows
    returns: pd.Series  # the test window's bar returns
    ann_factor: float
    chosen: dict[str, Any]  # the option-axis values chosen in sample


def _window_tasks(job: _WindowJob, windows: list[tuple[int, int]]) -> list[_WindowStep]:
    """One Ray task of a walk-forward: the windows ``(k, start)``, as the local run does them."""
    return [_window_step(job, k, start) for k, start in windows]


def _window_step(job: _WindowJob, k: int, start: int) -> _WindowStep:
    """Window ``k`` (its training window starting at bar ``start``): sweep in sample, pick the
    best by the job's metric, backtest it on the test window after it."""
    bars, strat, metric, options = job.bars, job.strategy, job.metric, job.options
    train_start = 0 if job.anchored else start
    train_end = start + job.n_train
    test_end = min(train_end + job.n_test, len(bars))
    insample = sweep(
        bars.iloc[train_start:train_end],
        strat,
        job.combos,
        max_variants=None,  # checked once by walk_forward
        progress=False,
        device=job.device,
        **options,
    )
    try:
        pos = insample.best_position(metric)
    except ConfigError as exc:
        raise ConfigError(f"window {k}: {exc}") from None
    params = insample.best_params(metric)
    in_sample_value = float(insample.metrics[pos, metric_slot(metric)])
    strategy_params, chosen = split_params(strat, params)  # option axes: this window's
    pf = backtest_window(
        bars, strat, strategy_params, train_end, test_end, device=job.device,
        **options, **chosen,
    )  # fmt: skip
    stats = pf.stats().iloc[0]
    row = {
        **window_span(k, bars.index, train_start, train_end, test_end),
        **params,
        f"is_{metric}": in_sample_value,
        f"oos_{metric}": float(stats[metric])
        if metric != "max_drawdown_duration"
        else stats[metric],
        "oos_total_return": float(stats["total_return"]),
        "oos_trades": int(stats["trades"]),
        "oos_benchmark_return": float(stats["benchmark_return"]),
    }
    return _WindowStep(row, pf.returns.iloc[:, 0], float(pf.ann_factor), chosen)


def _refuse_grouped_kernel(options: Mapping[str, Any], grid: Any) -> None:
    """A walk-forward stitches single-account windows: perpetual and limit-order options (the
    grouped kernel's) are refused by name, as options or grid axes, until it stitches books."""
    names = [*options, *(grid.columns if isinstance(grid, pd.DataFrame) else (grid or {}))]
    for name in names:
        if name in GROUPED_KERNEL_OPTIONS:
            raise ConfigError(
                f"walk_forward does not take {name} yet (perpetual futures and limit orders run "
                "on the grouped kernel, whose windows it cannot stitch); sweep takes it"
            )

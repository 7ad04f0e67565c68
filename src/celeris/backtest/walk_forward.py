"""Walk-forward analysis: choose parameters in sample, judge them on the next, unseen window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest.portfolio import METRICS, Portfolio, from_signals
from celeris.backtest.returns import returns_metrics
from celeris.backtest.strategies import Strategy, check_bars, get_strategy
from celeris.backtest.sweep import _progress, check_portfolio_options, sweep
from celeris.errors import ConfigError, did_you_mean


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
    if isinstance(spec, int | np.integer):
        n = int(spec)
    else:
        if not isinstance(index, pd.DatetimeIndex):
            raise ConfigError(
                f"{what}={spec!r} as a duration needs a datetime index; pass a bar count"
            )
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


def backtest_window(
    bars: pd.DataFrame,
    strategy: Strategy,
    params: Mapping[str, Any],
    start: int,
    end: int,
    *,
    warmup: int,
    device: str = "auto",
    **options: Any,
) -> Portfolio:
    """Backtest ``params`` on ``bars[start:end]`` alone, as an unseen test window.

    Indicators are warmed up on the ``warmup`` bars before ``start`` (past data only), but
    orders start with fresh cash at ``start``: the window's result depends on nothing after
    ``end`` and on no position taken before ``start``.
    """
    ctx_start = max(0, start - warmup)
    entries, exits = strategy.signals(bars.iloc[ctx_start:end], params)
    offset = start - ctx_start
    return from_signals(
        bars.iloc[start:end],
        entries.iloc[offset:],
        exits.iloc[offset:],
        device=device,
        **options,
    )


def walk_forward(
    data: Any,
    strategy: str | Strategy,
    grid: Mapping[str, Any] | pd.DataFrame | None = None,
    *,
    train: int | str,
    test: int | str,
    metric: str = "sharpe",
    anchored: bool = False,
    progress: bool = True,
    device: str = "auto",
    **options: Any,
) -> WalkForwardResult:
    """Roll a train window and the test window after it through the data.

    In each step the whole ``grid`` is swept on the training window, the combination with the
    best ``metric`` is taken, and it is backtested on the following ``test`` window, which it
    has never seen; then both windows move forward by ``test`` bars (``anchored=True`` keeps the
    training start fixed). Indicators in a test window are warmed up on the bars before it
    (past data only), but orders start with fresh cash at the window's first bar. The test
    windows' returns are chained into one out-of-sample equity curve.

    ``train``/``test`` are bar counts or durations (``"730D"``); a duration becomes the number
    of bars that the first such span of the data holds (e.g. ~252 daily equity bars per "365D").
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}")
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    options = check_portfolio_options(options, bars)
    n_train = _to_bars(train, bars.index, "train")
    n_test = _to_bars(test, bars.index, "test")
    if n_train + n_test > len(bars):
        raise ConfigError(
            f"train ({n_train} bars) + test ({n_test} bars) exceed the data ({len(bars)} bars)"
        )
    combos = strat.grid(grid)
    warmup = strat.max_warmup(combos)
    init_cash = float(options.get("init_cash", 100_000.0))

    rows: list[dict[str, Any]] = []
    pieces: list[pd.Series] = []
    starts = list(range(0, len(bars) - n_train - n_test + 1, n_test))
    with _progress(progress, len(starts), "walk-forward") as bar:
        task = (
            bar.add_task(f"walk-forward: {len(starts)} windows", total=len(starts)) if bar else None
        )
        for k, start in enumerate(starts):
            train_start = 0 if anchored else start
            train_end = start + n_train
            test_end = train_end + n_test
            insample = sweep(
                bars.iloc[train_start:train_end],
                strat,
                combos,
                progress=False,
                device=device,
                **options,
            )
            try:
                pos = insample.best_position(metric)
            except ConfigError as exc:
                raise ConfigError(f"window {k}: {exc}") from None
            params = insample.best_params(metric)
            in_sample_value = float(insample.metrics[pos, METRICS[metric][0]])
            pf = backtest_window(
                bars, strat, params, train_end, test_end, warmup=warmup, device=device, **options
            )
            stats = pf.stats().iloc[0]
            rets = pf.returns.iloc[:, 0]
            pieces.append(rets)
            rows.append(
                {
                    "window": k,
                    "train_start": bars.index[train_start],
                    "train_end": bars.index[train_end - 1],
                    "test_start": bars.index[train_end],
                    "test_end": bars.index[test_end - 1],
                    **params,
                    f"is_{metric}": in_sample_value,
                    f"oos_{metric}": float(stats[metric])
                    if metric != "max_drawdown_duration"
                    else stats[metric],
                    "oos_total_return": float(stats["total_return"]),
                    "oos_trades": int(stats["trades"]),
                }
            )
            if bar is not None:
                bar.update(task, advance=1)
    oos_returns = pd.concat(pieces).rename("oos_return")
    oos_equity = (init_cash * (1.0 + oos_returns).cumprod()).rename("oos_equity")
    ann_factor = pf.ann_factor
    summary = pd.Series(
        returns_metrics(oos_returns.to_numpy(), ann_factor, init_cash), name="out_of_sample"
    )
    return WalkForwardResult(
        pd.DataFrame(rows).set_index("window"), oos_returns, oos_equity, summary, metric
    )

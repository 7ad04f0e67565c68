"""``celeris portfolio optimize|rebalance``: weights of several assets, and the book that holds them.

``optimize`` solves one set of weights from the assets' close-to-close returns; ``rebalance``
solves them at every rebalance date of a walk-forward (:func:`~celeris.analytics.rolling_weights`)
and backtests the book that trades to them on one account
(:func:`~celeris.backtest.rebalance`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    command_group,
    console,
    date_range_options,
    print_json,
)
from celeris.cli.options import (
    CashOpt,
    DeviceOpt,
    ExecutionOpt,
    FeesOpt,
    JsonOpt,
    SlippageOpt,
    YearDaysOpt,
)

ESTIMATORS: tuple[str, ...] = ("sample", "ledoit_wolf", "ewma")

DatasOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        help="An asset's market data (repeat, at least 2): sample:sp500, sample:nasdaq, a "
        "CSV/Parquet path, store:EXCHANGE/SYMBOL/TIMEFRAME, or a store glob such as "
        "'store:binance/*/USDT/1d' (quoted).",
    ),
]


ObjectiveOpt = Annotated[
    str, typer.Option(help="min_variance | max_sharpe | risk_parity | hrp | min_cvar.")
]
EstimatorOpt = Annotated[
    str, typer.Option(help="Covariance estimator: sample | ledoit_wolf | ewma.")
]
MaxWeightOpt = Annotated[
    float | None,
    typer.Option("--max-weight", help="Upper bound on every asset's weight, e.g. 0.6."),
]


@cli_errors
@date_range_options
def optimize_cmd(
    data: DatasOpt = None,
    objective: ObjectiveOpt = "min_variance",
    estimator: EstimatorOpt = "sample",
    max_weight: MaxWeightOpt = None,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Long-only, fully invested weights of several assets, from their close-to-close returns.

    The returns are aligned on the timestamps every asset has; the rows that only some assets
    have are counted and reported, never silently dropped.

    Example: celeris portfolio optimize --data sample:sp500 --data sample:nasdaq
    --objective risk_parity --estimator ledoit_wolf --max-weight 0.6
    """
    from celeris.analytics.optimize import OBJECTIVES, optimize_portfolio
    from celeris.cli.sources import expand_sources
    from celeris.errors import check_choice

    specs = expand_sources(list(data or []), command="portfolio optimize")
    check_choice("objective", objective, OBJECTIVES)
    check_choice("estimator", estimator, ESTIMATORS)
    returns, dropped, rows = aligned_returns(specs, span)
    constraints = {} if max_weight is None else {"max_weight": max_weight}
    result = optimize_portfolio(returns, objective, constraints, estimator)
    if json_out:
        print_json(_optimize_json(result, estimator, max_weight, dropped, rows, returns))
        return
    _print_optimize(result, estimator, max_weight, dropped, rows, returns)


def aligned_returns(specs: list[str], span: Options = FILLED) -> tuple[Any, dict[str, int], int]:
    """Close-to-close returns of each source on their common timestamps.

    Returns the returns frame (one column per data spec), the number of bars of each source
    that are left out because another source has no bar at that timestamp, and the number of
    common bars (one more than the rows of returns).
    """
    from celeris.cli.sources import common_bars, load_sources

    bars, dropped = common_bars(load_sources(specs, span), command="portfolio optimize")
    returns = _returns_of(bars)
    return returns, dropped, len(returns) + 1


def _returns_of(bars: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame({spec: b["close"] for spec, b in bars.items()}).pct_change().iloc[1:]


def _optimize_json(
    result: Any,
    estimator: str,
    max_weight: float | None,
    dropped: dict[str, int],
    rows: int,
    returns: Any,
) -> dict[str, Any]:
    return {
        "objective": result.objective,
        "estimator": estimator,
        "max_weight": max_weight,
        "solver": result.solver,
        "status": result.status,
        "start": str(returns.index[0]),
        "end": str(returns.index[-1]),
        "common_bars": rows,
        "returns_rows": len(returns),
        "dropped_bars": dropped,
        "weights": {str(k): float(v) for k, v in result.weights.items()},
        "risk_contributions": {str(k): float(v) for k, v in result.risk_contributions.items()},
        "expected_return": result.expected_return,
        "volatility": result.volatility,
    }


def _print_optimize(
    result: Any,
    estimator: str,
    max_weight: float | None,
    dropped: dict[str, int],
    rows: int,
    returns: Any,
) -> None:
    from rich.table import Table

    bound = "" if max_weight is None else f", max weight {max_weight:g}"
    table = Table(
        title=f"{result.objective} weights ({estimator} covariance{bound})", header_style="bold"
    )
    for col, justify in (
        ("asset", "left"),
        ("weight %", "right"),
        ("risk contribution %", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for asset, weight in result.weights.items():
        table.add_row(
            str(asset), f"{100 * weight:.2f}", f"{100 * result.risk_contributions[asset]:.2f}"
        )
    console.print(
        f"{len(returns):,} returns from {rows:,} common bars, "
        f"{returns.index[0]} to {returns.index[-1]}",
        highlight=False,
        markup=False,
    )
    left_out = [f"{s}: {n:,}" for s, n in dropped.items() if n]
    console.print(
        "bars left out (no bar of every source at that time): "
        + (", ".join(left_out) if left_out else "none"),
        highlight=False,
        markup=False,
    )
    console.print(table)
    console.print(
        f"expected return {result.expected_return:.6g} per bar, volatility "
        f"{result.volatility:.6g} per bar (objective {result.objective}, solver {result.solver})",
        highlight=False,
        markup=False,
    )


# ---- celeris portfolio rebalance --------------------------------------------------------
@cli_errors
@date_range_options
def rebalance_cmd(
    data: DatasOpt = None,
    objective: ObjectiveOpt = "min_variance",
    estimator: EstimatorOpt = "sample",
    max_weight: MaxWeightOpt = None,
    every: Annotated[
        str, typer.Option(help="Rebalance period: the first bar at or after each step, e.g. 7D.")
    ] = "7D",
    lookback: Annotated[
        str,
        typer.Option(
            help="Returns each rebalance's weights are estimated from: a period (180D) or a "
            "number of bars (120), all strictly before the rebalance date."
        ),
    ] = "180D",
    threshold: Annotated[
        float,
        typer.Option(
            help="Skip a rebalance unless some asset's weight drifted this far from its new "
            "target (0.05: 5 points; 0: always trade)."
        ),
    ] = 0.0,
    fees: FeesOpt = 0.0,
    fixed_fees: Annotated[
        float, typer.Option("--fixed-fees", help="Fixed fee per order, in cash.")
    ] = 0.0,
    slippage: SlippageOpt = 0.0,
    init_cash: CashOpt = 100_000.0,
    execution: ExecutionOpt = "next_open",
    year_days: YearDaysOpt = None,
    device: DeviceOpt = "auto",
    report: Annotated[Path | None, typer.Option(help="Write the book's HTML report here.")] = None,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Optimise weights at every rebalance date and backtest the book that trades to them.

    At each rebalance date (every --every, from the first date with a full --lookback) the
    weights are solved from the returns strictly before it, then traded on one account shared
    by all the assets (sells first): the orders of a rebalance date fill at the next bar's open
    (--execution close: at its close). The sources are aligned on the timestamps every one has;
    the bars left out are counted and reported.

    Example: celeris portfolio rebalance --data sample:sp500 --data sample:nasdaq
    --objective min_variance --every 7D --lookback 180D --threshold 0.05 --fees 0.001
    """
    from celeris.analytics.optimize import OBJECTIVES
    from celeris.analytics.rolling import rolling_weights
    from celeris.backtest.rebalance import rebalance
    from celeris.cli.sources import common_bars, expand_sources, load_sources
    from celeris.errors import check_choice

    specs = expand_sources(list(data or []), command="portfolio rebalance")
    check_choice("objective", objective, OBJECTIVES)
    check_choice("estimator", estimator, ESTIMATORS)
    bars, dropped = common_bars(load_sources(specs, span), command="portfolio rebalance")
    constraints = {} if max_weight is None else {"max_weight": max_weight}
    weights = rolling_weights(
        _returns_of(bars), every=every, lookback=_lookback(lookback), objective=objective,
        constraints=constraints, estimator=estimator, device=device,
    )  # fmt: skip
    book = rebalance(
        bars, weights, threshold=threshold, fees=fees, fixed_fees=fixed_fees,
        slippage=slippage, init_cash=init_cash, execution=execution, year_days=year_days,
        device=device,
    )  # fmt: skip
    run = _RebalanceRun(specs, objective, estimator, max_weight, every, lookback, threshold)
    summary = _rebalance_summary(book, weights, dropped)
    if json_out:
        print_json(_rebalance_json(run, book, weights, summary))
    else:
        _print_rebalance(run, book, weights, summary)
    if report is not None:
        written = book.to_html(report, title=run.caption(book))
        if not json_out:
            console.print(f"wrote {written}")


def _lookback(text: str) -> str | int:
    """``--lookback``: a number of bars when it is a whole number, else a period."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


class _RebalanceRun:
    """What ``rebalance`` was asked: the sources and the weights' settings."""

    def __init__(
        self,
        specs: list[str],
        objective: str,
        estimator: str,
        max_weight: float | None,
        every: str,
        lookback: str,
        threshold: float,
    ) -> None:
        self.specs = specs
        self.objective = objective
        self.estimator = estimator
        self.max_weight = max_weight
        self.every = every
        self.lookback = lookback
        self.threshold = threshold

    def caption(self, book: Any) -> str:
        bound = "" if self.max_weight is None else f", max weight {self.max_weight:g}"
        drift = "" if not self.threshold else f", threshold {self.threshold:g}"
        window = _lookback(self.lookback)
        window_text = f"{window} bars" if isinstance(window, int) else window
        return (
            f"{self.objective} ({self.estimator} covariance{bound}) every {self.every}, "
            f"lookback {window_text}{drift}: {', '.join(self.specs)}; {book.execution}"
        )


def _rebalance_summary(book: Any, weights: Any, dropped: dict[str, int]) -> dict[str, Any]:
    """Rebalances asked and traded, turnover, fees and the final book, for table and JSON."""
    import numpy as np

    shift = 1 if book.execution == "next_open" else 0
    rebalance_bars = book.index.get_indexer(weights.index) + shift
    fill_bars = np.unique(book.orders["bar"].to_numpy())
    stats = book.stats().iloc[0]
    return {
        "rebalances": len(weights),
        "rebalances_traded": int(np.isin(rebalance_bars, fill_bars).sum()),
        "orders": len(book.orders),
        "turnover": float(book.turnover.iloc[0]),
        "total_fees": float(stats["total_fees"]),
        "stats": stats,
        "final_weights": book.weights.iloc[-1],
        "contribution": book.contribution["pnl"],
        "dropped": dropped,
    }


def _rebalance_json(
    run: _RebalanceRun, book: Any, weights: Any, summary: dict[str, Any]
) -> dict[str, Any]:
    from celeris.cli.format import jsonable, setup_json

    return {
        "data": run.specs,
        "objective": run.objective,
        "estimator": run.estimator,
        "max_weight": run.max_weight,
        "every": run.every,
        "lookback": run.lookback,
        "threshold": run.threshold,
        "solver": weights.attrs.get("solver"),
        **setup_json(book.execution, book.annualisation, book.index),
        "dropped_bars": summary["dropped"],
        "rebalances": summary["rebalances"],
        "rebalances_traded": summary["rebalances_traded"],
        "orders": summary["orders"],
        "turnover": summary["turnover"],
        "total_fees": summary["total_fees"],
        "last_rebalance": str(weights.index[-1]),
        "last_weights": {str(k): float(v) for k, v in weights.iloc[-1].items()},
        "final_weights": {str(k): float(v) for k, v in summary["final_weights"].items()},
        "contribution": {str(k): float(v) for k, v in summary["contribution"].items()},
        "stats": {k: jsonable(v) for k, v in summary["stats"].items()},
        "weights": {
            str(t): {str(k): float(v) for k, v in row.items()} for t, row in weights.iterrows()
        },
    }


def _print_rebalance(run: _RebalanceRun, book: Any, weights: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    from celeris.cli.format import stats_table
    from celeris.formatting import format_number, format_timestamp

    left_out = [f"{s}: {n:,}" for s, n in summary["dropped"].items() if n]
    console.print(
        f"{run.caption(book)}\n{len(book.index):,} common bars, "
        f"{format_timestamp(book.index[0])} to {format_timestamp(book.index[-1])}; bars left "
        "out (no bar of every source at that time): "
        + (", ".join(left_out) if left_out else "none"),
        highlight=False,
        markup=False,
    )
    table = Table(
        title=f"weights at the last rebalance ({format_timestamp(weights.index[-1])})",
        header_style="bold",
    )
    for col in ("asset", "target %", "held at end %", "P&L"):
        table.add_column(col, justify="left" if col == "asset" else "right")
    for asset, target in weights.iloc[-1].items():
        table.add_row(
            str(asset),
            f"{100 * target:.2f}",
            f"{100 * summary['final_weights'][asset]:.2f}",
            format_number(summary["contribution"][asset], "cash"),
        )
    console.print(table)
    console.print(
        f"rebalances: {summary['rebalances']:,} ({summary['rebalances_traded']:,} traded, "
        f"{summary['orders']:,} orders); turnover {summary['turnover']:.2f}x the mean value; "
        f"total fees {format_number(summary['total_fees'], 'cash')}",
        highlight=False,
        markup=False,
    )
    console.print(stats_table(summary["stats"], "the rebalanced book"))


def register(app: typer.Typer) -> None:
    """Add ``celeris portfolio`` and its ``optimize`` and ``rebalance`` commands to the app."""
    group = command_group(
        app, "portfolio", "Portfolio weights for several assets, and the rebalanced book."
    )
    group.command("optimize")(optimize_cmd)
    group.command("rebalance")(rebalance_cmd)

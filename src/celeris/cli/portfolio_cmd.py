"""``celeris portfolio optimize``: weights for several assets from their close-to-close returns."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    command_group,
    console,
    date_range_options,
    load_bars,
    print_json,
)
from celeris.cli.options import JsonOpt
from celeris.errors import ConfigError

ESTIMATORS: tuple[str, ...] = ("sample", "ledoit_wolf", "ewma")

DatasOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        help="An asset's market data (repeat, at least 2): sample:sp500, sample:nasdaq, a "
        "CSV/Parquet path, or store:EXCHANGE/SYMBOL/TIMEFRAME.",
    ),
]


@cli_errors
@date_range_options
def optimize_cmd(
    data: DatasOpt = None,
    objective: Annotated[
        str,
        typer.Option(help="min_variance | max_sharpe | risk_parity | hrp | min_cvar."),
    ] = "min_variance",
    estimator: Annotated[
        str, typer.Option(help="Covariance estimator: sample | ledoit_wolf | ewma.")
    ] = "sample",
    max_weight: Annotated[
        float | None,
        typer.Option("--max-weight", help="Upper bound on every asset's weight, e.g. 0.6."),
    ] = None,
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
    from celeris.errors import check_choice

    specs = list(data or [])
    if len(specs) < 2:
        raise ConfigError(
            f"portfolio optimize needs at least 2 --data sources, got {len(specs)}"
            + (f" ({specs[0]})" if specs else "")
        )
    if len(set(specs)) != len(specs):
        dup = next(s for s in specs if specs.count(s) > 1)
        raise ConfigError(f"--data {dup} is given more than once")
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
    import pandas as pd

    closes = {spec: load_bars(spec, span)["close"] for spec in specs}
    common = None
    for close in closes.values():
        common = close.index if common is None else common.intersection(close.index)
    assert common is not None
    dropped = {spec: int(len(c) - c.index.isin(common).sum()) for spec, c in closes.items()}
    if len(common) < 3:
        raise ConfigError(
            f"the --data sources share only {len(common)} timestamps "
            f"({', '.join(f'{s}: {len(c)} bars' for s, c in closes.items())}); "
            "portfolio optimize needs returns on common dates"
        )
    frame = pd.DataFrame({spec: c.loc[common] for spec, c in closes.items()})
    returns = frame.pct_change().iloc[1:]
    return returns, dropped, len(common)


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


def register(app: typer.Typer) -> None:
    """Add ``celeris portfolio`` and its ``optimize`` command to the top-level app."""
    group = command_group(app, "portfolio", "Portfolio weights for several assets.")
    group.command("optimize")(optimize_cmd)

"""Readable formatting of backtest metrics for tables and JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from rich.table import Table

from celeris.backtest.metrics import format_metric
from celeris.backtest.portfolio import FILL_RULES
from celeris.jsonsafe import to_jsonable

SUMMARY_COLUMNS = [
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
]


def fmt(name: str, value: Any) -> str:
    """Format one metric value for a CLI table: :func:`celeris.backtest.metrics.format_metric`
    with ``"-"`` for a missing value."""
    return format_metric(name, value, missing="-")


def jsonable(value: Any) -> Any:
    """Convert a value for ``--json`` output: :func:`celeris.jsonsafe.to_jsonable` with
    timestamps and durations as their ``str`` and infinity kept (NaN and NaT -> None)."""
    return to_jsonable(value, times="str", inf="keep")


def stats_table(stats: pd.Series, title: str) -> Table:
    """A two-column metric/value table of one portfolio column."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in stats.items():
        table.add_row(str(name), fmt(str(name), value))
    return table


def frame_table(frame: pd.DataFrame, title: str, columns: list[str] | None = None) -> Table:
    """A table of rows (index levels first) with formatted metric columns."""
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    table = Table(title=title, header_style="bold")
    names = [n if n is not None else "" for n in frame.index.names]
    for n in names:
        table.add_column(str(n), justify="right", style="cyan")
    for c in columns:
        table.add_column(c, justify="right")
    for label, row in frame[columns].iterrows():
        labels = label if isinstance(label, tuple) else (label,)
        table.add_row(*(fmt("", v) for v in labels), *(fmt(c, row[c]) for c in columns))
    return table


def run_caption(
    strategy: str,
    params: Mapping[str, Any],
    source: str,
    index: pd.Index,
    execution: str,
    year_days: Any,
) -> str:
    """What a table shows: strategy, parameters, data source and range, fill rule, annualisation.

    ``sma_cross (fast=10, slow=50) on sample:sp500, 1999-01-04 to 2018-12-31 (5,031 bars);
    next_open (fills at the next bar's open); annualisation: 252 days/year (inferred ...)``.
    """
    from celeris.backtest.annualisation import resolve_year_days

    label = ", ".join(f"{k}={fmt('', v)}" for k, v in params.items())
    span = (
        f"{fmt('', index[0])} to {fmt('', index[-1])} ({len(index):,} bars)" if len(index) else ""
    )
    head = f"{strategy} ({label})" if label else strategy
    return (
        f"{head} on {source}, {span}; {execution} ({FILL_RULES.get(execution, execution)}); "
        f"{resolve_year_days(index, year_days).describe()}"
    )


def setup_json(execution: str, year_days: Any, index: pd.Index) -> dict[str, Any]:
    """The fill rule and annualisation of a run, for ``--json`` output."""
    from celeris.backtest.annualisation import resolve_year_days

    annual = resolve_year_days(index, year_days)
    return {
        "execution": execution,
        "fill_rule": FILL_RULES.get(execution, execution),
        "year_days": annual.days,
        "annualisation": annual.describe(),
        "start": str(index[0]) if len(index) else None,
        "end": str(index[-1]) if len(index) else None,
        "bars": len(index),
    }

"""``celeris analyze``: the LLM analyst's strategy analysis, market regime and risk assessment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    console,
    date_range_options,
    load_bars,
    print_json,
)
from celeris.cli.options import (
    DataOpt,
    JsonOpt,
    ParamOpt,
    StrategyOpt,
    backtest_options,
    llm_options,
    make_client,
    portfolio_options,
    single_param_values,
)
from celeris.errors import ConfigError


def _other_assets(specs: list[str]) -> dict[str, Any]:
    """``NAME=SOURCE`` or ``SOURCE`` items to bar frames keyed by name (the source by default)."""
    out: dict[str, Any] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        # A Windows path or a store key has no "=", so only NAME=SOURCE splits.
        name, source = (name.strip(), source.strip()) if sep else (spec.strip(), spec.strip())
        if not name or not source:
            raise ConfigError(f"--with expects SOURCE or NAME=SOURCE, got {spec!r}")
        if name in out:
            raise ConfigError(f"--with names {name!r} twice")
        out[name] = load_bars(source)
    return out


@cli_errors
@portfolio_options
@llm_options
@date_range_options
def analyze_cmd(
    data: DataOpt = "sample:sp500",
    strategy: StrategyOpt = "sma_cross",
    param: ParamOpt = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only this analysis: strategy | regime | risk (repeatable; default all).",
        ),
    ] = None,
    funding: Annotated[
        Path | None,
        typer.Option(help="Funding rates CSV with columns timestamp,rate (rate per interval)."),
    ] = None,
    orderbook: Annotated[
        Path | None,
        typer.Option(help="Order-book snapshot JSON: bids and asks as lists of price, size."),
    ] = None,
    with_: Annotated[
        list[str] | None,
        typer.Option(
            "--with",
            help="Another asset for correlations: SOURCE or NAME=SOURCE (repeatable).",
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Token budget of each prompt (default: CELERIS_LLM_CONTEXT_TOKENS, 3072, "
            "within what the server's context window leaves for the answer)."
        ),
    ] = None,
    objective: Annotated[
        str, typer.Option(help="Metric the strategy analysis should improve.")
    ] = "sharpe",
    audit: Annotated[
        Path | None, typer.Option(help="Append the prompts and answers to this JSONL log.")
    ] = None,
    prompts: Annotated[
        bool, typer.Option("--prompts", help="With --json, include the rendered prompts.")
    ] = False,
    llm_opts: Options = FILLED,
    opts: Options = FILLED,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Ask the LLM analyst for a strategy analysis, the market regime and a risk assessment.

    The strategy is backtested with the given parameters; each analysis reads exact
    statistics of the data and the backtest, rendered from a versioned prompt template
    inside the token budget, and answers in a validated schema.

    Example: celeris analyze --data sample:sp500 --strategy sma_cross --param fast=10
    --param slow=50 --with nasdaq=sample:nasdaq
    """
    from celeris.backtest.strategies import get_strategy
    from celeris.llm.analyst import ANALYSES, analyze

    # The client first: without a configured LLM this fails at once, before any work.
    client = make_client(llm_opts)
    strat = get_strategy(strategy)
    params = single_param_values(param or [], strat)
    bars = load_bars(data, span)
    options, device = backtest_options(opts, bars)
    report = analyze(
        bars, strat, params, client=client, analyses=tuple(only or ANALYSES),
        funding=funding, orderbook=orderbook, other_assets=_other_assets(with_ or []),
        budget_tokens=budget, objective=objective, label=data, audit=audit,
        device=device, **options,
    )  # fmt: skip
    if json_out:
        print_json(report.to_dict(messages=prompts))
    else:
        console.print(report.to_text(), highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``analyze`` to the top-level app."""
    app.command("analyze")(analyze_cmd)

"""The ``celeris`` command: data, backtests, sweeps, walk-forward and the demo."""

from __future__ import annotations

import typer

from celeris.cli import (
    analyze_cmd,
    backtest_cmd,
    bench_cmd,
    demo,
    doctor_cmd,
    exchange_cmd,
    live_cmd,
    llm_cmd,
    models_cmd,
    portfolio_cmd,
    ray_cmd,
    serve_cmd,
)
from celeris.cli.data_cmd import data_app

app = typer.Typer(
    name="celeris",
    help=(
        "Celeris: vectorized backtests of thousands of strategy variants on CPU or GPU, "
        "forecasting models, a verified LLM analyst, and a low-latency forecast server.\n\n"
        "Start with [bold]celeris demo[/], then e.g.\n\n"
        "  celeris backtest --data sample:sp500 --strategy sma_cross --param fast=10 --param slow=50\n\n"
        "  celeris sweep --data sample:sp500 --strategy sma_cross --grid fast=10:80:2 --grid slow=50:500:10\n\n"
        "  celeris optimize --data sample:sp500 --strategy sma_cross --bound fast=5:100 --bound slow=20:400\n\n"
        "Bad input prints one line and exits with code 2."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
backtest_cmd.register(app)
demo.register(app)
doctor_cmd.register(app)
models_cmd.register(app)
llm_cmd.register(app)
analyze_cmd.register(app)
serve_cmd.register(app)
ray_cmd.register(app)
bench_cmd.register(app)
portfolio_cmd.register(app)
exchange_cmd.register(app)
live_cmd.register(app)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()

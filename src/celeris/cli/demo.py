"""``celeris demo``: an end-to-end showcase on real data in well under a minute."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import cli_errors, console

# 40 fast x 50 slow windows, every pair admissible (fast < slow): exactly 2,000 variants.
DEMO_GRID = {"fast": list(range(2, 82, 2)), "slow": list(range(90, 590, 10))}
WF_GRID = {"fast": list(range(5, 55, 5)), "slow": list(range(60, 260, 20))}


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @cli_errors
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="Folder for the HTML report and the PNG.")] = Path(
            "reports"
        ),
        data: Annotated[str, typer.Option(help="Data to run on.")] = "sample:sp500",
    ) -> None:
        """Run the showcase: 2,000-variant sweep, walk-forward, reports (real S&P 500 data).

        Prints the best variants with their out-of-sample figures and writes an HTML report and
        a PNG of the best variant.
        """
        from celeris.backtest import sweep, walk_forward
        from celeris.cli.format import SUMMARY_COLUMNS, fmt, frame_table
        from celeris.data import SAMPLES, load

        started = time.perf_counter()
        bars = load(data)
        name = data.split(":", 1)[1] if data.startswith("sample:") else data
        about = SAMPLES.get(name, "") if data.startswith("sample:") else ""
        console.rule("[bold]Celeris demo")
        console.print(
            f"data: [bold]{data}[/]: "
            + (
                about
                or f"{len(bars):,} bars, {bars.index[0]:%Y-%m-%d} to {bars.index[-1]:%Y-%m-%d}"
            )
        )
        opts: dict[str, Any] = {"fees": 0.001, "slippage": 0.0005, "year_days": 252}
        t0 = time.perf_counter()
        result = sweep(bars, "sma_cross", DEMO_GRID, **opts)
        t_sweep = time.perf_counter() - t0
        best_pf = result.portfolio(metric="sharpe")
        console.print(
            f"\n[bold]1. sweep[/]: SMA crossover, {len(result.combos):,} (fast, slow) variants, "
            f"fees 10 bp, slippage 5 bp: {t_sweep:.2f} s\n   {best_pf.describe()}",
            highlight=False,
        )
        console.print(
            frame_table(
                result.best("sharpe", 10),
                "best 10 in sample (whole period) by Sharpe",
                SUMMARY_COLUMNS[:7],
            )
        )

        t0 = time.perf_counter()
        wf = walk_forward(bars, "sma_cross", WF_GRID, train="1095D", test="365D", **opts)
        t_wf = time.perf_counter() - t0
        console.print(
            f"\n[bold]2. walk-forward[/]: {len(wf.windows)} windows, 3 years in sample -> next year out of sample "
            f"({t_wf:.2f} s)"
        )
        cols = [
            "test_start",
            "test_end",
            "fast",
            "slow",
            "is_sharpe",
            "oos_sharpe",
            "oos_total_return",
            "oos_trades",
        ]
        console.print(
            frame_table(wf.windows, "parameters chosen in sample, judged out of sample", cols)
        )
        summary = wf.summary
        console.print(
            "out of sample, stitched: "
            + ", ".join(f"{k} [bold]{fmt(str(k), v)}[/]" for k, v in summary.items())
        )
        best = result.best_params("sharpe")
        console.print(
            f"\nThe in-sample winner {best} looked best with hindsight; the walk-forward line above is "
            "what choosing parameters without hindsight delivered."
        )
        if note := result.edge_note("sharpe"):
            console.print(f"[yellow]{note}[/]", highlight=False)

        _portfolio_section({data: bars})
        _perp_section()

        out.mkdir(parents=True, exist_ok=True)
        title = f"SMA crossover fast={best['fast']} slow={best['slow']} on {data}"
        html = result.to_html(out / "demo_report.html", metric="sharpe", title=title)
        png = best_pf.plot_png(out / "demo_best.png", title=title)
        console.print(f"\n[bold]5. reports[/]: {html.resolve()}\n             {png.resolve()}")
        console.print(f"\ndone in {time.perf_counter() - started:.1f} s")


#: The book of the demo's portfolio section: two real samples on one account.
PORTFOLIO_ASSETS = ("sp500", "nasdaq")


def _portfolio_section(loaded: dict[str, Any]) -> None:
    """Min-variance weights re-solved weekly on the two real samples, traded on one account,
    beside holding each alone. ``loaded``: bars the demo has already loaded, by source."""
    import pandas as pd

    from celeris.analytics.rolling import rolling_weights
    from celeris.backtest.rebalance import rebalance
    from celeris.cli.format import frame_table
    from celeris.data import load

    t0 = time.perf_counter()
    bars = {
        name: loaded[f"sample:{name}"] if f"sample:{name}" in loaded else load(f"sample:{name}")
        for name in PORTFOLIO_ASSETS
    }
    returns = pd.DataFrame({n: b["close"] for n, b in bars.items()}).pct_change().iloc[1:]
    weights = rolling_weights(returns, every="7D", lookback="180D", objective="min_variance")
    opts: dict[str, Any] = {"fees": 0.001, "year_days": 252}
    rows = {"min-variance, weekly": rebalance(bars, weights, **opts).stats().iloc[0]}
    first = weights.index[:1]
    for name in PORTFOLIO_ASSETS:
        alone = pd.DataFrame({name: [1.0]}, index=first)
        rows[f"{name} only"] = rebalance(bars, alone, **opts).stats().iloc[0]
    table = pd.DataFrame(rows).T.rename_axis("book")
    elapsed = time.perf_counter() - t0
    mean = weights.mean()
    console.print(
        f"\n[bold]3. portfolio[/]: {' + '.join(PORTFOLIO_ASSETS)} on one account, min-variance "
        f"weights from the last 180 days re-solved every 7 days ({len(weights):,} rebalances, "
        f"mean weights "
        + ", ".join(f"{n} {100 * mean[n]:.0f}%" for n in PORTFOLIO_ASSETS)
        + f"), fees 10 bp ({elapsed:.2f} s)",
        highlight=False,
    )
    cols = ["total_return", "cagr", "volatility", "sharpe", "max_drawdown", "turnover"]
    console.print(
        frame_table(table, f"the book against each asset alone, from {first[0]:%Y-%m-%d}", cols)
    )


#: The demo's perpetual book: synthetic hourly bars and funding (seeded), one cross account.
PERP_ASSETS = ("BTC", "ETH", "SOL")
PERP_LEVERAGE = (2.0, 10.0)


def perp_book(leverage: float) -> Any:
    """The demo's synthetic perpetual book at ``leverage``: SMA(24, 96) longs on three coins,
    30% of the free margin (times the leverage) per entry, cross margin, 8-hourly funding,
    taker 5 bp."""
    import pandas as pd

    from celeris.backtest import from_signals
    from celeris.data import align_funding, synthetic, synthetic_funding
    from celeris.data.panel import to_panel

    bars = {s: synthetic(2_000, freq="1h", seed=k) for k, s in enumerate(PERP_ASSETS)}
    panel = to_panel(bars)
    funding = pd.DataFrame(
        {s: align_funding(synthetic_funding(b, seed=k), b) for k, (s, b) in enumerate(bars.items())}
    )
    fast = panel.close.rolling(24).mean()
    slow = panel.close.rolling(96).mean()
    return from_signals(
        panel, fast > slow, fast < slow, size=0.3, size_type="percent",
        instrument="perp", leverage=leverage, margin_mode="cross", funding_rate=funding,
        liquidation_fee=0.005, fees=0.0005, cash_sharing=True, call_seq="auto",
    )  # fmt: skip


def _perp_section() -> None:
    """A synthetic perpetual-futures book at two leverages: funding, liquidations, leverage."""
    import pandas as pd

    from celeris.cli.format import frame_table

    t0 = time.perf_counter()
    rows = {f"{lev:g}x cross": perp_book(lev).stats().iloc[0] for lev in PERP_LEVERAGE}
    table = pd.DataFrame(rows).T.rename_axis("book")
    console.print(
        f"\n[bold]4. perpetual futures[/]: {' + '.join(PERP_ASSETS)} (synthetic hourly bars and "
        "8-hourly funding), SMA 24/96 longs, 30% of the free margin per entry, one cross "
        f"account, taker 5 bp ({time.perf_counter() - t0:.2f} s)",
        highlight=False,
    )
    cols = ["total_return", "max_drawdown", "funding_paid", "funding_received", "liquidations",
            "max_leverage"]  # fmt: skip
    console.print(frame_table(table, "the same signals at two leverages", cols))

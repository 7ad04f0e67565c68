"""``celeris demo``'s portfolio section: the book it prints is the API's."""

from __future__ import annotations

import pandas as pd

from celeris.analytics import rolling_weights
from celeris.backtest import rebalance
from celeris.cli.demo import PORTFOLIO_ASSETS, _portfolio_section
from celeris.cli.format import fmt
from celeris.data import load


def test_demo_portfolio_section_prints_the_rebalanced_book_and_each_asset_alone(capsys):
    sp500 = load("sample:sp500")
    _portfolio_section({"sample:sp500": sp500})
    out = capsys.readouterr().out
    bars = {name: load(f"sample:{name}") for name in PORTFOLIO_ASSETS}
    returns = pd.DataFrame({n: b["close"] for n, b in bars.items()}).pct_change().iloc[1:]
    weights = rolling_weights(returns, every="7D", lookback="180D", objective="min_variance")
    book = rebalance(bars, weights, fees=0.001, year_days=252).stats().iloc[0]
    alone = (
        rebalance(
            bars,
            pd.DataFrame({"nasdaq": [1.0]}, index=weights.index[:1]),
            fees=0.001,
            year_days=252,
        )
        .stats()
        .iloc[0]
    )
    assert "3. portfolio" in out and f"{len(weights):,} rebalances" in out
    for text in ("min-variance, weekly", "sp500 only", "nasdaq only", "max_drawdown"):
        assert text in out, text
    assert fmt("total_return", book["total_return"]) in out
    assert fmt("sharpe", alone["sharpe"]) in out
    assert book["turnover"] > 1  # weekly trading, not a single buy


def test_demo_perp_section_prints_the_books_at_two_leverages(capsys):
    from celeris.cli.demo import PERP_LEVERAGE, _perp_section, perp_book

    _perp_section()
    out = capsys.readouterr().out
    assert "4. perpetual futures" in out
    low, high = (perp_book(lev).stats().iloc[0] for lev in PERP_LEVERAGE)
    for stats in (low, high):
        assert fmt("total_return", stats["total_return"]) in out
        assert fmt("max_leverage", stats["max_leverage"]) in out
    assert high["max_leverage"] > 3 * low["max_leverage"]  # the leverage is what differs
    assert low["funding_paid"] > 0

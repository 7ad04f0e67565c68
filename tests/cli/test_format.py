"""The CLI's tables show metrics with the same rules as the HTML report (one formatter)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.backtest.metrics import format_metric
from celeris.cli.format import fmt

CELLS = [
    ("total_return", 0.308658),
    ("volatility", 0.2512),
    ("sharpe", 2.0),
    ("profit_factor", np.inf),
    ("end_value", 130865.842517),
    ("trades", 1234.0),  # a count upcast to float by DataFrame.iterrows
    ("trades", np.int64(1234)),
    ("max_drawdown_duration", pd.Timedelta(days=2907, hours=4)),
    ("max_drawdown_duration", 42.0),
    ("start", pd.Timestamp("2024-01-02 13:05", tz="UTC")),
]


@pytest.mark.parametrize(("name", "value"), CELLS)
def test_cli_fmt_same_text_as_report_except_missing_marker(name, value) -> None:
    # They disagreed on durations ("2907 days 04:00:00" vs "2,907 days 4 h"), integer-valued
    # ratios ("2" vs "2.000") and upcast counts ("1234" vs "1,234"); the report's choice holds.
    assert fmt(name, value) == format_metric(name, value)


def test_cli_fmt_missing_marker_is_a_dash() -> None:
    assert fmt("sharpe", np.nan) == "-"
    assert fmt("max_drawdown_duration", pd.NaT) == "-"
    assert fmt("win_rate", None) == "-"
    assert format_metric("win_rate", None) == "n/a"


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("oos_total_return", 0.1234, "12.34%"),
        ("return", -0.05, "-5.00%"),
        ("pnl", 1234.5, "1,234.50"),
        ("exit_price", 99.0, "99.00"),
        ("", 0.05, "0.050"),
        ("", 20.0, "20"),
        ("", np.True_, "yes"),
    ],
)
def test_cli_fmt_trade_and_walk_forward_columns_keep_their_text(name, value, text) -> None:
    assert fmt(name, value) == text

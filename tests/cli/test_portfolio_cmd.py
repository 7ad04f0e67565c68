"""``celeris portfolio optimize`` through Typer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.analytics import optimize_portfolio, optimize_weights
from celeris.cli.main import app
from celeris.data import load

runner = CliRunner()
TWO = ("--data", "sample:sp500", "--data", "sample:nasdaq")


def invoke(*args: str):
    return runner.invoke(app, ["portfolio", "optimize", *args])


def _returns(specs: tuple[str, ...] = ("sample:sp500", "sample:nasdaq")) -> pd.DataFrame:
    closes = pd.DataFrame({s: load(s)["close"] for s in specs}).dropna()
    return closes.pct_change().iloc[1:]


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "risk_parity", "hrp"])
def test_optimize_json_weights_equal_api_and_sum_to_one(objective: str):
    result = invoke(*TWO, "--objective", objective, "--estimator", "ledoit_wolf", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    expected = optimize_weights(_returns(), objective, estimator="ledoit_wolf")
    got = pd.Series(out["weights"])
    assert abs(got.sum() - 1.0) < 1e-9
    np.testing.assert_allclose(got[expected.index].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert out["objective"] == objective and out["dropped_bars"] == {
        "sample:sp500": 0,
        "sample:nasdaq": 0,
    }
    assert abs(sum(out["risk_contributions"].values()) - 1.0) < 1e-9


def test_optimize_table_shows_weights_risk_and_objective():
    result = invoke(*TWO, "--objective", "min_variance", "--max-weight", "0.6")
    assert result.exit_code == 0, result.output
    res = optimize_portfolio(_returns(), "min_variance", {"max_weight": 0.6})
    for col in ("asset", "weight %", "risk contribution %", "expected return", "volatility"):
        assert col in result.stdout
    assert f"{100 * res.weights['sample:sp500']:.2f}" in result.stdout
    assert "min_variance" in result.stdout and "left out" in result.stdout


def test_optimize_non_overlapping_rows_reported_not_silently_dropped(tmp_path: Path):
    bars = load("sample:sp500")
    part = tmp_path / "part.csv"
    bars.iloc[100:2000].to_csv(part)
    result = invoke("--data", "sample:nasdaq", "--data", str(part), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dropped_bars"] == {"sample:nasdaq": len(bars) - 1900, str(part): 0}
    assert out["common_bars"] == 1900 and out["returns_rows"] == 1899
    table = invoke("--data", "sample:nasdaq", "--data", str(part))
    assert f"sample:nasdaq: {len(bars) - 1900:,}" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "sample:sp500"), "at least 2 --data"),
        ((), "at least 2 --data"),
        ((*TWO, "--objective", "min_varianse"), "did you mean"),
        ((*TWO, "--estimator", "ledoit"), "unknown estimator"),
        ((*TWO, "--max-weight", "0.3"), "max_weight and budget conflict"),
        (("--data", "sample:sp500", "--data", "sample:sp500"), "more than once"),
    ],
)
def test_optimize_bad_input_exits_2_with_message(args: tuple[str, ...], message: str):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("error:") == 1


def test_optimize_start_end_limit_the_returns():
    result = invoke(*TWO, "--start", "2010-01-01", "--end", "2015-01-01", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    window = _returns().loc["2010-01-05":"2015-01-01"]
    expected = optimize_weights(window)
    assert out["start"].startswith("2010-01-05") and out["returns_rows"] == len(window)
    np.testing.assert_allclose(list(out["weights"].values()), expected.to_numpy(), atol=1e-12)


def test_optimize_help_shows_example():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "celeris portfolio optimize --data sample:sp500" in result.output

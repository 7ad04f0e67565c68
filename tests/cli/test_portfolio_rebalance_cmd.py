"""``celeris portfolio rebalance`` (and store globs in ``portfolio optimize``) through Typer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.analytics import rolling_weights
from celeris.backtest import rebalance
from celeris.cli.main import app
from celeris.data import Store, load, synthetic
from tests.helpers import assert_values_close

runner = CliRunner()
TWO = ("--data", "sample:sp500", "--data", "sample:nasdaq")
FAST = ("--every", "30D", "--lookback", "120")  # ~240 rebalances on 20 years of daily bars


def invoke(*args: str):
    return runner.invoke(app, ["portfolio", "rebalance", *args])


def _bars() -> dict[str, pd.DataFrame]:
    return {s: load(s) for s in ("sample:sp500", "sample:nasdaq")}


def _api_book(bars: dict[str, pd.DataFrame], **kw):
    returns = pd.DataFrame({s: b["close"] for s, b in bars.items()}).pct_change().iloc[1:]
    weights = rolling_weights(returns, every="30D", lookback=120, objective=kw.pop("objective"))
    return weights, rebalance(bars, weights, **kw)


def test_rebalance_json_equals_rolling_weights_then_rebalance():
    result = invoke(
        *TWO, *FAST, "--objective", "min_variance", "--threshold", "0.05", "--fees", "0.001",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    weights, book = _api_book(_bars(), objective="min_variance", threshold=0.05, fees=0.001)
    stats = book.stats().iloc[0]
    assert out["rebalances"] == len(weights) and out["orders"] == len(book.orders)
    assert 0 < out["rebalances_traded"] < out["rebalances"]  # the threshold skipped some
    assert_values_close(out["stats"]["end_value"], stats["end_value"], rtol=1e-12)
    assert_values_close(out["turnover"], book.turnover.iloc[0], rtol=1e-12)
    assert_values_close(out["total_fees"], stats["total_fees"], rtol=1e-12)
    assert out["total_fees"] > 0
    assert out["last_rebalance"] == str(weights.index[-1])
    assert_values_close(list(out["last_weights"].values()), weights.iloc[-1].to_numpy())
    assert len(out["weights"]) == len(weights)
    assert out["execution"] == "next_open" and out["dropped_bars"] == {
        "sample:sp500": 0,
        "sample:nasdaq": 0,
    }
    assert abs(sum(out["contribution"].values()) - (stats["end_value"] - 100_000.0)) < 1e-6


def test_rebalance_table_shows_weights_turnover_fees_and_stats():
    result = invoke(*TWO, *FAST, "--fees", "0.001", "--execution", "close")
    assert result.exit_code == 0, result.output
    weights, book = _api_book(_bars(), objective="min_variance", fees=0.001, execution="close")
    for text in (
        "weights at the last rebalance",
        "target %",
        "held at end %",
        "turnover",
        "total fees",
        "end_value",
        "sharpe",
        "max_drawdown",
        "lookback 120 bars",
        "left out",
    ):
        assert text in result.stdout, text
    assert f"{100 * weights.iloc[-1]['sample:sp500']:.2f}" in result.stdout
    assert f"rebalances: {len(weights):,}" in result.stdout
    assert f"{book.stats().iloc[0]['end_value']:,.2f}" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "sample:sp500"), "portfolio rebalance needs at least 2 --data"),
        ((*TWO, "--objective", "min_varianse"), "did you mean"),
        ((*TWO, "--estimator", "ledoit"), "unknown estimator"),
        ((*TWO, "--every", "weekly"), "every must be a period like '7D'"),
        ((*TWO, "--lookback", "30Y"), "lookback"),
        ((*TWO, "--lookback", "100000"), "no rebalance date has a full lookback"),
        ((*TWO, "--threshold", "-0.1"), "threshold must be a finite weight distance >= 0"),
        ((*TWO, "--execution", "open"), "execution"),
        ((*TWO, "--fees", "2"), "fees"),
        (("--data", "sample:sp500", "--data", "sample:sp500"), "more than once"),
        ((*TWO, "--start", "2018-12-01"), "no rebalance date has a full lookback"),
    ],
)
def test_rebalance_bad_input_exits_2_with_one_line(args: tuple[str, ...], message: str):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("error:") == 1


def test_rebalance_help_shows_example():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "celeris portfolio rebalance --data sample:sp500" in result.output


# ---- store globs ----


@pytest.fixture
def store_home(tmp_path: Path, monkeypatch) -> Store:
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    store = Store()
    for i, symbol in enumerate(("AAA/USDT", "BBB/USDT", "CCC/BTC")):
        store.save(synthetic(800, freq="1D", seed=i + 1), "test", symbol, "1d")
    return store


def test_rebalance_store_glob_expands_to_the_stored_symbols(store_home: Store):
    result = invoke("--data", "store:test/*/USDT/1d", "--every", "7D", "--lookback", "60D",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["data"] == ["store:test/AAA/USDT/1d", "store:test/BBB/USDT/1d"]
    assert set(out["last_weights"]) == set(out["data"])


def test_optimize_store_glob_equals_listing_every_source(store_home: Store):
    globbed = runner.invoke(app, ["portfolio", "optimize", "--data", "store:test/*/1d", "--json"])
    listed = runner.invoke(
        app,
        ["portfolio", "optimize", "--json"]
        + [
            a for s in ("AAA/USDT", "BBB/USDT", "CCC/BTC") for a in ("--data", f"store:test/{s}/1d")
        ],
    )
    assert globbed.exit_code == 0, globbed.output
    assert json.loads(globbed.stdout)["weights"] == json.loads(listed.stdout)["weights"]
    assert len(json.loads(globbed.stdout)["weights"]) == 3


def test_store_glob_matching_nothing_exits_2_naming_the_store(store_home: Store):
    result = invoke("--data", "store:test/*/EUR/1d")
    assert result.exit_code == 2
    assert "store:test/*/EUR/1d matches no stored bars" in result.output
    assert "store:test/AAA/USDT/1d" in result.output


def test_rebalance_common_timestamps_left_out_bars_reported(tmp_path: Path):
    part = tmp_path / "part.csv"
    load("sample:sp500").iloc[1000:3000].to_csv(part)
    result = invoke("--data", "sample:nasdaq", "--data", str(part), *FAST, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dropped_bars"] == {"sample:nasdaq": 5031 - 2000, str(part): 0}
    assert out["bars"] == 2000
    assert np.isfinite(out["stats"]["sharpe"])


def test_rebalance_report_writes_the_book_html_titled_with_the_run(tmp_path: Path):
    path = tmp_path / "book.html"
    result = invoke(*TWO, *FAST, "--report", str(path))
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stdout.replace("\n", "")
    html = path.read_text()
    assert "<title>min_variance (sample covariance) every 30D, lookback 120 bars" in html
    assert "sample:nasdaq" in html


def test_rebalance_max_weight_and_estimator_reach_rolling_weights():
    result = invoke(*TWO, *FAST, "--max-weight", "0.7", "--estimator", "ledoit_wolf", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    bars = _bars()
    returns = pd.DataFrame({s: b["close"] for s, b in bars.items()}).pct_change().iloc[1:]
    expected = rolling_weights(
        returns, every="30D", lookback=120, constraints={"max_weight": 0.7},
        estimator="ledoit_wolf",
    )  # fmt: skip
    got = pd.DataFrame(out["weights"]).T
    assert_values_close(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    assert got.to_numpy().max() <= 0.7 + 1e-9

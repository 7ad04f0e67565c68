"""``celeris backtest|sweep --perp``: perpetual futures from the command line, as the API has them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from celeris.backtest import from_signals, get_strategy, sweep
from celeris.cli.main import app
from celeris.data import align_funding, synthetic, synthetic_funding

runner = CliRunner()


@pytest.fixture(scope="module")
def perp_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object, object]:
    tmp = tmp_path_factory.mktemp("perp")
    bars = synthetic(2_000, freq="1h", seed=11)
    funding = synthetic_funding(bars, seed=4)
    bars_csv = tmp / "bars.csv"
    bars.rename_axis("timestamp").to_csv(bars_csv)
    funding_csv = tmp / "funding.csv"
    funding.rename("rate").rename_axis("timestamp").to_csv(funding_csv)
    return bars_csv, funding_csv, bars, align_funding(funding, bars)


def test_backtest_perp_equals_the_api(perp_files):
    bars_csv, funding_csv, bars, rate = perp_files
    result = runner.invoke(app, [
        "backtest", "--data", str(bars_csv), "--param", "fast=10", "--param", "slow=50",
        "--perp", "--leverage", "5", "--margin-mode", "cross", "--funding", str(funding_csv),
        "--liquidation-fee", "0.005", "--fees", "0.0005", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["stats"]
    entries, exits = get_strategy("sma_cross").signals(bars, {"fast": 10, "slow": 50})
    api = from_signals(bars, entries, exits, instrument="perp", leverage=5, margin_mode="cross",
                       funding_rate=rate, liquidation_fee=0.005, fees=0.0005).stats().iloc[0]  # fmt: skip
    assert stats["end_value"] == pytest.approx(api["end_value"], rel=1e-12)
    assert stats["funding_paid"] == pytest.approx(api["funding_paid"], rel=1e-12)
    assert stats["max_leverage"] == pytest.approx(api["max_leverage"], rel=1e-12)


def test_sweep_perp_takes_leverage_as_a_grid_axis(perp_files):
    bars_csv, funding_csv, bars, rate = perp_files
    result = runner.invoke(app, [
        "sweep", "--data", str(bars_csv), "--grid", "fast=10,20", "--grid", "slow=50",
        "--grid", "leverage=1,3", "--perp", "--funding", str(funding_csv), "--fees", "0.0005",
        "--top", "4", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    api = sweep(bars, "sma_cross", {"fast": [10, 20], "slow": [50], "leverage": [1, 3]},
                instrument="perp", funding_rate=rate, fees=0.0005, progress=False)  # fmt: skip
    best = api.best("sharpe", 4)
    cli_best = out["best"] if "best" in out else out["top"]
    assert len(cli_best) == 4
    assert cli_best[0]["sharpe"] == pytest.approx(float(best["sharpe"].iloc[0]), rel=1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--leverage", "3"], "--leverage applies to perpetual futures: add --perp"),
        (["--funding", "x.csv"], "--funding applies to perpetual futures: add --perp"),
        (["--perp", "--leverage", "0.5"], "leverage must be a finite number >= 1"),
    ],
)
def test_perp_flags_bad_use_is_a_one_line_error(perp_files, args, message):
    bars_csv = perp_files[0]
    result = runner.invoke(app, ["backtest", "--data", str(bars_csv), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_funding_given_for_a_different_number_of_sources(perp_files):
    bars_csv, funding_csv = perp_files[0], perp_files[1]
    result = runner.invoke(app, ["backtest", "--data", str(bars_csv), "--perp",
                                 "--funding", str(funding_csv), "--funding", str(funding_csv)])  # fmt: skip
    assert result.exit_code == 2
    assert "--funding was given 2 time(s) for 1 --data source(s)" in result.output

"""The backtest, sweep, walk-forward and strategies commands, through Typer and the real script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.backtest import STRATEGIES, from_signals
from celeris.cli.main import app
from celeris.data import load
from tests.helpers import assert_values_close

runner = CliRunner()
CELERIS = Path(sys.executable).with_name("celeris")


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_backtest_json_matches_api():
    result = invoke(
        "backtest", "--data", "sample:sp500", "--strategy", "sma_cross", "--param", "fast=10", "--param", "slow=50",
        "--fees", "0.001", "--year-days", "252", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    bars = load("sample:sp500")
    e, x = STRATEGIES["sma_cross"].signals(bars, {"fast": 10, "slow": 50})
    stats = from_signals(bars, e, x, fees=0.001, year_days=252).stats().iloc[0]
    assert_values_close(out["stats"]["sharpe"], stats["sharpe"], rtol=1e-12)
    assert out["stats"]["trades"] == stats["trades"] == len(out["trades"])
    assert out["params"] == {"fast": 10, "slow": 50}


def test_backtest_table_output_and_reports(tmp_path: Path):
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    result = invoke(
        "backtest",
        "--param",
        "fast=20",
        "--param",
        "slow=100",
        "--html",
        str(html),
        "--png",
        str(png),
    )
    assert result.exit_code == 0, result.output
    assert "sharpe" in result.stdout and "trades" in result.stdout
    assert html.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_json_top_is_sorted_and_counts_variants():
    result = invoke(
        "sweep", "--data", "sample:sp500", "--grid", "fast=5:20:5", "--grid", "slow=30,60", "--top", "3",
        "--metric", "total_return", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["variants"] == 8
    returns = [row["total_return"] for row in out["top"]]
    assert returns == sorted(returns, reverse=True) and len(returns) == 3
    assert {"fast", "slow"} <= set(out["top"][0])


def test_walk_forward_json_reports_windows_and_out_of_sample():
    result = invoke(
        "walk-forward", "--grid", "fast=5,10", "--grid", "slow=50,100", "--train", "750", "--test", "500", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["windows"]) == -(-(5031 - 750) // 500)  # the last, partial window too
    assert out["windows"][-1]["test_end"].startswith("2018-12-31")
    assert out["windows"][-1]["test_bars"] == (5031 - 750) % 500
    assert set(out["out_of_sample"]) >= {"total_return", "sharpe", "max_drawdown"}


def test_strategies_lists_every_builtin():
    result = invoke("strategies", "--json")
    assert result.exit_code == 0
    assert set(json.loads(result.stdout)) == set(STRATEGIES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backtest", "--strategy", "sma_cros"], "did you mean 'sma_cross'"),
        (["backtest", "--param", "fats=10"], "did you mean 'fast'"),
        (["backtest", "--param", "fast=10,20"], "one value"),
        (["backtest", "--data", "/nonexistent/bars.csv"], "/nonexistent/bars.csv"),
        (["backtest", "--fees", "-1"], "fees must be in"),
        (["sweep", "--grid", "fast=50:10"], "start <= stop"),
        (["sweep", "--metric", "sharp"], "did you mean 'sharpe'"),
        (["backtest", "--device", "cuda"], "cuda"),
    ],
)
def test_commands_bad_input_one_line_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in result.output


def test_real_entry_point_sweep_runs(tmp_path: Path):
    env = dict(os.environ)
    proc = subprocess.run(
        [str(CELERIS), "sweep", "--grid", "fast=5,10", "--grid", "slow=50", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variants"] == 2
    bad = subprocess.run(
        [str(CELERIS), "sweep", "--strategy", "nope"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "unknown strategy" in bad.stderr


def test_demo_runs_end_to_end_and_writes_reports(tmp_path: Path):
    result = invoke("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "2,000" in result.stdout and "out of sample" in result.stdout
    assert "3. portfolio" in result.stdout and "min-variance, weekly" in result.stdout
    assert (tmp_path / "demo_report.html").stat().st_size > 100_000
    assert (tmp_path / "demo_best.png").read_bytes()[:4] == b"\x89PNG"


def _seed_numba_cache(dest: Path) -> None:
    """Copy this process's numba cache to ``dest``, less the sweep's signal kernel.

    A cold cache would make the first run below compile every kernel (~85 s of CPU, the most
    expensive test of the suite); seeded, it compiles only ``cross_signals_nb``, so it still
    saves something, and the entries it loads were written by another process, which is what
    the second run checks too. With no shared cache (or a cold one) the first run compiles all.
    """
    source = os.environ.get("NUMBA_CACHE_DIR")
    if source and Path(source).is_dir():
        shutil.copytree(
            source, dest, ignore=shutil.ignore_patterns("signals_nb.cross_signals_nb-*")
        )


def test_second_sweep_invocation_compiles_nothing(tmp_path: Path):
    """Numba kernels are cached on disk: a second process only loads them."""
    _seed_numba_cache(tmp_path / "numba")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), NUMBA_DEBUG_CACHE="1")
    cmd = [str(CELERIS), "sweep", "--grid", "fast=5,10", "--grid", "slow=50", "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    assert "data saved to" in first.stdout + first.stderr  # the cold run compiled and cached
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr
    log = second.stdout + second.stderr
    assert "data loaded from" in log
    assert "data saved to" not in log, [line for line in log.splitlines() if "saved" in line][:5]


def test_year_days_default_follows_the_data():
    from celeris.backtest.annualisation import resolve_year_days
    from celeris.data import synthetic

    assert resolve_year_days(load("sample:sp500").index) == 252.0  # no weekend bars: equities
    assert resolve_year_days(synthetic(5_000, freq="1h", seed=1).index) == 365.0  # 24/7
    assert resolve_year_days(load("sample:sp500").index, 365.0) == 365.0


def test_sweep_python_and_cli_annualise_alike_and_say_so():
    """Issue A4: the same sweep gave Sharpe 0.417 in Python (365) and 0.347 in the CLI (252)."""
    from celeris.backtest import sweep

    result = invoke(
        "sweep", "--grid", "fast=10", "--grid", "slow=50", "--fees", "0.001", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    api = sweep(load("sample:sp500"), "sma_cross", {"fast": [10], "slow": [50]}, fees=0.001,
                progress=False)  # fmt: skip
    assert_values_close(out["top"][0]["sharpe"], api.stats()["sharpe"].iloc[0], rtol=1e-12)
    assert out["year_days"] == 252.0
    assert out["annualisation"].startswith("annualisation: 252 days/year (inferred")
    table = invoke("sweep", "--grid", "fast=10", "--grid", "slow=50")
    assert "annualisation: 252 days/year (inferred from the data" in table.stdout


def test_backtest_default_fills_at_next_open_like_the_api_and_says_so():
    """Issue A5: one default fill for the API and the CLI, the next bar's open."""
    result = invoke("backtest", "--param", "fast=10", "--param", "slow=50", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    bars = load("sample:sp500")
    assert out["execution"] == "next_open" and out["stats"]["execution"] == "next_open"
    for trade in out["trades"]:
        entry = bars.index.get_loc(pd.Timestamp(trade["entry_time"]))
        assert_values_close(trade["entry_price"], bars["open"].iloc[entry], rtol=1e-12)
    e, x = STRATEGIES["sma_cross"].signals(bars, {"fast": 10, "slow": 50})
    api = from_signals(bars, e, x).stats().iloc[0]
    assert_values_close(out["stats"]["sharpe"], api["sharpe"], rtol=1e-12)
    table = invoke("backtest", "--param", "fast=10", "--param", "slow=50")
    text = " ".join(table.stdout.split())
    assert "sma_cross (fast=10, slow=50) on sample:sp500, 1999-01-04 to 2018-12-31" in text
    assert "next_open (fills at the next bar's open)" in text


def test_sweep_prints_its_plan_and_refuses_an_oversized_grid():
    """Issue A7: `--grid fast=1:10000:1 --grid slow=2:10000:1` reached 11 GB and printed nothing."""
    result = invoke("sweep", "--grid", "fast=1:10000:1", "--grid", "slow=2:10000:1")
    assert result.exit_code == 2, result.output
    assert "plan: " in result.stdout and "variants x 5,031 bars" in result.stdout
    err = result.stderr.strip()
    assert "max_variants=1,000,000" in err and "--max-variants" in err
    assert len(err.splitlines()) == 1
    small = invoke("sweep", "--grid", "fast=5,10,20", "--grid", "slow=50", "--max-variants", "2")
    assert small.exit_code == 2 and "3 variants, more than max_variants=2" in small.stderr


def test_sweep_flags_a_best_result_on_the_edge_of_the_grid():
    result = invoke("sweep", "--grid", "fast=5,10,20", "--grid", "slow=30:60:10", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    best = out["top"][0]
    expected = {}
    for name, values in (("fast", [5, 10, 20]), ("slow", [30, 40, 50, 60])):
        if best[name] in (values[0], values[-1]):
            expected[name] = "smallest" if best[name] == values[0] else "largest"
    assert out["edge"] == expected
    assert out["estimate"]["variants"] == out["variants"] == 12
    table = invoke("sweep", "--grid", "fast=5,10,20", "--grid", "slow=30:60:10")
    assert ("edge of the grid" in table.stdout) == bool(expected)


# ---- --start/--end: one option and one loader for every data-taking command (issue A11) ---------
def test_backtest_start_end_select_the_bars_and_the_title_names_them():
    result = invoke("backtest", "--start", "2010-01-01", "--end", "2012-12-31", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    bars = load("sample:sp500").loc["2010-01-01":"2012-12-31"]
    assert out["bars"] == len(bars) and out["start"].startswith("2010-01-04")
    assert out["end"].startswith("2012-12-31")
    e, x = STRATEGIES["sma_cross"].signals(bars, {"fast": 10, "slow": 50})
    api = from_signals(bars, e, x).stats().iloc[0]
    assert_values_close(out["stats"]["sharpe"], api["sharpe"], rtol=1e-12)
    table = invoke("backtest", "--start", "2010-01-01", "--end", "2012-12-31")
    expected = f"on sample:sp500, 2010-01-04 to 2012-12-31 ({len(bars):,} bars)"
    assert expected in " ".join(table.stdout.split())


@pytest.mark.parametrize(
    "command",
    [
        ["backtest"],
        ["sweep", "--grid", "fast=5,10", "--grid", "slow=50"],
        [
            "walk-forward",
            "--grid",
            "fast=5,10",
            "--grid",
            "slow=50",
            "--train",
            "250",
            "--test",
            "100",
        ],
        ["data", "load", "sample:sp500"],
        ["train", "nhits"],
        ["evaluate", "no-such-checkpoint"],
        ["forecast", "no-such-checkpoint"],
        ["optimize"],
        ["analyze"],
    ],
)
def test_every_data_command_takes_start_end_and_validates_them(command, monkeypatch):
    # analyze builds its LLM client first (nothing is contacted before the data is read).
    monkeypatch.setenv("CELERIS_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CELERIS_LLM_MODEL", "unused")
    args = [*command, "--start", "2014-01-01", "--end", "2012-01-01"]
    result = invoke(*args)
    assert result.exit_code == 2, (command, result.output)
    err = result.stderr.strip()
    assert "--start 2014-01-01 must be before --end 2012-01-01" in err, (command, err)
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (["--start", "yesterday-ish"], "--start 'yesterday-ish' is not a date or time"),
        (["--end", "2012-13-45"], "--end '2012-13-45' is not a date or time"),
        (["--start", "2012-01-01", "--end", "2012-01-01"], "must be before --end"),
        (
            ["--start", "1990-01-01"],
            "--start 1990-01-01 is outside the data: sample:sp500 runs from",
        ),
        (["--end", "2030-01-01"], "--end 2030-01-01 is outside the data"),
        (["--start", "2012-01-01T01:00", "--end", "2012-01-01T02:00"], "no bar of sample:sp500"),
    ],
)
def test_start_end_bad_values_one_line_exit_2(span, message):
    for command in (
        ["sweep", "--grid", "fast=5", "--grid", "slow=50"],
        ["data", "load", "sample:sp500"],
    ):
        result = invoke(*command, *span)
        assert result.exit_code == 2, result.output
        err = result.stderr.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_data_load_start_end_summarises_only_the_selected_bars():
    result = invoke(
        "data", "load", "sample:sp500", "--start", "2015-01-01", "--end", "2015-12-31", "--json"
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["rows"] == len(load("sample:sp500").loc["2015"]) == 252
    assert out["first"].startswith("2015-01-02") and out["last"].startswith("2015-12-31")


# ---- portfolio options as --grid axes (issue 12) ------------------------------------------------
def test_sweep_grid_sweeps_option_axes_as_the_api_does():
    from celeris.backtest import sweep

    result = invoke(
        "sweep", "--data", "sample:sp500", "--strategy", "sma_cross", "--grid", "fast=10:30:10",
        "--grid", "slow=50", "--grid", "sl_stop=0.02,0.05", "--fees", "0.001", "--top", "6", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["variants"] == out["estimate"]["variants"] == 6
    api = sweep(
        load("sample:sp500"), "sma_cross", {"fast": [10, 20, 30], "slow": [50], "sl_stop": [0.02, 0.05]},
        fees=0.001, progress=False,
    ).stats()  # fmt: skip
    assert len(out["top"]) == 6
    for row in out["top"]:
        expected = api.loc[(row["fast"], row["slow"], row["sl_stop"])]
        assert_values_close(row["sharpe"], expected["sharpe"], rtol=1e-12)
        assert_values_close(row["end_value"], expected["end_value"], rtol=1e-12)
    table = invoke("sweep", "--grid", "fast=10", "--grid", "slow=50", "--grid", "sl_stop=none,0.05")
    assert table.exit_code == 0, table.output
    assert "sma_cross (fast=10, slow=50, sl_stop=none, 0.05) on sample:sp500" in table.stdout


def test_walk_forward_grid_chooses_option_axes_per_window():
    result = invoke(
        "walk-forward", "--grid", "fast=10,20", "--grid", "slow=50,100", "--grid",
        "sl_stop=none,0.05", "--train", "1000", "--test", "1000", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    windows = json.loads(result.stdout)["windows"]
    assert len(windows) == 5 and all("sl_stop" in w for w in windows)
    assert {w["sl_stop"] for w in windows} <= {None, 0.05}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--grid", "sl_stop=0.02,0.05", "--sl-stop", "0.03"],
         "--sl-stop 0.03 and --grid sl_stop=... both set sl_stop: give it once"),
        (["sweep", "--grid", "sl_stp=0.05"], "did you mean 'sl_stop'"),
        (["sweep", "--grid", "sl_stop=2"], "sl_stop must be in"),
        (["walk-forward", "--grid", "fees=0,0.001", "--fees", "0.002"], "--fees 0.002 and --grid"),
        (["backtest", "--param", "sl_stop=0.05"],
         "sl_stop is a backtest option, not a parameter of sma_cross; use --sl-stop 0.05"),
        (["backtest", "--param", "size=10"], "this command has no --size"),
        (["walk-forward", "--strategy", "model:nowhere", "--grid", "sl_stop=0.05"],
         "a model:PATH walk-forward chooses nothing in sample"),
    ],
)  # fmt: skip
def test_option_axes_bad_input_one_line_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in result.output

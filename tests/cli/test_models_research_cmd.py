"""Models on the command line without leaks: the in-sample guard of ``backtest --strategy
model:DIR`` and ``evaluate``, ``walk-forward --strategy model:DIR`` (refit per window), forecast
timestamps on the data's calendar, and no MAPE for return targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch  # noqa: F401  (a dev extra: missing is a failure)
from typer.testing import CliRunner

from celeris.cli.main import app
from celeris.data import load
from celeris.models.checkpoint import load_checkpoint

runner = CliRunner()

TINY = ["--horizon", "2", "--input-size", "20", "--steps", "6", "--batch-size", "32"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory holding syn.parquet (1,200 daily bars) and a model trained on it there."""
    root = tmp_path_factory.mktemp("research_cli")
    load("sample:sp500").iloc[-1200:].to_parquet(root / "syn.parquet")
    return root


@pytest.fixture(scope="module")
def model(workdir) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        result = runner.invoke(
            app,
            ["train", "nhits", "--data", "syn.parquet", *TINY, "--out", "m", "--precision",
             "fp32", "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    return workdir / "m"


def _backtest(workdir: Path, data: str, *extra: str) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        result = runner.invoke(
            app, ["backtest", "--strategy", "model:m", "--data", data, "--json", *extra]
        )
    assert result.exit_code == 0, result.output
    return {"out": json.loads(result.stdout), "stderr": result.stderr}


def test_backtest_model_data_path_spelling_does_not_leak_training_bars(workdir, model):
    runs = [
        _backtest(workdir, spelling)
        for spelling in ("syn.parquet", "./syn.parquet", str(workdir / "syn.parquet"))
    ]
    assert runs[0]["out"]["stats"] == runs[1]["out"]["stats"] == runs[2]["out"]["stats"]
    last = load_checkpoint(model).meta["train_bars"]["last"]
    for run in runs:
        assert run["out"]["stats"]["start"] > last
        assert "excluded" in run["stderr"] and "same dates and prices" in run["stderr"]


def test_backtest_model_include_train_trades_training_bars_with_a_loud_note(workdir, model):
    run = _backtest(workdir, "./syn.parquet", "--include-train")
    assert run["out"]["stats"]["start"] == str(load(str(workdir / "syn.parquet")).index[0])
    assert "IN-SAMPLE" in run["stderr"] and "not evidence" in run["stderr"]


def test_backtest_model_other_asset_on_training_dates_is_traded_and_said(workdir, model):
    other = load(str(workdir / "syn.parquet"))
    other[["open", "high", "low", "close"]] *= 0.5
    other.to_parquet(workdir / "other.parquet")
    run = _backtest(workdir, "other.parquet")
    assert run["out"]["stats"]["start"] == str(other.index[0])
    assert "prices differ" in run["stderr"]


def test_backtest_model_checkpoint_without_training_record_exit_2(workdir, model):
    old = workdir / "old"
    shutil.copytree(model, old, dirs_exist_ok=True)
    document = json.loads((old / "config.json").read_text())
    del document["meta"]["train_bars"]
    (old / "config.json").write_text(json.dumps(document))
    args = ["backtest", "--strategy", f"model:{old}", "--data", str(workdir / "syn.parquet")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "no record of the bars it was trained on" in refused.stderr
    assert "--include-train" in refused.stderr and "Traceback" not in refused.output
    assert runner.invoke(app, [*args, "--include-train", "--json"]).exit_code == 0


def test_evaluate_leaves_out_windows_on_training_bars(workdir, model):
    result = runner.invoke(
        app, ["evaluate", str(model), "--data", str(workdir / "syn.parquet"), "--last", "0.6"]
    )
    assert result.exit_code == 0, result.output
    assert "excluded" in result.stdout and "windows on the model's training bars" in result.stdout
    kept = runner.invoke(
        app,
        ["evaluate", str(model), "--data", str(workdir / "syn.parquet"), "--last", "0.6",
         "--include-train"],
    )  # fmt: skip
    assert "IN-SAMPLE" in kept.stdout
    n_all = int(kept.stdout.split(" windows of")[0].split()[-1])
    n_out = int(result.stdout.split(" windows of")[0].split()[-1])
    assert 0 < n_out < n_all


def test_walk_forward_model_strategy_refits_per_window(workdir, model):
    result = runner.invoke(
        app,
        ["walk-forward", "--strategy", f"model:{model}", "--data", str(workdir / "syn.parquet"),
         "--train", "400", "--test", "300", "--grid", "max_steps=3", "--grid", "threshold=0.001",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    windows = out["windows"]
    assert [w["test_bars"] for w in windows] == [300, 300, 200]  # the last runs to the end
    assert out["cost"]["models"] == 3
    assert out["cost"]["steps"] == 9 and out["cost"]["max_steps_per_model"] == 3
    for w in windows:
        assert w["fitted_through"] < w["test_start"] and w["steps"] == 3
    assert "sharpe" in out["out_of_sample"]


def test_walk_forward_model_strategy_table_and_cost(workdir, model):
    result = runner.invoke(
        app,
        ["walk-forward", "--strategy", f"model:{model}", "--data", str(workdir / "syn.parquet"),
         "--train", "600", "--test", "600", "--grid", "max_steps=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 windows x up to 2 optimiser steps = at most 2 steps" in result.stdout
    assert "cost: 1 models trained, 2 optimiser steps (at most 2)" in result.stdout


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("max_step=10", "did you mean 'max_steps'"),
        ("max_steps=x", "not a number"),
        ("step=1.5", "whole"),
    ],
)
def test_walk_forward_model_bad_setting_exit_2(workdir, model, grid, message):
    result = runner.invoke(
        app,
        ["walk-forward", "--strategy", f"model:{model}", "--data", str(workdir / "syn.parquet"),
         "--train", "400", "--test", "300", "--grid", grid],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_forecast_daily_equity_data_is_stamped_on_business_days(workdir, model):
    bars = load(str(workdir / "syn.parquet"))
    friday = bars.index[bars.index.day_of_week == 4][-1]
    bars.loc[:friday].to_parquet(workdir / "to_friday.parquet")
    result = runner.invoke(
        app, ["forecast", str(model), "--data", str(workdir / "to_friday.parquet"), "--json"]
    )
    assert result.exit_code == 0, result.output
    stamps = [pd.Timestamp(t) for t in json.loads(result.stdout)["forecast"]]
    assert [t.day_of_week for t in stamps] == [0, 1]  # Monday, Tuesday: no weekend bars
    assert stamps[0] == friday + pd.Timedelta(days=3)


def test_train_return_target_reports_no_mape(workdir):
    out = workdir / "returns"
    result = runner.invoke(
        app,
        ["train", "nhits", "--data", str(workdir / "syn.parquet"), "--features", "log_return",
         *TINY, "--out", str(out), "--precision", "fp32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mape" not in result.stdout and "directional_accuracy" in result.stdout
    assert all("mape" not in row for row in load_checkpoint(out).meta["test_metrics"].values())
    evaluated = runner.invoke(app, ["evaluate", str(out), "--data", "sample:nasdaq", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert all("mape" not in row for row in json.loads(evaluated.stdout).values())

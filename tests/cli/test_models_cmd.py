"""train -> evaluate -> forecast -> export -> backtest model:PATH through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (a dev extra: missing is a failure)
from typer.testing import CliRunner

from celeris.cli.main import app
from celeris.models.checkpoint import load_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "nhits"
    result = runner.invoke(
        app,
        ["train", "nhits", "--data", "sample:sp500", "--horizon", "3", "--input-size", "30",
         "--steps", "30", "--batch-size", "64", "--out", str(out), "--precision", "fp32", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["checkpoint"] == str(out)
    return out


def test_train_writes_checkpoint_with_metadata_and_baselines(trained: Path):
    ckpt = load_checkpoint(trained)
    meta = ckpt.meta
    assert meta["input_size"] == 30 and meta["horizon"] == 3 and meta["features"] == ["close"]
    assert set(meta["test_metrics"]) == {"model", "naive", "drift"}
    assert meta["test_metrics"]["naive"]["mae"] > 0 and meta["source"] == "sample:sp500"


def test_evaluate_forecast_and_export_commands(trained: Path):
    ev = runner.invoke(app, ["evaluate", str(trained), "--data", "sample:nasdaq", "--json"])
    assert ev.exit_code == 0, ev.output
    assert set(json.loads(ev.stdout)) == {"model", "naive", "drift"}
    fc = runner.invoke(
        app, ["forecast", str(trained), "--data", "sample:sp500", "--backend", "torch", "--json"]
    )
    assert fc.exit_code == 0, fc.output
    forecast = json.loads(fc.stdout)
    assert forecast["as_of"].startswith("2018-12-31") and len(forecast["forecast"]) == 3
    assert all(np.isfinite(v) and 1000 < v < 5000 for v in forecast["forecast"].values())
    ex = runner.invoke(app, ["export", str(trained), "--format", "onnx", "--int8", "--json"])
    assert ex.exit_code == 0, ex.output
    info = json.loads(ex.stdout)
    assert (
        info["relative_diff"] <= info["tolerance"] and info["latency_ms"]["batch_1"]["p50_ms"] > 0
    )
    onnx_fc = runner.invoke(
        app, ["forecast", str(trained), "--data", "sample:sp500", "--backend", "onnx", "--json"]
    )
    got = np.array(list(json.loads(onnx_fc.stdout)["forecast"].values()))
    np.testing.assert_allclose(got, np.array(list(forecast["forecast"].values())), rtol=1e-4)


def test_train_writes_verified_exports_and_forecast_defaults_to_them(trained: Path):
    from celeris.models.checkpoint_file import read_exports
    from celeris.models.predictor import choose_backend

    record = read_exports(trained)
    assert record is not None and choose_backend(record).backend == "onnx-int8"
    fc = runner.invoke(app, ["forecast", str(trained), "--data", "sample:sp500"])
    assert fc.exit_code == 0, fc.output
    assert "(onnx-int8)" in fc.stdout
    ex = runner.invoke(app, ["export", str(trained), "--format", "onnx", "--int8"])
    assert ex.exit_code == 0, ex.output
    assert "within the 1% budget -> default backend" in ex.stdout
    assert "int8: max rel. error" in ex.stdout and "fp32: max rel. error" in ex.stdout


def test_train_no_export_leaves_checkpoint_on_torch(tmp_path: Path):
    out = tmp_path / "plain"
    result = runner.invoke(
        app,
        ["train", "nhits", "--data", "sample:sp500", "--horizon", "2", "--input-size", "20",
         "--steps", "2", "--batch-size", "32", "--out", str(out), "--precision", "fp32",
         "--no-export", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["exports"] is None and info["default_backend"] == "torch"
    assert not (out / "exports.json").exists() and not (out / "model.onnx").exists()


def test_backtest_model_strategy_trades_out_of_sample_only(trained: Path):
    result = runner.invoke(
        app,
        [
            "backtest",
            "--strategy",
            f"model:{trained}",
            "--data",
            "sample:sp500",
            "--threshold",
            "0.0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # The first bar after the last one the model was fitted on (validation targets included).
    last_trained = load_checkpoint(trained).meta["train_bars"]["last"]
    assert out["stats"]["start"] > last_trained
    both = runner.invoke(
        app,
        [
            "backtest",
            "--strategy",
            f"model:{trained}",
            "--data",
            "sample:sp500",
            "--in-sample",
            "--json",
        ],
    )
    assert json.loads(both.stdout)["stats"]["start"].startswith("1999")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nhit", "--steps", "1"], "did you mean 'nhits'"),
        (["train", "nhits", "--features", "close,rsi_99999", "--steps", "1"], "rsi_99999"),
        (["forecast", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
        (["export", "/nonexistent/ckpt", "--format", "tflite"], "tflite"),
    ],
)
def test_model_commands_bad_input_one_line_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_backtest_model_strategy_fills_at_next_open_by_default(trained: Path):
    base = ["backtest", "--strategy", f"model:{trained}", "--data", "sample:sp500", "--json"]
    default = json.loads(runner.invoke(app, base).stdout)["stats"]
    next_open = json.loads(runner.invoke(app, [*base, "--execution", "next_open"]).stdout)["stats"]
    at_close = json.loads(runner.invoke(app, [*base, "--execution", "close"]).stdout)["stats"]
    assert default == next_open and default["orders"] > 0
    assert at_close["end_value"] != default["end_value"]

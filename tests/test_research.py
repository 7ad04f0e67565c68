"""Models judged by the backtest: the in-sample guard and the refit-per-window walk-forward."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import celeris
from celeris import ConfigError, DataError
from celeris.backtest import from_signals
from celeris.data import load
from celeris.errors import CelerisTypeError, CelerisWarning
from celeris.models.catalogue import build_model
from celeris.models.pipeline import fit_on_bars, train_on_bars
from celeris.models.predictor import Predictor
from celeris.models.signals import rolling_forecasts, signals_from_forecast
from celeris.research import (
    _refit_plan,
    backtest_model,
    model_walk_forward,
    model_walk_forward_cost,
)
from tests.helpers import assert_values_close

L, H = 20, 2


@pytest.fixture(autouse=True)
def _one_thread():

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load("sample:sp500").iloc[-1200:]


@pytest.fixture(scope="module")
def checkpoint(bars, tmp_path_factory):
    tiny = build_model("nhits", input_size=L, horizon=H).tiny_config(L, H, 1)
    return train_on_bars(
        "nhits", bars.iloc[:800], tmp_path_factory.mktemp("research") / "m", input_size=L,
        horizon=H, model_options=tiny, max_steps=6, val_check_every=3, batch_size=32,
        precision="fp32", progress=False,
    )  # fmt: skip


def test_backtest_model_leaves_out_training_bars_and_trades_after_them(bars, checkpoint):
    last = pd.Timestamp(checkpoint.meta["train_bars"]["last"])
    with pytest.warns(CelerisWarning, match="excluded [0-9,]+ bars the model was trained on"):
        result = backtest_model(bars, checkpoint.directory, fees=0.001)
    pf = result.portfolio
    assert pf.index[0] == bars.index[bars.index > last][0] and pf.index[-1] == bars.index[-1]
    assert result.excluded == len(bars.loc[:last]) and result.overlap.verdict == "same"
    with pytest.warns(CelerisWarning, match="IN-SAMPLE"):
        everything = backtest_model(bars, checkpoint.directory, include_train=True)
    assert everything.portfolio.index[0] == bars.index[0] and everything.excluded == 0


def test_backtest_model_bars_on_both_sides_of_training_trades_after_and_says_so(checkpoint):
    longer = load("sample:sp500").iloc[-1500:]  # 300 bars before the training range too
    with pytest.warns(CelerisWarning, match="the 300 bars before the training range are not"):
        result = backtest_model(longer, checkpoint.directory)
    assert result.portfolio.index[0] > pd.Timestamp(checkpoint.meta["train_bars"]["last"])
    early = backtest_model(longer.iloc[:300], checkpoint.directory)  # no overlap, no warning
    assert early.excluded == 0 and early.note is None and early.overlap.verdict == "none"
    assert len(early.portfolio.index) == 300


def test_backtest_model_only_training_bars_is_refused(bars, checkpoint):
    last = pd.Timestamp(checkpoint.meta["train_bars"]["last"])
    with pytest.raises(DataError, match="nothing out of sample"):
        backtest_model(bars.loc[:last], Predictor.load(checkpoint.directory))


def test_backtest_model_checkpoint_forecasts_never_depend_on_later_windows(
    bars, checkpoint, monkeypatch
):
    # The checkpoint's int8 export verified within its budget, so it is the serving default;
    # its activation scale is set per batch, so a window's int8 forecast moves with later ones.
    assert Predictor.load(checkpoint.directory).backend == "onnx-int8"
    used: list[Predictor] = []
    predict = Predictor.predict

    def spy(self: Predictor, histories):
        used.append(self)
        return predict(self, histories)

    monkeypatch.setattr(Predictor, "predict", spy)
    backtest_model(bars, checkpoint.directory, warn=False)
    research = used[0]
    assert research.backend == "onnx", research.describe()
    monkeypatch.undo()
    rng = np.random.default_rng(5)
    values = 3000 + rng.standard_normal(400).cumsum() * 20
    k = 40  # windows ending at bars L-1 .. L-1+k-1
    alone = rolling_forecasts(research, values[: L - 1 + k], include_train=True)
    full = rolling_forecasts(research, values, include_train=True)
    assert np.array_equal(alone.to_numpy(), full.to_numpy()[: L - 1 + k], equal_nan=True)
    int8 = Predictor.load(checkpoint.directory, backend="onnx-int8")
    moved = rolling_forecasts(int8, values[: L - 1 + k], include_train=True)
    assert not np.array_equal(  # the channel the exact backend closes
        moved.to_numpy(),
        rolling_forecasts(int8, values, include_train=True).to_numpy()[: L - 1 + k],
        equal_nan=True,
    )


def test_backtest_model_warn_false_returns_the_note_without_warning(bars, checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = backtest_model(
            bars, checkpoint.directory, warn=False, include_flag="--include-train"
        )
    assert result.note is not None and result.note.endswith("--include-train includes them")
    assert result.excluded > 0


def test_research_private_names_not_imported_by_other_modules():
    src = Path(celeris.__file__).parent
    offenders = [
        f"{path.relative_to(src)}: {alias.name}"
        for path in src.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "celeris.research"
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert offenders == []


def test_model_walk_forward_refits_each_window_on_its_past_only(bars, checkpoint):
    wf = model_walk_forward(
        bars, checkpoint.directory, train=300, test=200, max_steps=4, progress=False, fees=0.001
    )
    cost = model_walk_forward_cost(bars, checkpoint.directory, train=300, test=200, max_steps=4)
    assert cost == {"model": "nhits", "windows": 5, "max_steps_per_model": 4, "max_steps": 20}
    rows = wf.windows
    assert len(rows) == 5 and wf.models == 5 and wf.max_steps == 4
    assert list(rows["test_bars"]) == [200, 200, 200, 200, 100]  # the last one runs to the end
    assert (rows["fitted_through"] < rows["test_start"]).all()
    assert (rows["fitted_through"] <= rows["train_end"]).all()
    assert (rows["steps"] == 4).all() and wf.steps == 20 and wf.seconds > 0
    assert len(wf.oos_returns) == 900 and wf.oos_returns.index[0] == bars.index[300]
    assert wf.oos_returns.index[-1] == bars.index[-1]
    assert wf.oos_returns.index.is_unique

    # Window 1 by hand: the same plan fitted on its 300 training bars, traded on the next 200.
    plan = _refit_plan(
        __import__("json").loads((checkpoint.directory / "config.json").read_text()), 4
    )
    fitted = fit_on_bars(bars=bars.iloc[200:500], **plan)
    pred = Predictor.from_model(fitted.model, scaler=fitted.scaler, meta=fitted.meta)
    from celeris.models.pipeline import expected_step_returns_checked

    expected, _ = expected_step_returns_checked(pred, bars.iloc[200:700])
    sig = signals_from_forecast(expected.iloc[300:])
    pf = from_signals(bars.iloc[500:700], sig["entries"], sig["exits"], fees=0.001)
    assert_values_close(wf.oos_returns.iloc[200:400], pf.returns.iloc[:, 0], rtol=1e-12)


def test_model_walk_forward_bad_spans_and_options_are_refused(bars, checkpoint):
    with pytest.raises(ConfigError, match="exceed the data"):
        model_walk_forward(bars, checkpoint.directory, train=1000, test=500, progress=False)
    with pytest.raises(ConfigError, match="did you mean 'fees'"):
        model_walk_forward(
            bars, checkpoint.directory, train=300, test=200, progress=False, feez=0.1
        )
    full = model_walk_forward(
        bars, checkpoint.directory, train=300, test=200, max_steps=1, partial=False,
        progress=False,
    )  # fmt: skip
    assert list(full.windows["test_bars"]) == [200] * 4
    with pytest.raises(ConfigError, match="max_steps must be >= 1, got 0"):
        model_walk_forward(
            bars, checkpoint.directory, train=300, test=200, max_steps=0, progress=False
        )
    with pytest.raises(CelerisTypeError, match=r"max_steps must be an int >= 1, got float 2\.5"):
        model_walk_forward_cost(bars, checkpoint.directory, train=300, test=200, max_steps=2.5)


def test_model_walk_forward_option_list_is_refused_as_no_grid_axis(bars):
    # Checked before the checkpoint is read: nothing is chosen in sample, so no option axis.
    with pytest.raises(
        ConfigError,
        match=r"^model_walk_forward takes one value per backtest option, got "
        r"sl_stop=\[0\.02, 0\.05\]: it refits one model per window and chooses nothing in "
        r"sample",
    ):
        model_walk_forward(
            bars, "no/such/checkpoint", train=300, test=200, progress=False, sl_stop=[0.02, 0.05]
        )


def test_refit_plan_of_a_checkpoint_older_than_its_split_and_scaler_records(checkpoint):
    import json

    document = json.loads((checkpoint.directory / "config.json").read_text())
    for key in ("scaler_kind", "split", "train_bars"):
        del document["meta"][key]
    plan = _refit_plan(document, None)
    meta = checkpoint.meta
    windows = meta["train_windows"] + meta["val_windows"] + meta["test_windows"]
    assert plan["scaler"] == "window-robust"  # the default for a price target, from its state
    assert plan["val"] == pytest.approx(meta["val_windows"] / windows, abs=1e-4)
    assert plan["config"].max_steps == 6 and plan["config"].progress is False
    assert plan["test"] == 0.0 and plan["features"] == ("close",)

"""The live loop's model path: the checkpoint's own features and forecasts, outcomes, drift."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from celeris.data.synthetic import synthetic
from celeris.live.journal import Journal
from celeris.live.loop import LiveLoop
from celeris.live.replay import ReplaySource
from celeris.live.signals import ModelSignals
from celeris.models.features import spec_of
from celeris.models.pipeline import train_on_bars
from celeris.models.predictor import Predictor
from celeris.research import backtest_model
from celeris.serving.outcomes import OutcomeStore

FEATURES = ("log_return", "rsi_14", "zscore_20", "atr_14")
OPTS = {"fees": 0.001}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    bars = synthetic(n_bars=900, seed=4, freq="1h")
    out = tmp_path_factory.mktemp("ckpt") / "m"
    train_on_bars(
        "cnn_lstm", bars.iloc[:500], out, input_size=16, horizon=3, features=FEATURES,
        export=False, max_steps=5, batch_size=32,
    )  # fmt: skip
    return str(out), bars.iloc[520:]


def _run(tmp_path, ckpt, bars, outcomes=None):
    predictor = Predictor.load(ckpt, backend="torch")
    source = ModelSignals(predictor, threshold=0.0005, model_name="m", outcomes=outcomes,
                         run="test", symbols=("X",))  # fmt: skip
    journal = Journal(tmp_path / "j.sqlite", ["X"], {"source": source.describe, "options": OPTS})
    loop = LiveLoop(["X"], source, journal, options=OPTS)
    loop.resume()
    asyncio.run(loop.run(ReplaySource({"X": bars}, block=37), until_exhausted=True))
    return loop, source


def test_model_replay_equals_the_model_backtest(tmp_path, model):
    ckpt, bars = model
    loop, _ = _run(tmp_path, ckpt, bars)
    ref = backtest_model(bars, ckpt, threshold=0.0005, device="cpu", **OPTS).portfolio
    book = loop.account.book()
    assert len(book.orders) > 0, "a model that never trades proves nothing"
    assert np.array_equal(book.equity.iloc[:, 0].to_numpy(), ref.equity.iloc[:, 0].to_numpy())
    assert (book.orders["price"].to_numpy() == ref.orders["price"].to_numpy()).all()


def test_model_predictions_get_their_realised_outcomes_and_drift(tmp_path, model):
    ckpt, bars = model
    store = OutcomeStore(tmp_path / "outcomes.sqlite")
    _loop, source = _run(tmp_path, ckpt, bars, outcomes=store)
    spec = spec_of(source.predictor.meta)
    joined = store.joined("m")
    inputs = spec.inputs(bars)
    predicted = len(inputs) - source.input_size + 1  # one per bar with a full window
    assert store.stats()["predictions"] == predicted
    assert len(joined) == predicted - source.horizon  # the last horizon bars have no outcome yet
    # the realised outcome is the target the feature spec computes over the next bars
    target = inputs[spec.target]
    for _, row in joined.iloc[[0, len(joined) // 2, -1]].iterrows():
        at = target.index.get_loc(row["ts"])
        assert np.array_equal(
            row["actual"], target.iloc[at + 1 : at + 1 + source.horizon].to_numpy()
        )
    drift = source.drift()
    assert set(drift["psi"]) == set(FEATURES)
    assert all(np.isfinite(v) and v >= 0 for v in drift["psi"].values())
    assert drift["error"].n == len(joined)
    # replaying again (a restart) records nothing twice
    store2 = OutcomeStore(tmp_path / "outcomes.sqlite")
    assert store2.stats()["predictions"] == predicted


def test_cli_live_model_replay_records_outcomes_and_exports_drift(tmp_path, model):
    import json

    from typer.testing import CliRunner

    from celeris.cli.main import app
    from celeris.live.metrics import LiveMetrics

    ckpt, bars = model
    path = tmp_path / "bars.csv"
    bars.to_csv(path)
    state = tmp_path / "state"
    args = ["live", "--replay", str(path), "--symbols", "X", "--model", ckpt,
            "--threshold", "0.0005", "--fees", "0.001", "--state", str(state), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    loop, _source = _run(tmp_path, ckpt, bars)
    assert out["fills"] == len(loop.journal.fills()) > 0
    store = OutcomeStore(state / "outcomes.sqlite")
    assert store.stats()["outcomes"] > 0
    metrics = LiveMetrics(["X"], timeframe_ns=3_600 * 10**9)
    metrics.loop = loop
    text = metrics.text().decode()
    assert 'celeris_live_feature_psi{feature="rsi_14"}' in text


def test_cli_model_source_bounds_its_features_live_not_in_a_replay(tmp_path, model):
    from celeris.cli.live_cmd import _default_history, _signal_source

    ckpt, _ = model
    args = (None, None, ckpt, 0.0, str(tmp_path / "registry"), tmp_path / "state", ["SPX"])
    live = _signal_source(*args, live=True)
    replay = _signal_source(*args, live=False)
    assert live.bounded and not replay.bounded  # a replay equals the model backtest exactly
    settled = live.spec.bars_settled(live.input_size)
    assert _default_history(live) == max(1000, settled, live.warmup + 1)

    class Needy:  # a source whose features need more than 1000 bars (ema_60: 1,193)
        warmup = 61
        input_size = 32
        spec = type("Spec", (), {"bars_settled": staticmethod(lambda n: 1161 + n)})()

    assert _default_history(Needy()) == 1193
    for source in (live, replay):
        source.flush()

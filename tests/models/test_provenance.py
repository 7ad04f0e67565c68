"""Training bars identified by content: fingerprints, overlap verdicts, and the guard on forecasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris import ConfigError, DataError
from celeris.data import load
from celeris.errors import CelerisWarning
from celeris.models.catalogue import build_model
from celeris.models.pipeline import (
    expected_step_returns,
    fit_on_bars,
    model_inputs,
    train_on_bars,
)
from celeris.models.predictor import Predictor
from celeris.models.provenance import fingerprint_bars, training_overlap
from celeris.models.signals import rolling_forecasts

L, H = 20, 2


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load("sample:sp500").iloc[-900:]


@pytest.fixture(scope="module")
def trained(bars, tmp_path_factory):
    tiny = build_model("nhits", input_size=L, horizon=H).tiny_config(L, H, 1)
    return train_on_bars(
        "nhits", bars, tmp_path_factory.mktemp("prov") / "m", input_size=L, horizon=H,
        model_options=tiny, max_steps=5, batch_size=32, precision="fp32", progress=False,
    )  # fmt: skip


def test_fingerprint_bars_same_bars_from_a_file_match_and_other_prices_differ(bars, tmp_path):
    record = fingerprint_bars(bars)
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path)
    again = load(str(path))
    assert fingerprint_bars(again)["sha256"] == record["sha256"]
    assert training_overlap({"train_bars": record}, again.index, again).verdict == "same"
    other = bars.copy()
    other[["open", "high", "low", "close"]] *= 1.5
    assert fingerprint_bars(other)["sha256"] != record["sha256"]
    result = training_overlap({"train_bars": record}, other.index, other)
    assert result.verdict == "different" and result.n_in_sample == 0
    assert result.in_range.all()


def test_training_overlap_part_or_rounded_copy_of_training_bars_is_same(bars):
    record = {"train_bars": fingerprint_bars(bars)}
    part = bars.iloc[300:700]
    got = training_overlap(record, part.index, part)
    assert got.verdict == "same" and got.n_in_sample == 400
    rounded = bars.astype(np.float32).astype(np.float64)  # a lossy copy (~7 digits)
    assert fingerprint_bars(rounded)["sha256"] != record["train_bars"]["sha256"]
    assert training_overlap(record, rounded.index, rounded).verdict == "same"


def test_training_overlap_bars_of_another_spacing_count_as_trained_on(bars):
    # Weekly bars of the training asset, stamped at the week's start (Monday) with Friday's
    # close: no close matches a daily close at the same time, yet it is the same price path.
    record = {"train_bars": fingerprint_bars(bars)}
    weekly = bars.resample("W-MON", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    weekly = weekly[(weekly.index >= bars.index[0]) & (weekly.index <= bars.index[-1])]
    got = training_overlap(record, weekly.index, weekly)
    assert got.verdict == "dates" and got.n_in_sample == int(got.in_range.sum()) > 100


def test_training_overlap_without_bars_or_record_or_overlap(bars):
    record = {"train_bars": fingerprint_bars(bars.iloc[:500])}
    dates = training_overlap(record, bars.index)
    assert dates.verdict == "dates" and dates.n_in_sample == 500
    assert (dates.in_sample == (np.arange(len(bars)) < 500)).all()
    later = bars.iloc[500:]
    assert training_overlap(record, later.index, later).verdict == "none"
    unknown = training_overlap({}, bars.index, bars)
    assert unknown.verdict == "unknown" and unknown.n_in_sample == 0
    with pytest.raises(DataError, match="corrupt training-bars record"):
        training_overlap({"train_bars": {"first": "x"}}, bars.index)


def test_train_on_bars_records_the_bars_that_shaped_the_weights(bars, trained):
    record = trained.meta["train_bars"]
    values = model_inputs(bars, ("close",))
    n_windows = len(values) - L - H + 1
    # The validation windows (early stopping) end before the test split's purge gap; the
    # last validation target is the last recorded bar, and no test window starts before it.
    assert pd.Timestamp(record["first"]) == values.index[0]
    assert pd.Timestamp(record["last"]) < pd.Timestamp(trained.meta["test_start"])
    assert record["count"] == len(bars.loc[record["first"] : record["last"]])
    assert trained.meta["train_windows"] + trained.meta["val_windows"] < n_windows
    assert (
        record["sha256"] == fingerprint_bars(bars.loc[record["first"] : record["last"]])["sha256"]
    )


def test_rolling_forecasts_on_training_bars_are_nan_with_a_warning(bars, trained):
    pred = Predictor.load(trained.directory)
    values = model_inputs(bars, ("close",))
    last = pd.Timestamp(trained.meta["train_bars"]["last"])
    with pytest.warns(CelerisWarning, match=r"excluded [\d,]+ forecasts on the model's training"):
        fc = rolling_forecasts(pred, values.to_numpy(), index=values.index, bars=bars)
    assert fc.loc[:last].isna().all().all() and fc.loc[last:].iloc[1:].notna().all().all()
    with pytest.warns(CelerisWarning, match="IN-SAMPLE"):
        kept = rolling_forecasts(
            pred, values.to_numpy(), index=values.index, bars=bars, include_train=True
        )
    assert kept.iloc[L - 1 :].notna().all().all()
    other = bars.copy()
    other[["open", "high", "low", "close"]] *= 1.5  # another asset on the same dates
    other_values = model_inputs(other, ("close",))
    with pytest.warns(CelerisWarning, match="prices differ from the training bars"):
        clean = rolling_forecasts(
            pred, other_values.to_numpy(), index=other_values.index, bars=other
        )
    assert clean.iloc[L - 1 :].notna().all().all()
    with pytest.raises(ConfigError, match="pass index="):
        rolling_forecasts(pred, values.to_numpy())


def test_expected_step_returns_training_bars_nan_unless_included(bars, trained):
    pred = Predictor.load(trained.directory)
    last = pd.Timestamp(trained.meta["train_bars"]["last"])
    with pytest.warns(CelerisWarning, match="excluded"):
        expected = expected_step_returns(pred, bars)
    assert expected.loc[:last].isna().all() and expected.loc[last:].iloc[1:].notna().all()
    with pytest.warns(CelerisWarning, match="IN-SAMPLE"):
        kept = expected_step_returns(pred, bars, include_train=True)
    assert kept.loc[:last].iloc[L:].notna().all()


def test_rolling_forecasts_model_without_training_record_is_refused(bars, trained, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained.directory, old)
    document = json.loads((old / "config.json").read_text())
    del document["meta"]["train_bars"]
    (old / "config.json").write_text(json.dumps(document))
    pred = Predictor.load(old)
    values = model_inputs(bars, ("close",))
    with pytest.raises(DataError, match="no record of the bars it was trained on"):
        rolling_forecasts(pred, values.to_numpy(), index=values.index)
    fc = rolling_forecasts(pred, values.to_numpy(), index=values.index, include_train=True)
    assert fc.iloc[L - 1 :].notna().all().all()


def test_fit_on_bars_without_test_split_records_and_skips_evaluation(bars):
    tiny = build_model("nhits", input_size=L, horizon=H).tiny_config(L, H, 1)
    from celeris.models.train import TrainConfig

    fitted = fit_on_bars(
        "nhits", bars.iloc[:300], input_size=L, horizon=H, val=0.2, test=0.0,
        model_options=tiny, config=TrainConfig(max_steps=3, precision="fp32", progress=False),
    )  # fmt: skip
    assert fitted.report is None and fitted.meta["test_metrics"] == {}
    # The last validation target is the last bar of the span.
    assert pd.Timestamp(fitted.meta["train_bars"]["last"]) == bars.index[299]
    with pytest.raises(ConfigError, match="test must be > 0"):
        train_on_bars("nhits", bars, "unused", input_size=L, horizon=H, test=0.0)


def test_evaluate_checkpoint_leaves_out_windows_from_training_bars(bars, trained):
    from celeris.models.pipeline import evaluate_checkpoint

    last = pd.Timestamp(trained.meta["train_bars"]["last"])
    values = model_inputs(bars, ("close",))
    with pytest.warns(CelerisWarning, match=r"excluded [\d,]+ windows"):
        report = evaluate_checkpoint(trained.directory, bars, last=0.6)
    origins = values.index[report.origins]
    assert origins.min() > last
    with pytest.warns(CelerisWarning, match="IN-SAMPLE"):
        everything = evaluate_checkpoint(trained.directory, bars, last=0.6, include_train=True)
    assert values.index[everything.origins].min() <= last
    assert everything.n_windows > report.n_windows
    with pytest.raises(DataError, match="every one of the latest"):
        evaluate_checkpoint(trained.directory, bars.loc[:last], last=0.5)

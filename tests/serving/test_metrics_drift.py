"""Drift and outcome-store series on /metrics: PSI per feature, realised vs validation error,
warnings once per crossing."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from celeris.models.drift import psi
from celeris.serving.metrics import DriftCollector, PrometheusMetrics
from celeris.serving.outcomes import OutcomeStore, PredictionWriter

T0 = pd.Timestamp("2026-12-01", tz="UTC")
FEATURES = ["log_return", "rsi_14"]


def _reference(rng: np.random.Generator) -> dict:
    out: dict = {"bins": {}, "fractions": {}}
    for name in FEATURES:
        train = rng.standard_normal(20_000)
        edges = np.quantile(train, np.linspace(0.1, 0.9, 9))
        counts = np.bincount(np.searchsorted(edges, train, side="left"), minlength=10)
        out["bins"][name] = edges.tolist()
        out["fractions"][name] = (counts / train.size).tolist()
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(0)
    meta = {
        "feature_spec": {"features": FEATURES, "reference": _reference(rng)},
        "test_metrics": {"model": {"mae": 1.0, "rmse": 1.2}},
    }
    store = OutcomeStore(tmp_path_factory.mktemp("drift") / "o.sqlite")
    newest = {1: rng.standard_normal((400, 2)), 2: rng.standard_normal((400, 2))}
    newest[2][:, 1] = newest[2][:, 1] * 3 + 1  # version 2's rsi_14 has drifted
    for version, rows in newest.items():
        for i, row in enumerate(rows):
            window = np.vstack([rng.standard_normal((3, 2)), row])  # [4, 2]; newest bar last
            key = f"v{version}-{i}"
            store.record_prediction(
                key, model="btc", version=version, symbol=None, ts=T0, horizon=1,
                forecast=[0.0], inputs=window, target_kind="return",
            )  # fmt: skip
            if i < 40:  # realised MAE: 0.5 for v1, 3.0 for v2
                store.record_outcome(key, [0.5 if version == 1 else 3.0])
    yield store, meta, newest
    store.close()


def _value(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_drift_metrics_export_psi_and_error_ratio_and_warn_once(setup, caplog):
    store, meta, newest = setup
    metrics = PrometheusMetrics(system=False, gpu=False)
    metrics.watch_drift(
        DriftCollector(store, lambda: [("btc", 1, meta), ("btc", 2, meta)], psi_rows=400)
    )
    caplog.set_level(logging.INFO, logger="celeris.serving.drift")
    text = metrics.render().decode()
    ref = meta["feature_spec"]["reference"]
    for version in (1, 2):
        for j, name in enumerate(FEATURES):
            want = psi({"bins": ref["bins"][name], "fractions": ref["fractions"][name]},
                       newest[version][:, j])  # fmt: skip
            got = _value(metrics, "celeris_drift_psi", model="btc", version=str(version),
                         feature=name)  # fmt: skip
            assert got == pytest.approx(want, rel=1e-12)
    assert _value(metrics, "celeris_drift_psi", model="btc", version="1", feature="rsi_14") < 0.05
    assert _value(metrics, "celeris_drift_psi", model="btc", version="2", feature="rsi_14") > 0.25
    assert _value(metrics, "celeris_realised_error_ratio", model="btc", version="2") == 3.0
    assert _value(metrics, "celeris_realised_error", model="btc", version="1") == 0.5
    assert _value(metrics, "celeris_validation_error", model="btc", version="1") == 1.0
    assert _value(metrics, "celeris_realised_outcomes", model="btc", version="1") == 40
    assert "celeris_drift_psi{" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # v2's rsi_14 PSI, v2's realised error; nothing for v1
    assert any("btc@2 input 'rsi_14' PSI" in w for w in warnings)
    assert any("btc@2 realised error 3 is 3.00x" in w for w in warnings)
    caplog.clear()
    metrics.render()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # once per crossing


def test_drift_metrics_factor_is_configurable_and_bad_reference_does_not_break_scrape(
    setup, caplog
):
    store, meta, _ = setup
    broken = {**meta, "feature_spec": {"features": FEATURES, "reference": {"bins": {}}}}
    metrics = PrometheusMetrics(system=False, gpu=False)
    metrics.watch_drift(
        DriftCollector(store, lambda: [("btc", 2, meta), ("btc", 1, broken)], error_factor=4.0)
    )
    caplog.set_level(logging.WARNING, logger="celeris.serving.drift")
    metrics.render()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("realised error" in m for m in messages)  # 3x is within 4x
    assert any("btc@1 not measured" in m for m in messages)
    assert _value(metrics, "celeris_realised_error_ratio", model="btc", version="2") == 3.0


def test_outcome_store_metrics_count_rows_joined_and_pruned(tmp_path):
    with OutcomeStore(tmp_path / "o.sqlite", max_rows=2) as store:
        writer = PredictionWriter(store)
        metrics = PrometheusMetrics(system=False, gpu=False)
        metrics.watch_outcomes(store, writer)
        for i in range(3):
            store.record_prediction(
                f"k{i}", model="m", version=1, symbol=None, ts=T0, horizon=1, forecast=[1.0]
            )
        store.record_outcome("k2", [1.0])
        metrics.render()
        assert _value(metrics, "celeris_outcomes_predictions") == 2
        assert _value(metrics, "celeris_outcomes_joined") == 1
        assert _value(metrics, "celeris_outcomes_pruned_total") == 1
        assert _value(metrics, "celeris_outcomes_dropped_total") == 0
        writer.close()

"""Rolling-origin evaluation: baselines by hand, known model errors, scalers, origins, tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from celeris.errors import DataError
from celeris.models.data import StandardScaler, WindowScaler, make_windows
from celeris.models.evaluate import evaluate
from tests.helpers import assert_values_close


class LastPlus(nn.Module):
    """Forecast the last input value of channel 0 plus a constant, over every horizon step."""

    def __init__(self, horizon: int, offset: float = 0.0) -> None:
        super().__init__()
        self.horizon, self.offset = horizon, offset
        self.anchor = nn.Parameter(torch.zeros(()))  # puts the model on a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1, 0:1]  # [B, L, C] -> [B, 1]
        return last.expand(-1, self.horizon) + self.offset + self.anchor


def _random_walk(n: int = 300, seed: int = 4) -> np.ndarray:
    """A random walk whose values are exact in float32 (windows hold float32)."""
    walk = 100.0 + np.cumsum(np.random.default_rng(seed).normal(size=n))
    return walk.astype(np.float32).astype(np.float64)


def test_evaluate_naive_random_walk_equals_hand_mae() -> None:
    values = _random_walk()
    w = make_windows(values, 10, 3)
    table = evaluate(LastPlus(3), w).table()
    expected = np.mean([abs(values[e + h] - values[e]) for e in w.end for h in (1, 2, 3)])
    assert table.loc["naive", "mae"] == pytest.approx(expected, rel=1e-12)
    rmse = np.sqrt(np.mean([(values[e + h] - values[e]) ** 2 for e in w.end for h in (1, 2, 3)]))
    assert table.loc["naive", "rmse"] == pytest.approx(rmse, rel=1e-12)
    assert np.isnan(table.loc["naive", "directional_accuracy"])  # never calls a direction
    assert table.loc["naive", "skill"] == 0.0


def test_evaluate_drift_linear_series_is_exact() -> None:
    values = 3.0 + 0.5 * np.arange(200)
    table = evaluate(LastPlus(5), make_windows(values, 12, 5)).table()
    assert table.loc["drift", "mae"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["drift", "rmse"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["drift", "directional_accuracy"] == 1.0
    assert table.loc["drift", "skill"] == pytest.approx(1.0)


def test_evaluate_constant_offset_model_known_mae() -> None:
    values = np.arange(60, dtype=np.float64)  # y_h = last + h
    report = evaluate(LastPlus(3, offset=10.0), make_windows(values, 5, 3))
    table = report.table()
    # model errors |h - 10| = 9, 8, 7; naive errors h = 1, 2, 3
    assert table.loc["model", "mae"] == pytest.approx(8.0, rel=1e-12)
    assert table.loc["model", "rmse"] == pytest.approx(np.sqrt((81 + 64 + 49) / 3), rel=1e-12)
    assert table.loc["model", "skill"] == pytest.approx(1.0 - 8.0 / 2.0)
    assert table.loc["model", "directional_accuracy"] == 1.0
    assert_values_close(report.per_step.loc["model", "mae"], [9.0, 8.0, 7.0], rtol=1e-12)
    assert_values_close(report.per_step.loc["naive", "mae"], [1.0, 2.0, 3.0], rtol=1e-12)


def test_evaluate_mape_leaves_out_zero_targets() -> None:
    values = np.array([1.0, 2.0, 0.0, 4.0, 0.0, 2.0, 3.0])
    w = make_windows(values, 2, 1)
    report = evaluate(LastPlus(1, offset=1.0), w)
    f = values[w.end] + 1.0
    y = values[w.end + 1]
    nz = y != 0
    expected = np.mean(np.abs(y[nz] - f[nz]) / np.abs(y[nz]))
    assert report.table().loc["model", "mape"] == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(report.table().loc["naive", "mape"])


def test_evaluate_directional_accuracy_equals_hand_count() -> None:
    values = _random_walk(80, seed=9)
    w = make_windows(values, 6, 2)
    report = evaluate(LastPlus(2, offset=0.3), w)  # always calls "up"
    ups = [values[e + h] > values[e] for e in w.end for h in (1, 2)]
    assert report.table().loc["model", "directional_accuracy"] == pytest.approx(np.mean(ups))
    step1 = np.mean([values[e + 1] > values[e] for e in w.end])
    assert report.per_step.loc[("model", 1), "directional_accuracy"] == pytest.approx(step1)


@pytest.mark.parametrize("scaler_kind", ["standard", "window"])
def test_evaluate_scaler_metrics_in_original_units(scaler_kind: str) -> None:
    values = _random_walk(200)
    w = make_windows(values, 10, 4)
    if scaler_kind == "standard":
        scaler = StandardScaler().fit(values)
        offset_scaled = 0.5 / float(scaler.scale[0])  # 0.5 in original units
    else:
        scaler, offset_scaled = WindowScaler("standard"), 0.0
    report = evaluate(LastPlus(4, offset=offset_scaled), w, scaler)
    naive = np.repeat(values[w.end][:, None], 4, axis=1)
    expected = np.abs(w.y - (naive + (0.5 if scaler_kind == "standard" else 0.0))).mean()
    assert report.table().loc["model", "mae"] == pytest.approx(expected, rel=1e-5)
    assert_values_close(
        report.forecast[:, 0] - (0.5 if scaler_kind == "standard" else 0.0),
        values[w.end],
        rtol=1e-6,
    )


def test_evaluate_origins_step_and_bars_select_windows() -> None:
    values = _random_walk(100)
    w = make_windows(values, 8, 2)
    every3 = evaluate(LastPlus(2), w, origins=3)
    assert_values_close(every3.origins, w.end[::3])
    chosen = w.end[[1, 5, 9]]
    assert_values_close(evaluate(LastPlus(2), w, origins=chosen).origins, chosen)
    with pytest.raises(DataError, match="origin bar 2 is not the end of any window"):
        evaluate(LastPlus(2), w, origins=[2])


def test_evaluate_batches_give_same_forecasts_as_one_pass() -> None:
    values = _random_walk(150)
    w = make_windows(values, 8, 3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    one = evaluate(model, w, batch_size=10_000).forecast
    many = evaluate(model, w, batch_size=7).forecast
    # Same rows in the same order; float32 GEMM may pick another kernel for another batch
    # shape, so allow rounding (a misaligned or dropped row would be off by whole units).
    assert_values_close(many, one, rtol=1e-6, atol=0)


def test_evaluate_table_and_rich_have_three_rows() -> None:
    report = evaluate(LastPlus(3, offset=0.1), make_windows(_random_walk(), 10, 3))
    table = report.table()
    assert list(table.index) == ["model", "naive", "drift"]
    assert list(table.columns) == ["mae", "rmse", "mape", "directional_accuracy", "skill"]
    assert report.per_step.shape == (9, 5)
    rich_table = report.to_rich()
    assert rich_table.row_count == 3 and len(rich_table.columns) == 6


def test_evaluate_classifier_scores_direction_only() -> None:
    class Up(nn.Module):
        task = "classification"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], 2)  # logit > 0: "up" at both steps

    values = _random_walk(90, seed=2)
    w = make_windows(values, 5, 2)
    table = evaluate(Up(), w).table()
    ups = [values[e + h] > values[e] for e in w.end for h in (1, 2)]
    assert table.loc["model", "directional_accuracy"] == pytest.approx(np.mean(ups))
    assert np.isnan(table.loc["model", "mae"]) and np.isfinite(table.loc["naive", "mae"])


def test_evaluate_restores_training_mode() -> None:
    model = LastPlus(2).train()
    evaluate(model, make_windows(_random_walk(50), 5, 2))
    assert model.training


def test_evaluate_return_kind_uses_zero_and_mean_baselines_and_sign_direction():
    import numpy as np
    import torch

    from celeris.models.data import make_windows
    from celeris.models.evaluate import evaluate

    rng = np.random.default_rng(5)
    r = rng.standard_normal(400) * 0.01
    w = make_windows(r, 20, 2)

    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), 1e-4)

    table = evaluate(Zero(), w, kind="return").table()
    y = np.asarray(w.y)
    assert np.isclose(table.loc["naive", "mae"], np.abs(y).mean())
    assert np.isclose(table.loc["model", "directional_accuracy"], (y > 0).mean())
    from celeris.errors import ConfigError

    with pytest.raises(ConfigError, match="kind"):
        evaluate(Zero(), w, kind="price")
    # celeris.checks' rule: a float batch size is a CelerisTypeError, zero a ConfigError.
    from celeris.errors import CelerisTypeError

    with pytest.raises(CelerisTypeError, match="batch_size must be an int >= 1, got float"):
        evaluate(Zero(), w, kind="return", batch_size=64.0)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        evaluate(Zero(), w, kind="return", batch_size=0)


def test_evaluate_return_targets_report_no_mape_anywhere():
    # Returns straddle zero: |y - f| / |y| explodes on near-zero targets and means nothing.
    r = np.random.default_rng(6).standard_normal(300) * 0.01
    w = make_windows(r, 10, 2)
    report = evaluate(LastPlus(2), w, kind="return")
    assert list(report.table().columns) == ["mae", "rmse", "directional_accuracy", "skill"]
    assert "mape" not in report.per_step.columns and report.kind == "return"
    assert "mape" not in [c.header for c in report.to_rich().columns]
    levels = evaluate(LastPlus(2), make_windows(_random_walk(), 10, 2))
    assert "mape" in levels.table().columns and levels.kind == "level"

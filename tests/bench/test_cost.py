"""Cost per unit of work from a price per core-hour and measured busy seconds."""

from __future__ import annotations

import math

import pytest

from celeris import ConfigError
from celeris.bench.cost import (
    PER_BILLION,
    Cost,
    prediction_cost,
    price_per_hour,
    sweep_cost,
)


def test_cost_value_one_core_hour_for_a_million_predictions_is_the_price() -> None:
    cost = prediction_cost(0.05, 3600.0, 500_000, 2)
    assert cost is not None
    assert cost.value == pytest.approx(0.05, rel=1e-12)
    assert cost.label() == "per million predictions"
    assert cost.to_dict()["units"] == 1_000_000


def test_sweep_cost_per_billion_bar_variants_golden() -> None:
    # 36 CPU-s at 0.10 per core-hour = 0.001; for 2e8 bar-variants that is 0.005 per billion.
    cost = sweep_cost(0.10, 36.0, 2e8)
    assert cost.per == PER_BILLION
    assert cost.value == pytest.approx(0.005, rel=1e-12)
    assert cost.text().startswith("0.005 per billion bar-variants (at 0.1 per core-hour")


def test_cost_no_units_is_nan_and_json_null() -> None:
    cost = Cost(1.0, 10.0, 0, 1e6, "predictions")
    assert math.isnan(cost.value) and cost.to_dict()["cost"] is None
    assert cost.text().startswith("- per million predictions")


def test_prediction_cost_without_server_cpu_is_none() -> None:
    assert prediction_cost(0.05, None, 100, 1) is None


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_cost_bad_price_raises_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match="price_per_hour"):
        Cost(bad, 1.0, 1.0, 1e6, "predictions")
    with pytest.raises(ConfigError, match="--price-per-hour"):
        price_per_hour(bad)


def test_price_per_hour_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIS_PRICE_PER_HOUR", raising=False)
    assert price_per_hour() is None
    monkeypatch.setenv("CELERIS_PRICE_PER_HOUR", "0.034")
    assert price_per_hour() == 0.034
    assert price_per_hour(0.5) == 0.5  # the option wins


def test_price_per_hour_bad_environment_value_names_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERIS_PRICE_PER_HOUR", "-2")
    with pytest.raises(ConfigError, match="CELERIS_PRICE_PER_HOUR"):
        price_per_hour()

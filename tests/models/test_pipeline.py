"""Bars to model inputs and back: forecast timestamps on the data's own calendar."""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
import pytest

from celeris import ConfigError, DataError
from celeris.errors import CelerisTypeError
from celeris.models.pipeline import (
    evaluate_checkpoint,
    expected_step_returns,
    forecast_index,
    train_on_bars,
)
from celeris.models.predictor import Predictor
from celeris.models.signals import signals_from_forecast


def test_forecast_index_daily_equity_bars_continue_on_business_days():
    days = pd.bdate_range("2024-01-01", "2024-03-01", tz="UTC", name="time")  # ends on a Friday
    got = forecast_index(days, 3)
    assert list(got) == [
        pd.Timestamp(d, tz="UTC") for d in ("2024-03-04", "2024-03-05", "2024-03-06")
    ]
    assert got.name == "time"


def test_forecast_index_daily_crypto_bars_keep_weekends():
    days = pd.date_range("2024-01-01", "2024-03-01", freq="D", tz="UTC")
    assert list(forecast_index(days, 2)) == [
        pd.Timestamp("2024-03-02", tz="UTC"),
        pd.Timestamp("2024-03-03", tz="UTC"),
    ]


def test_forecast_index_intraday_session_skips_closed_hours_and_weekends():
    days = pd.bdate_range("2024-01-01", "2024-01-12", tz="UTC")
    # Hourly bars 14:00..20:00 on weekdays, as a US equity session in UTC.
    hours = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(14, 21)])
    got = forecast_index(hours, 3)  # data ends Friday 2024-01-12 20:00
    assert list(got) == [
        pd.Timestamp("2024-01-15 14:00", tz="UTC"),
        pd.Timestamp("2024-01-15 15:00", tz="UTC"),
        pd.Timestamp("2024-01-15 16:00", tz="UTC"),
    ]


def test_forecast_index_needs_two_dated_bars():
    with pytest.raises(DataError, match="at least 2 bars"):
        forecast_index(pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")]), 2)


def test_fit_on_bars_same_seed_gives_same_weights_whatever_the_global_rng():
    import torch

    from celeris.data import load
    from celeris.models.catalogue import build_model
    from celeris.models.pipeline import fit_on_bars
    from celeris.models.train import TrainConfig

    bars = load("sample:sp500").iloc[-300:]
    tiny = build_model("nhits", input_size=20, horizon=2).tiny_config(20, 2, 1)
    config = TrainConfig(max_steps=2, precision="fp32", progress=False)
    fits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the caller's RNG must not pick the initial weights
        fit = fit_on_bars(
            "nhits", bars, input_size=20, horizon=2, test=0.0, model_options=tiny, config=config
        )
        fits.append(fit)
    one, two = (f.model.state_dict() for f in fits)
    assert all(torch.equal(one[k], two[k]) for k in one)
    # ... and the fit leaves the caller's RNG where it was (the last fit ran after seed 2).
    after_fit = torch.rand(3)
    torch.manual_seed(2)
    assert torch.equal(after_fit, torch.rand(3))


class _Horizon2:
    """What expected_step_returns reads of a predictor before it forecasts."""

    horizon = 2
    meta: ClassVar[dict[str, list[str]]] = {"features": ["close"]}


_DAYS = pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC")
_BARS = pd.DataFrame(
    {c: 100.0 for c in ("open", "high", "low", "close", "volume")},
    index=pd.DatetimeIndex(_DAYS, name="time"),
)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: forecast_index(_DAYS, 2.0), CelerisTypeError, r"^horizon must be an int >= 1"),
        (lambda: forecast_index(_DAYS, 0), ConfigError, r"^horizon must be >= 1, got 0$"),
        (
            lambda: expected_step_returns(_Horizon2(), _BARS, step=1.5),
            CelerisTypeError,
            r"^step must be an int in \[1, 2\], got float 1.5",
        ),
        (
            lambda: expected_step_returns(_Horizon2(), _BARS, step=3),
            ConfigError,
            r"^step must be in \[1, 2\], got 3$",
        ),
        (
            lambda: signals_from_forecast(pd.Series([0.1]), threshold="0.1"),
            CelerisTypeError,
            r"^threshold must be a real number >= 0",
        ),
        (
            lambda: signals_from_forecast(pd.Series([0.1]), threshold=float("nan")),
            ConfigError,
            r"^threshold must be finite and >= 0",
        ),
        (
            lambda: signals_from_forecast(pd.DataFrame({"A": [0.1], "B": [0.2]}), rule="topk", k=True),
            CelerisTypeError,
            r"^k must be an int in \[1, 2\], got bool True \(assets\)$",
        ),
        (
            lambda: train_on_bars("nhits", _BARS, "unused", input_size=4, horizon=1, test=True),
            CelerisTypeError,
            r"^test must be a real number > 0, got bool True \(to judge the model on held-out",
        ),
        (
            lambda: evaluate_checkpoint("unused", _BARS, last=0),
            ConfigError,
            r"^last must be in \(0, 1\], got 0$",
        ),
        (
            lambda: Predictor.load("unused", threads=1.0),
            CelerisTypeError,
            r"^threads must be an int >= 1, got float 1.0$",
        ),
    ],
)  # fmt: skip
def test_forecasting_arguments_of_wrong_type_or_range_raise_the_checks_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()

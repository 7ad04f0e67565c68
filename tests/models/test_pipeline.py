"""Bars to model inputs and back: forecast timestamps on the data's own calendar."""

from __future__ import annotations

import pandas as pd
import pytest

from celeris import DataError
from celeris.models.pipeline import forecast_index


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

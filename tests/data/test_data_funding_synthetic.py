"""synthetic_funding(): hand-checked formula, funding times only, clamp, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.data import synthetic
from celeris.data.funding import align_funding
from celeris.data.synthetic import synthetic_funding
from celeris.errors import CelerisTypeError, ConfigError, DataError


def hourly(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="1h", tz="UTC", name="time")


def test_synthetic_funding_only_at_funding_times_within_the_bars():
    rates = synthetic_funding(hourly(48, "2024-01-01 03:00"))
    assert rates.name == "rate" and rates.index.name == "time"
    expected = pd.date_range("2024-01-01 08:00", "2024-01-03 00:00", freq="8h", tz="UTC")
    assert list(rates.index) == list(expected)
    four = synthetic_funding(hourly(24), interval="4h")
    assert [t.hour for t in four.index] == [0, 4, 8, 12, 16, 20]


def test_synthetic_funding_same_seed_same_rates_other_seed_other_rates():
    bars = synthetic(24 * 30, freq="1h", seed=0)
    first = synthetic_funding(bars, seed=5)
    pd.testing.assert_series_equal(first, synthetic_funding(bars, seed=5))
    assert not np.array_equal(first.to_numpy(), synthetic_funding(bars, seed=6).to_numpy())


def test_synthetic_funding_matches_the_formula_by_hand():
    # interval 8h, half-life 8h: phi = 0.5; shock = vol * sqrt(1 - 0.25)
    rates = synthetic_funding(hourly(17), mean=0.0002, vol=0.001, half_life="8h", seed=3)
    z = np.random.default_rng(3).standard_normal(3)
    p0 = 0.0002 + 0.001 * z[0]
    p1 = 0.0002 + 0.5 * (p0 - 0.0002) + 0.001 * np.sqrt(0.75) * z[1]
    p2 = 0.0002 + 0.5 * (p1 - 0.0002) + 0.001 * np.sqrt(0.75) * z[2]
    expected = [
        min(max(p + min(max(0.0001 - p, -0.0005), 0.0005), -0.0075), 0.0075) for p in (p0, p1, p2)
    ]
    np.testing.assert_allclose(rates.to_numpy(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("mean", "interval", "expected"),
    [
        (0.0003, "8h", 0.0001),  # premium within the damper of the interest: exactly 0.01%
        (0.002, "8h", 0.0015),  # premium - damper
        (-0.002, "8h", -0.0015),  # premium + damper
        (0.01, "8h", 0.0075),  # clamped to the cap
        (0.0, "4h", 0.00005),  # interest scaled to a 4-hour interval
    ],
)
def test_synthetic_funding_without_noise_is_the_exchange_formula(mean, interval, expected):
    rates = synthetic_funding(hourly(25), mean=mean, vol=0.0, interval=interval)
    np.testing.assert_allclose(rates.to_numpy(), expected, rtol=1e-12, atol=0)


def test_synthetic_funding_is_clamped_to_the_cap():
    rates = synthetic_funding(hourly(24 * 365), vol=0.01, cap=0.003, seed=1)
    assert np.abs(rates).max() == 0.003
    assert (rates == 0.003).sum() > 10 and (rates == -0.003).sum() > 10


def test_synthetic_funding_mostly_prints_the_interest_rate_by_default():
    rates = synthetic_funding(hourly(24 * 365), seed=2)
    share = float((rates == 0.0001).mean())
    assert 0.6 < share < 0.95


def test_synthetic_funding_aligns_to_hourly_bars_and_not_to_daily_ones():
    bars = synthetic(24 * 3, freq="1h", seed=0)
    aligned = align_funding(synthetic_funding(bars), bars)
    assert int((aligned != 0).sum()) == 9
    daily = synthetic(3, freq="1D", seed=0)
    with pytest.raises(DataError, match=r"funding time 2020-01-01 08:00:00\+00:00 falls between"):
        align_funding(synthetic_funding(daily), daily)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cap": 0.2}, ConfigError, r"cap must be in \[0, 0.1\]"),
        ({"vol": -0.1}, ConfigError, r"vol must be in"),
        ({"interval": "8 hours please"}, ConfigError, r"bad interval '8 hours please'"),
        ({"half_life": "-1D"}, ConfigError, r"half_life must be positive"),
        ({"seed": 1.5}, CelerisTypeError, r"seed must be an int"),
        ({"mean": "0.1"}, CelerisTypeError, r"mean must be"),
    ],
)
def test_synthetic_funding_bad_parameters_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        synthetic_funding(hourly(24), **kwargs)


def test_synthetic_funding_no_funding_time_in_span_or_bad_index_raises():
    with pytest.raises(ConfigError, match=r"no 8h funding time between the first bar"):
        synthetic_funding(hourly(5, "2024-01-01 01:00"))
    with pytest.raises(DataError, match="non-empty UTC DatetimeIndex"):
        synthetic_funding(hourly(5).tz_localize(None))

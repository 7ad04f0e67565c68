"""synthetic(): determinism, validity, stylised facts of crypto returns, speed, errors."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from celeris.data import synthetic, validate
from celeris.errors import CelerisTypeError, ConfigError


def _acf(x: np.ndarray, lag: int = 1) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def test_synthetic_same_seed_identical():
    pd.testing.assert_frame_equal(synthetic(5_000, seed=3), synthetic(5_000, seed=3))


def test_synthetic_different_seeds_differ():
    a, b = synthetic(1_000, seed=1), synthetic(1_000, seed=2)
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())


def test_synthetic_passes_validate_and_has_schema():
    bars = synthetic(20_000, seed=0)
    pd.testing.assert_frame_equal(validate(bars), bars)
    assert len(bars) == 20_000
    assert bars.index[0] == pd.Timestamp("2020-01-01", tz="UTC")
    assert (bars.index[1:] - bars.index[:-1] == pd.Timedelta("1min")).all()
    assert (bars["volume"] > 0).all()


def test_synthetic_volatility_clusters():
    r = np.diff(np.log(synthetic(200_000, seed=0)["close"].to_numpy()))
    acf_abs, acf_raw = _acf(np.abs(r)), _acf(r)
    assert acf_abs > 0.05
    assert abs(acf_raw) < 0.02
    assert acf_abs > acf_raw + 0.04


def test_synthetic_fat_tails_from_jumps_and_garch():
    r = np.diff(np.log(synthetic(200_000, seed=0)["close"].to_numpy()))
    z = (r - r.mean()) / r.std()
    assert float(np.mean(z**4)) > 4.0  # a normal has kurtosis 3


def test_synthetic_annualised_volatility_near_sigma():
    bars = synthetic(200_000, seed=0, sigma=0.8, jump_intensity=0.0)
    r = np.diff(np.log(bars["close"].to_numpy()))
    annual = r.std() * np.sqrt(365.25 * 24 * 60)
    assert annual == pytest.approx(0.8, rel=0.1)


def test_synthetic_volume_correlates_with_abs_return():
    bars = synthetic(100_000, seed=0)
    r = np.abs(np.log(bars["close"] / bars["open"]).to_numpy())
    assert np.corrcoef(r, bars["volume"].to_numpy())[0, 1] > 0.3


def test_synthetic_freq_and_start_respected():
    bars = synthetic(10, freq="1h", start="2024-03-01 12:00")
    assert bars.index[0] == pd.Timestamp("2024-03-01 12:00", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2024-03-01 21:00", tz="UTC")


def test_synthetic_million_bars_under_a_second():
    synthetic(1_000, seed=0)  # compile / load the numba cache first
    timings = []
    for _ in range(2):  # best of two: the first run pays for fresh pages of memory
        t0 = time.perf_counter()
        bars = synthetic(1_000_000, seed=0)
        timings.append(time.perf_counter() - t0)
    assert len(bars) == 1_000_000
    assert min(timings) < 1.0, f"1M synthetic bars took {min(timings):.2f}s"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_bars": 0}, "n_bars"),
        ({"freq": "bogus"}, "bad freq"),
        ({"garch_alpha": 0.2, "garch_beta": 0.85}, "< 1"),
        ({"sigma": -1.0}, "sigma"),
        ({"s0": 0.0}, "s0"),
        ({"jump_scale": -0.1}, "jump_scale"),
    ],
)
def test_synthetic_bad_parameter_raises_config_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        synthetic(**{"n_bars": 10, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"n_bars": 10.0}, CelerisTypeError, "10.0"),
        ({"n_bars": True}, CelerisTypeError, "True"),
        ({"seed": -1}, ConfigError, "-1"),
        ({"seed": "7"}, CelerisTypeError, "'7'"),
        ({"sigma": True}, CelerisTypeError, "True"),
        ({"s0": "30000"}, CelerisTypeError, "'30000'"),
        ({"mu": float("nan")}, ConfigError, "nan"),
        ({"jump_intensity": float("inf")}, ConfigError, "inf"),
    ],
)
def test_synthetic_bad_type_or_value_raises_shared_check_error(kwargs, error, shown):
    # celeris.checks: a wrong type is a CelerisTypeError, a bad value a ConfigError; the
    # message names the parameter and shows the value
    (name,) = kwargs
    with pytest.raises(error) as info:
        synthetic(**{"n_bars": 10, **kwargs})
    message = str(info.value)
    assert message.startswith(f"{name} must be") and shown in message, message


def test_synthetic_numpy_scalars_accepted_same_bars():
    plain = synthetic(50, seed=3, s0=100.0)
    numpy = synthetic(np.int64(50), seed=np.int64(3), s0=np.float32(100.0))
    pd.testing.assert_frame_equal(plain, numpy)


def test_synthetic_seed_none_draws_fresh_bars():
    a, b = synthetic(500, seed=None), synthetic(500, seed=None)
    assert len(a) == len(b) == 500 and not a["close"].equals(b["close"])

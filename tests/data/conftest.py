"""Fixtures of the data tests: a private CELERIS_HOME and small valid bar frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "numba")
)


@pytest.fixture
def celeris_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CELERIS_HOME at an empty temporary folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("CELERIS_HOME", str(home))
    return home


def make_bars(
    n: int = 10, start: str = "2024-01-01", freq: str = "1min", seed: int = 0
) -> pd.DataFrame:
    """Return ``n`` valid bars with a UTC index named time."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    volume = rng.uniform(1, 10, n)
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="time", unit="ns")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@pytest.fixture
def bars() -> pd.DataFrame:
    """Ten valid one-minute bars from 2024-01-01 00:00 UTC (freq cleared)."""
    frame = make_bars()
    frame.index.freq = None
    return frame


@pytest.fixture(name="make_bars")
def make_bars_fixture():
    """The :func:`make_bars` factory (fixtures avoid importing conftest by name)."""
    return make_bars

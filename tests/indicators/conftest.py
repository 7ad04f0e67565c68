"""Fixtures for the indicator tests: real S&P 500 bars and random-walk bars."""

from __future__ import annotations

import os

# Under pytest-xdist two workers share the cores; OpenMP's default spin-waiting threads then
# starve each other and the parallel kernels run ~4x slower. Must be set before numba loads
# its OpenMP pool; harmless elsewhere. (Better placed in the root conftest or Makefile.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd
import pytest

from .helpers import random_bars


@pytest.fixture(scope="session")
def sp500() -> pd.DataFrame:
    """Daily S&P 500 bars 1999-2018 (5031 rows) from ``arch``, columns lower-cased."""
    from arch.data import sp500

    frame = sp500.load()[["Open", "High", "Low", "Close", "Volume"]].astype("float64")
    return frame.rename(columns=str.lower)


@pytest.fixture(scope="session")
def walk() -> pd.DataFrame:
    """3000 hourly random-walk bars."""
    return random_bars(11, 3000)


@pytest.fixture(params=["sp500", "walk"])
def bars(request) -> pd.DataFrame:
    """Each data set in turn."""
    return request.getfixturevalue(request.param)

"""Tests for celeris.analytics.risk (historical VaR / CVaR; drawdowns are re-exported)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from celeris.analytics import drawdown, historical_var_cvar, max_drawdown
from celeris.data import load
from celeris.errors import CelerisTypeError, ConfigError, DataError


@pytest.fixture(scope="module")
def close() -> pd.Series:
    return load("sample:sp500")["close"]


def test_drawdown_is_the_one_shared_with_the_backtest_layer():
    import celeris.analytics
    import celeris.indicators.drawdown as shared

    assert drawdown is shared.drawdown and max_drawdown is shared.max_drawdown
    assert celeris.analytics.MaxDrawdown is shared.MaxDrawdown


def test_historical_var_cvar_matches_numpy_quantile_and_tail_mean(close):
    returns = close.pct_change().dropna().to_numpy()
    for level in (0.95, 0.99):
        q = np.quantile(returns, 1.0 - level)
        var, cvar = historical_var_cvar(returns, level)
        assert var == -q
        assert cvar == -returns[returns <= q].mean()
        assert cvar >= var > 0


def test_historical_var_cvar_hand_example():
    # Sorted: -0.05, -0.02, 0, 0.01, 0.03; the 25% quantile is -0.02 exactly.
    var, cvar = historical_var_cvar([0.01, -0.02, 0.03, -0.05, 0.0], level=0.75)
    assert var == pytest.approx(0.02) and cvar == pytest.approx(0.035)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 95, math.nan])
def test_historical_var_cvar_level_out_of_range_raises_config_error(level):
    # Message from celeris.checks (was "level=0.0 must be between 0 and 1 ...").
    with pytest.raises(ConfigError, match=r"^level must be (finite and )?in \(0, 1\), got "):
        historical_var_cvar([0.01, -0.01], level)


@pytest.mark.parametrize("level", ["95%", True, None])
def test_historical_var_cvar_level_not_number_raises_type_error(level):
    # A bool level was refused before too; the message now comes from celeris.checks.
    with pytest.raises(CelerisTypeError, match=r"^level must be a real number in \(0, 1\)"):
        historical_var_cvar([0.01, -0.01], level)


def test_historical_var_cvar_numpy_integer_level_is_a_number():
    # np.int64 used to be refused as "not a number"; it is a number out of range.
    with pytest.raises(ConfigError, match=r"\(0\.95 = the worst 5% of bars\)$"):
        historical_var_cvar([0.01, -0.01], np.int64(1))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "returns is empty"),
        ([0.01, np.nan, 0.02], r"returns is not finite \(nan\) at position 1"),
        (np.zeros((2, 2)), r"returns must be 1-D, got shape \(2, 2\)"),
        (["a", "b"], "returns must be numeric"),
    ],
)
def test_historical_var_cvar_bad_returns_raise_data_error(values, message):
    with pytest.raises(DataError, match=message):
        historical_var_cvar(values)


def test_import_risk_does_not_import_scipy():
    code = "import sys, celeris.analytics.risk; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

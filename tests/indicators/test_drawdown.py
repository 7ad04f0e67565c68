"""Tests for celeris.indicators.drawdown, the drawdown shared by the backtest and analytics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.data import load
from celeris.errors import CelerisTypeError, DataError
from celeris.indicators.drawdown import MaxDrawdown, drawdown, max_drawdown


@pytest.fixture(scope="module")
def closes() -> pd.DataFrame:
    return pd.DataFrame({n: load(f"sample:{n}")["close"] for n in ("sp500", "nasdaq")})


def test_drawdown_series_equals_pandas_cummax(closes):
    close = closes["sp500"]
    result = drawdown(close)
    assert isinstance(result, pd.Series) and result.index.equals(close.index)
    pd.testing.assert_series_equal(result, close / close.cummax() - 1.0)
    assert result.max() == 0.0


def test_drawdown_frame_equals_portfolio_definition_per_column(closes):
    result = drawdown(closes)
    pd.testing.assert_frame_equal(result, closes / closes.cummax() - 1.0)
    np.testing.assert_array_equal(drawdown(closes.to_numpy()), result.to_numpy())


def test_max_drawdown_sp500_golden_dates(closes):
    close = closes["sp500"]
    depth, peak, trough = max_drawdown(close)
    # The 2007-2009 bear market: the close peaked on 2007-10-09 and bottomed on 2009-03-09.
    assert str(close.index[peak].date()) == "2007-10-09"
    assert str(close.index[trough].date()) == "2009-03-09"
    assert depth == pytest.approx(676.530029 / 1565.150024 - 1.0, rel=1e-8)
    assert depth == float(drawdown(close).min())


def test_max_drawdown_rising_series_is_zero_at_start():
    assert max_drawdown([1.0, 2.0, 3.0]) == MaxDrawdown(0.0, 0, 0)


def test_max_drawdown_equity_through_zero_is_below_minus_one():
    assert max_drawdown([100.0, 50.0, -20.0]).depth == pytest.approx(-1.2)


def test_max_drawdown_of_two_columns_raises_data_error(closes):
    with pytest.raises(DataError, match="max_drawdown takes one series"):
        max_drawdown(closes)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "values is empty"),
        ([1.0, np.nan], r"values is not finite \(nan\) at position \(1,\)"),
        ([[1.0, 2.0], [1.0, np.inf]], r"not finite \(inf\) at position \(1, 1\)"),
        ([0.0, 1.0], "values must start > 0"),
        ([[1.0, -1.0], [2.0, 2.0]], "values must start > 0"),
        (np.ones((2, 2, 2)), "values must be 1-D or 2-D"),
        (["a"], "values must be numeric"),
    ],
)
def test_drawdown_bad_values_raise_data_error(values, message):
    with pytest.raises(DataError, match=message):
        drawdown(np.asarray(values) if not isinstance(values, list) else values)


def test_drawdown_scalar_raises_type_error():
    with pytest.raises(CelerisTypeError, match="values must be an array, a Series or a DataFrame"):
        drawdown(3.0)

"""The comparison helper must fail when values differ (a test that cannot fail is no test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .helpers import assert_same_values, random_bars


def test_assert_same_values_equal_arrays_with_nan_passes():
    a = np.array([np.nan, 1.0, 2.0])
    assert_same_values(a, a.copy())


def test_assert_same_values_within_tolerance_passes():
    assert_same_values(np.array([1.0, 1000.0]), np.array([1.0 + 5e-10, 1000.0 * (1 + 5e-10)]))


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ([1.0, 2.0], [1.0, 2.5]),  # a plainly different value
        ([1.0], [2.0]),  # vectorbt's isclose(1.0, 2.0) returned True
        ([1000.0], [1000.0 * (1 + 3e-9)]),  # just outside rtol
        ([0.0], [3e-9]),  # just outside atol
    ],
)
def test_assert_same_values_different_values_raises(actual, expected):
    with pytest.raises(AssertionError):
        assert_same_values(np.array(actual), np.array(expected))


def test_assert_same_values_nan_in_different_place_raises():
    with pytest.raises(AssertionError, match="NaN positions differ"):
        assert_same_values(np.array([np.nan, 1.0, 2.0]), np.array([1.0, np.nan, 2.0]))


def test_assert_same_values_nan_against_number_raises():
    with pytest.raises(AssertionError, match="NaN positions differ"):
        assert_same_values(np.array([np.nan, 1.0]), np.array([np.nan, np.nan]))


def test_assert_same_values_different_shape_raises():
    with pytest.raises(AssertionError, match="shape"):
        assert_same_values(np.zeros(3), np.zeros(4))


def test_assert_same_values_frames_compare_by_value():
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": [2.0, 3.0]})
    assert_same_values(frame, frame.to_numpy())
    with pytest.raises(AssertionError):
        assert_same_values(frame, frame.to_numpy() + 1.0)


def test_random_bars_ohlc_consistent_holds():
    bars = random_bars(0, 500)
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["low"] > 0).all()
    assert bars.index.tz is not None and bars.index.is_monotonic_increasing

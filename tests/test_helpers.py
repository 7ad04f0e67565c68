import numpy as np
import pytest

from tests.helpers import assert_values_close


def test_assert_values_close_different_values_fails():
    with pytest.raises(AssertionError, match="mismatch"):
        assert_values_close([1.0, 2.0], [1.0, 2.5], rtol=1e-9)


def test_assert_values_close_nan_placement_fails():
    with pytest.raises(AssertionError, match="NaN"):
        assert_values_close([1.0, np.nan], [1.0, 2.0])


def test_assert_values_close_shape_fails():
    with pytest.raises(AssertionError, match="shape"):
        assert_values_close([1.0], [1.0, 1.0])


def test_assert_values_close_inf_sign_fails():
    with pytest.raises(AssertionError, match="infinity"):
        assert_values_close([np.inf], [-np.inf])


def test_assert_values_close_equal_values_passes():
    assert_values_close([1.0, np.nan, np.inf], [1.0 + 1e-12, np.nan, np.inf], rtol=1e-9)

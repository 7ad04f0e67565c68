"""celeris.checks: one exception type per mistake (wrong type vs. bad value)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from celeris.checks import check_bool, check_fraction, check_int, check_real, describe_range
from celeris.errors import CelerisError, CelerisTypeError, ConfigError


@pytest.mark.parametrize("value", [2.5, 3.0, "3", None, True, False, np.True_, np.float64(3.0), 1j])
def test_check_int_wrong_type_raises_type_error(value: object) -> None:
    with pytest.raises(CelerisTypeError, match=r"^hidden_size must be an int >= 1, got "):
        check_int("hidden_size", value, minimum=1)


@pytest.mark.parametrize("value", [0, -3, np.int64(0)])
def test_check_int_below_minimum_raises_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^hidden_size must be >= 1, got -?\d+$"):
        check_int("hidden_size", value, minimum=1)


def test_check_int_message_names_parameter_value_and_range() -> None:
    with pytest.raises(CelerisTypeError) as info:
        check_int("hidden_size", 2.5, minimum=1)
    assert str(info.value) == "hidden_size must be an int >= 1, got float 2.5"
    with pytest.raises(ConfigError) as info2:
        check_int("window", 9, minimum=2, maximum=8, reason="at most the number of bars")
    assert str(info2.value) == "window must be in [2, 8], got 9 (at most the number of bars)"


def test_check_int_numpy_integer_returns_python_int() -> None:
    out = check_int("n", np.int32(7), minimum=0, maximum=7)
    assert out == 7 and type(out) is int


def test_check_int_no_bounds_accepts_any_int() -> None:
    assert check_int("seed", -(2**70)) == -(2**70)


@pytest.mark.parametrize("value", ["0.1", None, True, np.False_, 1j, [0.1]])
def test_check_real_wrong_type_raises_type_error(value: object) -> None:
    with pytest.raises(CelerisTypeError, match=r"^rate must be a real number >= 0, got "):
        check_real("rate", value, minimum=0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_check_real_non_finite_raises_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^rate must be finite, got"):
        check_real("rate", value)


def test_check_real_bounds_open_and_closed() -> None:
    assert check_real("x", 0, minimum=0) == 0.0
    with pytest.raises(ConfigError, match=r"x must be > 0, got 0$"):
        check_real("x", 0, minimum=0, open_low=True)
    assert check_real("x", 1, maximum=1) == 1.0
    with pytest.raises(ConfigError, match=r"x must be < 1, got 1$"):
        check_real("x", 1, maximum=1, open_high=True)
    with pytest.raises(ConfigError, match=r"x must be in \(0, 2\], got 2.5"):
        check_real("x", 2.5, minimum=0, maximum=2, open_low=True)


def test_check_real_non_finite_with_bounds_names_both() -> None:
    with pytest.raises(ConfigError, match=r"^p must be finite and in \[0, 1\], got nan$"):
        check_real("p", math.nan, minimum=0, maximum=1)
    with pytest.raises(ConfigError, match=r"^p must be >= 0, got -0.5$"):
        check_real("p", np.float64(-0.5), minimum=0)


def test_check_real_numpy_and_int_return_python_float() -> None:
    for value in (np.float32(0.5), np.int64(2), 3):
        out = check_real("x", value)
        assert type(out) is float and out == float(value)


def test_check_fraction_interval_ends() -> None:
    assert check_fraction("dropout", 0) == 0.0
    assert check_fraction("dropout", 1) == 1.0
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\), got 1.0"):
        check_fraction("dropout", 1.0, open_high=True)
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        check_fraction("split", 0.0, open_low=True)
    with pytest.raises(CelerisTypeError):
        check_fraction("dropout", "0.1")


def test_check_bool_accepts_numpy_bool_and_refuses_ints() -> None:
    assert check_bool("flag", np.True_) is True
    assert check_bool("flag", False) is False
    for value in (0, 1, "yes", None):
        with pytest.raises(CelerisTypeError, match=r"^flag must be True or False, got"):
            check_bool("flag", value)


def test_check_errors_are_celeris_errors_of_builtin_kinds() -> None:
    # Callers catching TypeError / ValueError (or CelerisError) keep working.
    with pytest.raises(TypeError):
        check_int("n", 1.5)
    with pytest.raises(ValueError):
        check_int("n", 0, minimum=1)
    with pytest.raises(CelerisError):
        check_real("x", math.nan)


def test_describe_range_words() -> None:
    assert describe_range(None, None) == ""
    assert describe_range(1, None) == ">= 1"
    assert describe_range(None, 5, open_high=True) == "< 5"
    assert describe_range(0, 1, open_high=True) == "in [0, 1)"


def test_check_real_finite_false_admits_infinity_only_on_an_unbounded_side() -> None:
    assert check_real("limit", math.inf, minimum=0, finite=False) == math.inf
    assert check_real("floor", -math.inf, maximum=0, finite=False) == -math.inf
    with pytest.raises(ConfigError, match="limit must be"):
        check_real("limit", math.inf, minimum=0, maximum=10, finite=False)
    with pytest.raises(ConfigError, match="finite"):
        check_real("limit", math.nan, minimum=0, finite=False)
    with pytest.raises(ConfigError, match="finite"):
        check_real("limit", math.inf, minimum=0)

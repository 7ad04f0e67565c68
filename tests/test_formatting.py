"""celeris.formatting: one set of rules for numbers, durations and timestamps shown to people."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pandas as pd
import pytest

from celeris.formatting import (
    format_duration,
    format_number,
    format_param,
    format_params,
    format_timestamp,
    is_missing,
)


@pytest.mark.parametrize(
    ("value", "missing"),
    [(None, True), (math.nan, True), (np.float32("nan"), True), (pd.NaT, True),
     (np.datetime64("NaT"), True), (np.timedelta64("NaT"), True), (0.0, False), ("x", False),
     (pd.Timestamp("2024-01-01"), False), (0, False)],
)  # fmt: skip
def test_is_missing_none_nan_and_nat(value, missing) -> None:
    assert is_missing(value) is missing


@pytest.mark.parametrize(
    ("value", "kind", "kwargs", "text"),
    [
        (0.308658, "percent", {}, "30.87%"),
        (0, "percent", {}, "0.00%"),
        (0.015, "percent", {"signed": True}, "+1.50%"),
        (-0.015, "percent", {"signed": True}, "-1.50%"),
        (130865.842517, "cash", {}, "130,865.84"),
        (0.21598, "ratio", {}, "0.216"),
        (np.int64(1234), "count", {}, "1,234"),
        (1234.0, "count", {}, "1,234"),
        (12.5, "count", {}, "12.500"),
        (2.0, "number", {}, "2"),
        (0.05, "number", {}, "0.050"),
        (10_000, "number", {}, "10,000"),
        (0.00123456, "general", {"digits": 3}, "0.00123"),
        (math.inf, "ratio", {}, "inf"),
        (-math.inf, "percent", {}, "-inf"),
        (math.nan, "percent", {}, "n/a"),
        (None, "cash", {"missing": "-"}, "-"),
        (np.True_, "number", {}, "yes"),
        ("abc", "number", {}, "abc"),
    ],
)
def test_format_number_each_kind_expected_text(value, kind, kwargs, text) -> None:
    assert format_number(value, kind, **kwargs) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (pd.Timedelta(days=2907, hours=4), "2,907 days 4 h"),
        (datetime.timedelta(days=1, hours=3), "1 day 3 h"),
        (np.timedelta64(95, "m"), "1 h 35 min"),
        (pd.Timedelta(seconds=30), "30 s"),
        (pd.Timedelta(0), "0 s"),
        (pd.NaT, "n/a"),
    ],
)
def test_format_duration_compact_text(value, text) -> None:
    assert format_duration(value) == text


def test_format_timestamp_precisions() -> None:
    midnight = pd.Timestamp("2024-01-02", tz="UTC")
    intraday = pd.Timestamp("2024-01-02 13:05:07", tz="UTC")
    assert format_timestamp(midnight) == "2024-01-02"
    assert format_timestamp(intraday) == "2024-01-02 13:05"
    assert format_timestamp(midnight, precision="minute") == "2024-01-02 00:00"
    assert format_timestamp(intraday, precision="second") == "2024-01-02 13:05:07"
    assert format_timestamp(intraday.floor("min"), precision="second") == "2024-01-02 13:05"
    assert format_timestamp(None, missing="") == ""
    assert format_timestamp(7) == "bar 7"


def test_format_params_shortest_floats_and_plain_ints() -> None:
    assert format_param(np.float64(0.05)) == "0.05"
    assert format_param(1e-5) == "1e-05"
    assert format_params({"fast": np.int64(10), "kind": "ema", "sl": 0.5}) == (
        "fast=10, kind=ema, sl=0.5"
    )


def test_formatting_module_imports_no_pandas() -> None:
    # The serving process never imports pandas; formatting must not drag it in.
    import subprocess
    import sys

    code = "import sys, celeris.formatting; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

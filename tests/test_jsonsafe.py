"""celeris.jsonsafe: one set of rules for turning values into JSON."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from celeris.cli.format import jsonable
from celeris.jsonsafe import json_default, to_jsonable, to_python


def test_to_jsonable_nested_numpy_nan_inf_and_keys() -> None:
    value = {
        1: [np.float64(1.5), np.int32(2), np.bool_(True), math.nan, -math.inf],
        "arr": np.array([[1, 2], [3, 4]]),
        "t": (None, "x"),
    }
    out = to_jsonable(value)
    assert out == {"1": [1.5, 2, True, None, None], "arr": [[1, 2], [3, 4]], "t": [None, "x"]}
    assert json.dumps(out, allow_nan=False)  # strict JSON
    assert type(out["1"][1]) is int and type(out["1"][2]) is bool


@pytest.mark.parametrize(
    ("value", "iso", "plain"),
    [
        (pd.Timestamp("2024-01-02 13:05", tz="UTC"), "2024-01-02T13:05:00+00:00",
         "2024-01-02 13:05:00+00:00"),
        (pd.Timedelta(days=2, hours=4), "P2DT4H0M0S", "2 days 04:00:00"),
        (datetime.date(2024, 1, 2), "2024-01-02", "2024-01-02"),
        (pd.NaT, None, None),
        (np.datetime64("NaT"), None, None),
    ],
)  # fmt: skip
def test_to_jsonable_times_iso_or_str(value, iso, plain) -> None:
    assert to_jsonable(value) == iso
    assert to_jsonable(value, times="str") == plain


def test_to_jsonable_inf_keep_for_the_cli() -> None:
    assert to_jsonable(math.inf) is None
    assert to_jsonable(np.float64(math.inf), inf="keep") == math.inf
    assert to_jsonable(math.nan, inf="keep") is None


def test_cli_jsonable_output_unchanged_for_its_scalars() -> None:
    # What `celeris backtest --json` printed before the move, value by value.
    cases = [
        (np.int64(7), 7),
        (np.float64(0.25), 0.25),
        (np.float64("nan"), None),
        (np.float64("inf"), math.inf),
        (np.bool_(False), False),
        (pd.Timestamp("2024-01-02", tz="UTC"), "2024-01-02 00:00:00+00:00"),
        (pd.Timedelta(days=3), "3 days 00:00:00"),
        (pd.NaT, None),
        ("long", "long"),
        (None, None),
    ]
    for value, expected in cases:
        got = jsonable(value)
        assert got == expected and type(got) is type(expected), (value, got)


def test_to_python_numpy_scalars_only() -> None:
    assert type(to_python(np.float32(0.5))) is float
    assert to_python([1]) == [1]


class _HasDict:
    def to_dict(self) -> dict[str, int]:
        return {"a": 1}


def test_json_default_orjson_and_msgpack_fallbacks() -> None:
    body = {"obj": _HasDict(), "tags": frozenset({"x"}), "path": Path("a/b"), "v": np.float32(1)}
    assert orjson.loads(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=json_default)
    ) == {
        "obj": {"a": 1},
        "tags": ["x"],
        "path": "a/b",
        "v": 1.0,
    }
    assert json_default(np.arange(3)) == [0, 1, 2]
    assert json_default(np.int16(4)) == 4
    assert json_default((1, 2)) == [1, 2]

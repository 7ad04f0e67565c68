"""validate(): every rule of the bar schema, its message, and the NaN policies."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from celeris.data import BAR_COLUMNS, validate
from celeris.data.schema import check_time_index, oldest_first
from celeris.errors import ConfigError, DataError

T3 = "2024-01-01 00:03:00+00:00"  # the timestamp of row 3 in the `bars` fixture


def _set(col: str, row: int, value: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.iloc[row, df.columns.get_loc(col)] = value
        return df

    return edit


def _high_below_close(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[3, df.columns.get_loc("high")] = max(df["open"].iloc[3], df["low"].iloc[3]) * 1.0000001
    df.iloc[3, df.columns.get_loc("close")] = df["high"].iloc[3] * 1.001
    df.iloc[3, df.columns.get_loc("open")] = df["low"].iloc[3]
    return df


def _low_above_open(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[3, df.columns.get_loc("low")] = df[["open", "close"]].iloc[3].min() * 1.0001
    df.iloc[3, df.columns.get_loc("high")] = df[["open", "close"]].iloc[3].max() * 1.01
    return df


def _high_below_low(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[3, df.columns.get_loc("high")] = df["low"].iloc[3] * 0.99
    return df


def _swap_rows(df: pd.DataFrame) -> pd.DataFrame:
    order = list(range(len(df)))
    order[2], order[3] = order[3], order[2]
    return df.iloc[order]


def _duplicate(df: pd.DataFrame) -> pd.DataFrame:
    idx = df.index.tolist()
    idx[4] = idx[3]
    return df.set_axis(pd.DatetimeIndex(idx, name="time"))


def _text_column(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["volume"] = df["volume"].astype(object)
    df.iloc[3, df.columns.get_loc("volume")] = "n/a"
    return df


# (id, edit, rule fragment, column or None, timestamp/where fragment)
BAD_INPUTS = [
    ("nan_close", _set("close", 3, np.nan), "bars have no NaN", "close", T3),
    ("inf_volume", _set("volume", 3, np.inf), "values are finite", "volume", T3),
    ("neg_inf_open", _set("open", 3, -np.inf), "values are finite", "open", T3),
    ("zero_low", _set("low", 3, 0.0), "prices are > 0", "low", T3),
    ("negative_close", _set("close", 3, -1.0), "prices are > 0", "close", T3),
    ("negative_volume", _set("volume", 3, -0.5), "volume >= 0", "volume", T3),
    ("high_below_low", _high_below_low, "high >= low", "high", T3),
    ("high_below_close", _high_below_close, "high >= max(open, close)", "high", T3),
    ("low_above_open", _low_above_open, "low <= min(open, close)", "low", T3),
    ("unsorted", _swap_rows, "index is sorted", None, "2024-01-01 00:02:00+00:00"),
    ("duplicate", _duplicate, "timestamps are unique", None, T3),
    ("text_volume", _text_column, "bar columns are numeric", "volume", T3),
    ("tz_naive", lambda df: df.tz_localize(None), "index is UTC", None, "tz_localize('UTC')"),
    (
        "other_tz",
        lambda df: df.tz_convert("America/New_York"),
        "index is UTC",
        None,
        "tz_convert('UTC')",
    ),
    (
        "range_index",
        lambda df: df.reset_index(drop=True),
        "index is a DatetimeIndex",
        None,
        "RangeIndex",
    ),
    ("empty", lambda df: df.iloc[:0], "frame is not empty", None, "no rows"),
    (
        "missing_volume",
        lambda df: df.drop(columns="volume"),
        "bar columns exist",
        "volume",
        "found",
    ),
    (
        "capitalised_close",
        lambda df: df.rename(columns={"close": "Close"}),
        "bar columns exist",
        "close",
        "did you mean 'Close'",
    ),
    (
        "adj_close_only",
        lambda df: df.rename(columns={"close": "adj_close"}),
        "bar columns exist",
        "close",
        "'adj_close' is an adjusted price, not the traded close",
    ),
    (
        "bool_volume",
        lambda df: df.assign(volume=True),
        "bar columns are numeric",
        "volume",
        "bool",
    ),
    ("series", lambda df: df["close"], "input is a DataFrame", None, "Series"),
    (
        "nat_in_index",
        lambda df: df.set_axis(pd.DatetimeIndex([pd.NaT, *df.index[1:]], name="time")),
        "index has no NaT",
        None,
        "position 0",
    ),
]


@pytest.mark.parametrize(
    ("edit", "rule", "column", "where"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_validate_bad_input_raises_naming_rule_column_and_time(bars, edit, rule, column, where):
    with pytest.raises(DataError) as info:
        validate(edit(bars))
    message = str(info.value)
    assert f"'{rule}'" in message
    if column is not None:
        assert f"'{column}'" in message
    assert where in message


def test_validate_valid_frame_returns_equal_copy(bars):
    out = validate(bars)
    pd.testing.assert_frame_equal(out, bars)
    assert out is not bars
    out.iloc[0, 0] = 1.0
    assert bars.iloc[0, 0] != 1.0


def test_validate_int_columns_cast_to_float64(bars):
    df = bars.copy()
    df["volume"] = np.arange(len(df), dtype=np.int64)
    out = validate(df)
    assert (out.dtypes == np.float64).all()
    assert out["volume"].tolist() == list(range(len(df)))


def test_validate_reorders_columns_and_keeps_extras_last(bars):
    df = bars[["close", "volume", "low", "open", "high"]].assign(trades=np.arange(10))
    out = validate(df)
    assert list(out.columns) == [*BAR_COLUMNS, "trades"]
    assert out["trades"].dtype == np.int64


def test_validate_microsecond_index_normalised_to_ns_utc(bars):
    df = bars.set_axis(bars.index.as_unit("us"))
    out = validate(df)
    assert out.index.dtype == "datetime64[ns, UTC]"
    assert out.index.name == "time"


def test_validate_nan_ffill_fills_from_previous_bar(bars):
    df = _set("close", 3, np.nan)(bars)
    df.iloc[3, df.columns.get_loc("high")] = max(df["open"].iloc[3], bars["close"].iloc[2]) * 1.01
    df.iloc[3, df.columns.get_loc("low")] = min(df["open"].iloc[3], bars["close"].iloc[2]) * 0.99
    out = validate(df, nan_policy="ffill")
    assert out["close"].iloc[3] == bars["close"].iloc[2]
    assert not out.isna().any().any()


def test_validate_nan_ffill_leading_nan_raises(bars):
    df = _set("open", 0, np.nan)(bars)
    with pytest.raises(DataError, match=re.escape("2024-01-01 00:00:00+00:00")) as info:
        validate(df, nan_policy="ffill")
    assert "'open'" in str(info.value) and "forward-fill" in str(info.value)


def test_validate_nan_drop_drops_only_rows_with_nan(bars):
    df = _set("volume", 3, np.nan)(_set("close", 5, np.nan)(bars))
    out = validate(df, nan_policy="drop")
    assert len(out) == len(bars) - 2
    assert bars.index[3] not in out.index and bars.index[5] not in out.index


def test_validate_nan_drop_all_rows_raises(bars):
    df = bars.assign(close=np.nan)
    with pytest.raises(DataError, match="frame is not empty"):
        validate(df, nan_policy="drop")


def test_validate_unknown_nan_policy_raises_config_error_with_hint(bars):
    with pytest.raises(ConfigError, match="did you mean 'ffill'"):
        validate(bars, nan_policy="fill")  # type: ignore[arg-type]


def test_validate_utc_from_other_representations_accepted(bars):
    import datetime as dt
    import zoneinfo

    for tz in (dt.UTC, zoneinfo.ZoneInfo("UTC"), "Etc/UTC"):
        out = validate(bars.tz_convert(tz))
        assert str(out.index.tz) == "UTC"


def test_validate_error_reports_first_of_many_offenders(bars):
    df = _set("volume", 7, -1.0)(_set("volume", 4, -2.0)(bars))
    with pytest.raises(DataError) as info:
        validate(df)
    assert "2024-01-01 00:04:00+00:00" in str(info.value)
    assert "2 rows" in str(info.value)


def test_validate_error_is_a_value_error_too(bars):
    with pytest.raises(ValueError):
        validate(bars.iloc[:0])


# ---- the index rules on their own, and the named-columns mode -------------------------------
INDEX_CASES = [
    ("unsorted", _swap_rows, "index is sorted", "not sorted by time: timestamp 2024-01-01 00:02"),
    ("duplicate", _duplicate, "timestamps are unique", f"{T3} appears more than once"),
    (
        "nat",
        lambda df: df.set_axis(pd.DatetimeIndex([pd.NaT, *df.index[1:]], name="time")),
        "index has no NaT",
        "NaT at position 0",
    ),
    ("range", lambda df: df.reset_index(drop=True), "index is a DatetimeIndex", "RangeIndex"),
]


@pytest.mark.parametrize(
    ("edit", "rule", "where"), [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES]
)
def test_check_time_index_bad_index_raises_naming_what_rule_and_row(bars, edit, rule, where):
    with pytest.raises(DataError) as info:
        check_time_index(edit(bars).index, "close index")
    message = str(info.value)
    assert f"'{rule}'" in message and where in message and "close index" in message


def test_check_time_index_utc_false_accepts_naive_and_other_zones(bars):
    naive = bars.index.tz_localize(None)
    assert check_time_index(naive, utc=False) is naive
    tokyo = bars.index.tz_convert("Asia/Tokyo")
    assert check_time_index(tokyo, utc=False) is tokyo
    with pytest.raises(DataError, match="'index is UTC'"):
        check_time_index(naive)


def test_check_time_index_utc_false_still_refuses_disorder(bars):
    with pytest.raises(DataError, match="'index is sorted'"):
        check_time_index(_swap_rows(bars).index.tz_localize(None), utc=False)


def test_validate_index_messages_same_as_check_time_index(bars):
    for _, edit, _, _ in INDEX_CASES:
        with pytest.raises(DataError) as direct:
            check_time_index(edit(bars).index)
        with pytest.raises(DataError) as through:
            validate(edit(bars))
        assert str(direct.value) == str(through.value)


def test_validate_named_columns_accepts_frame_without_volume(bars):
    hlc = bars[["close", "high", "low"]].assign(note="x")
    out = validate(hlc, columns=("high", "low", "close"))
    assert list(out.columns) == ["high", "low", "close", "note"]
    pd.testing.assert_frame_equal(out[["high", "low", "close"]], bars[["high", "low", "close"]])
    with pytest.raises(DataError, match="'bar columns exist'"):
        validate(hlc)


@pytest.mark.parametrize(
    ("edit", "rule", "column"),
    [
        (_set("close", 3, np.nan), "bars have no NaN", "close"),
        (_set("low", 3, 0.0), "prices are > 0", "low"),
        (_set("high", 3, np.inf), "values are finite", "high"),
        (_high_below_low, "high >= low", "high"),
        (lambda df: df.drop(columns="low"), "bar columns exist", "low"),
    ],
)
def test_validate_named_columns_apply_the_rules_of_those_columns(bars, edit, rule, column):
    with pytest.raises(DataError) as info:
        validate(
            edit(bars).drop(columns="volume", errors="ignore"), columns=("high", "low", "close")
        )
    assert f"'{rule}'" in str(info.value) and f"'{column}'" in str(info.value)


def test_validate_named_columns_leave_other_columns_unchecked(bars):
    df = _set("volume", 3, -1.0)(_set("open", 4, np.nan)(bars))
    out = validate(df, columns=["close"])
    assert np.isnan(out["open"].iloc[4]) and out["volume"].iloc[3] == -1.0


def test_validate_named_columns_unknown_name_raises_config_error_with_hint(bars):
    with pytest.raises(ConfigError, match=r"'hihg' is not a bar column.*did you mean 'high'"):
        validate(bars, columns=("hihg", "low"))
    with pytest.raises(ConfigError, match="columns is empty"):
        validate(bars, columns=())


def test_oldest_first_reverses_only_a_strictly_newest_first_frame(bars):
    newest_first = bars.iloc[::-1]
    pd.testing.assert_frame_equal(oldest_first(newest_first), bars)
    shuffled = _swap_rows(bars)
    assert oldest_first(shuffled) is shuffled
    assert oldest_first(bars) is bars

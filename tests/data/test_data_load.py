"""load(): CSV and Parquet round trips, spellings, timestamp formats, samples, errors."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest

from celeris.data import SAMPLES, load
from celeris.errors import ConfigError, DataError


def _write_csv(path, frame: pd.DataFrame, time_values, time_name="time", names=None):
    out = frame.reset_index(drop=True)
    if names:
        out = out.rename(columns=names)
    out.insert(0, time_name, time_values)
    out.to_csv(path, index=False)
    return path


def _epoch(bars: pd.DataFrame, unit: str) -> np.ndarray:
    ns = bars.index.asi8
    return ns // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_load_csv_epoch_unit_detected_by_magnitude(tmp_path, bars, unit):
    path = _write_csv(tmp_path / "b.csv", bars, _epoch(bars, unit), time_name="timestamp")
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_csv_epoch_float_seconds(tmp_path, bars):
    path = _write_csv(tmp_path / "b.csv", bars, _epoch(bars, "s").astype(float) + 0.0)
    pd.testing.assert_frame_equal(load(path), bars)


@pytest.mark.parametrize(
    "fmt",
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S+00:00",
        "%Y-%m-%d %H:%M:%S UTC",
        "%Y-%m-%dT%H:%M:%S.%f",
    ],
)
def test_load_csv_iso_strings_naive_taken_as_utc(tmp_path, bars, fmt):
    path = _write_csv(tmp_path / "b.csv", bars, bars.index.strftime(fmt), time_name="Date")
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_csv_offset_strings_converted_to_utc(tmp_path, bars):
    local = bars.index.tz_convert("Asia/Tokyo").strftime("%Y-%m-%dT%H:%M:%S%z")
    path = _write_csv(tmp_path / "b.csv", bars, local, time_name="datetime")
    out = load(path)
    assert out.index.equals(bars.index)


def test_load_csv_mixed_offsets_converted_to_utc(tmp_path, bars):
    stamps = [
        t.tz_convert("America/New_York" if i % 2 else "Europe/Berlin").isoformat()
        for i, t in enumerate(bars.index)
    ]
    path = _write_csv(tmp_path / "b.csv", bars, stamps)
    assert load(path).index.equals(bars.index)


SPELLINGS = {
    "Capitalised": {
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Close",
        "volume": "Volume",
    },
    "upper": {"open": "OPEN", "high": "HIGH", "low": "LOW", "close": "CLOSE", "volume": "VOLUME"},
    "letters": {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"},
    "vol": {"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Vol."},
    "price_is_close": {
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Price",
        "volume": "Vol",
    },
}


@pytest.mark.parametrize("names", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_load_csv_column_spellings_recognised(tmp_path, bars, names):
    path = _write_csv(
        tmp_path / "b.csv", bars, bars.index.strftime("%Y-%m-%d %H:%M"), "Date", names
    )
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_csv_adj_close_is_not_close(tmp_path, bars):
    frame = bars.rename(columns={"close": "Adj Close"})
    path = _write_csv(tmp_path / "b.csv", frame, bars.index.strftime("%Y-%m-%d %H:%M"))
    with pytest.raises(DataError, match="'Adj Close' is an adjusted price"):
        load(path)


def test_load_csv_adj_close_dropped_next_to_close(tmp_path, bars):
    frame = bars.assign(**{"Adj Close": bars["close"] * 0.5})
    path = _write_csv(tmp_path / "b.csv", frame, bars.index.strftime("%Y-%m-%d %H:%M"))
    pd.testing.assert_frame_equal(load(path), bars)
    kept = load(path, keep_extra=True)
    assert list(kept.columns)[-1] == "Adj Close"
    assert kept["close"].equals(bars["close"])


def test_load_csv_two_close_columns_is_ambiguous(tmp_path, bars):
    frame = bars.assign(Close=bars["close"])
    path = _write_csv(tmp_path / "b.csv", frame, bars.index.strftime("%Y-%m-%d %H:%M"))
    with pytest.raises(DataError, match="look like 'close'"):
        load(path)


def test_load_csv_gz_first_column_unnamed_time(tmp_path, bars):
    path = tmp_path / "b.csv.gz"
    with gzip.open(path, "wt") as fh:
        bars.to_csv(fh, index_label="")
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_csv_descending_file_reversed(tmp_path, bars):
    path = _write_csv(
        tmp_path / "b.csv", bars.iloc[::-1], bars.index[::-1].strftime("%Y-%m-%d %H:%M")
    )
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_csv_shuffled_file_raises_unsorted(tmp_path, bars):
    order = [0, 2, 1, *range(3, len(bars))]
    shuffled = bars.iloc[order]
    path = _write_csv(tmp_path / "b.csv", shuffled, shuffled.index.strftime("%Y-%m-%d %H:%M"))
    with pytest.raises(DataError, match="index is sorted"):
        load(path)


def test_load_csv_ambiguous_dates_refused(tmp_path, bars):
    day = bars.iloc[:3].set_axis(
        pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC", name="time")
    )
    path = _write_csv(tmp_path / "b.csv", day, ["01/02/2024", "01/03/2024", "01/04/2024"])
    with pytest.raises(DataError, match="'01/02/2024' at row 0 is not ISO 8601"):
        load(path)


def test_load_csv_nan_policy_passed_to_validate(tmp_path, bars):
    frame = bars.copy()
    frame.iloc[4, frame.columns.get_loc("volume")] = np.nan
    path = _write_csv(tmp_path / "b.csv", frame, bars.index.strftime("%Y-%m-%d %H:%M"))
    with pytest.raises(DataError, match="'volume' is NaN at 2024-01-01 00:04:00"):
        load(path)
    assert len(load(path, nan_policy="drop")) == len(bars) - 1
    with pytest.raises(ConfigError):
        load(path, nan_policy="zero")  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_load_parquet_round_trip(tmp_path, bars, suffix):
    path = tmp_path / f"b{suffix}"
    bars.to_parquet(path)
    pd.testing.assert_frame_equal(load(str(path)), bars)


def test_load_parquet_time_column_and_capitals(tmp_path, bars):
    path = tmp_path / "b.parquet"
    bars.rename(columns=str.title).reset_index().rename(columns={"time": "open_time"}).to_parquet(
        path
    )
    pd.testing.assert_frame_equal(load(path), bars)


def test_load_dataframe_source_recognises_columns(bars):
    raw = bars.rename(columns=str.upper).tz_localize(None)
    pd.testing.assert_frame_equal(load(raw), bars)


def test_load_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=f"no such file: {missing}"):
        load(missing)


def test_load_unknown_suffix_raises(tmp_path):
    path = tmp_path / "bars.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        load(path)


def test_load_csv_without_time_column_raises(tmp_path, bars):
    path = tmp_path / "b.csv"
    bars.to_csv(path, index=False)
    with pytest.raises(DataError, match="no time column"):
        load(path)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_load_sample_real_data_validated(name):
    out = load(f"sample:{name}")
    assert len(out) == 5031
    assert out.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert out.index[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    assert list(out.columns) == ["open", "high", "low", "close", "volume"]


def test_load_sample_sp500_golden_values():
    out = load("sample:sp500")
    first = out.iloc[0]
    assert first["open"] == pytest.approx(1229.229980, rel=1e-9)
    assert first["close"] == pytest.approx(1228.099976, rel=1e-9)
    assert first["volume"] == 877_000_000.0


def test_load_sample_nasdaq_zero_volume_allowed():
    out = load("sample:nasdaq")
    assert int((out["volume"] == 0).sum()) == 2


def test_load_unknown_sample_hints():
    with pytest.raises(DataError, match="did you mean 'sp500'"):
        load("sample:sp5000")


def test_samples_have_one_line_descriptions():
    assert set(SAMPLES) == {"sp500", "nasdaq"}
    assert all(desc and "\n" not in desc for desc in SAMPLES.values())


def test_load_fifo_raises_data_error_naming_path(tmp_path):
    fifo = tmp_path / "feed.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"feed\.csv is a named pipe \(FIFO\), not a CSV"):
        load(fifo)  # used to block for ever waiting for a writer


def test_load_character_device_raises_data_error_naming_path(tmp_path):
    link = tmp_path / "zeros.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"zeros\.csv is a character device"):
        load(link)  # used to read without bound
    with pytest.raises(DataError, match=r"/dev/zero is a character device"):
        load("/dev/zero")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n\n"])
def test_load_empty_or_blank_csv_raises_data_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.csv"):
        load(path)

"""celeris.data.funding: reading funding-rate CSV files (moved here from tests/llm/test_market.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.data import Store, load, load_funding
from celeris.data.funding import align_funding
from celeris.data.funding_schema import funding_interval, validate_funding
from celeris.errors import ConfigError, DataError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


FUNDING = """timestamp,rate
2024-01-01T00:00:00Z,0.0001
2024-01-01T08:00:00Z,0.00008
2024-01-01T16:00:00Z,-0.00002
2024-01-02T00:00:00Z,0.00004
"""


def test_load_funding_reads_iso_and_epoch_timestamps(tmp_path):
    iso = load_funding(write(tmp_path, "f.csv", FUNDING))
    epoch_text = "timestamp,rate\n" + "".join(
        f"{int(ts.timestamp() * 1000)},{rate!r}\n" for ts, rate in iso.items()
    )
    epoch = load_funding(write(tmp_path, "e.csv", epoch_text))
    assert str(iso.index.tz) == "UTC"
    assert iso.index.equals(epoch.index)
    np.testing.assert_array_equal(iso.to_numpy(), [1e-4, 8e-5, -2e-5, 4e-5])
    np.testing.assert_array_equal(epoch.to_numpy(), iso.to_numpy())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "2024-01-01T00:00:00Z,0.0001\n2024-01-01T08:00:00Z,nan\n",
            r"line 3: rate 'nan' is not a finite",
        ),
        (
            "2024-01-01T00:00:00Z,0.0001\n2024-01-01T08:00:00Z,\n",
            r"line 3: rate '' is not a finite",
        ),
        ("2024-01-01T00:00:00Z,0.0001\n2024-01-01T00:00:00Z,0.0002\n", r"line 3: .* duplicates"),
        (
            "2024-01-01T08:00:00Z,0.0001\n2024-01-01T00:00:00Z,0.0002\n",
            r"line 3: .* is earlier than",
        ),
        ("2024-01-01T00:00:00Z,0.0001\n01/02/2024,0.0002\n", r"line 3: timestamp '01/02/2024'"),
        ("2024-01-01T00:00:00Z,1.5\n", r"line 2: rate 1.5 is beyond \+-0.1 \(10%\)"),
        ("2024-01-01T00:00:00Z,-0.2\n", r"line 2: rate -0.2 is beyond \+-0.1 \(10%\)"),
    ],
)
def test_load_funding_bad_rows_raise_naming_file_and_line(tmp_path, body, message):
    path = write(tmp_path, "bad.csv", "timestamp,rate\n" + body)
    with pytest.raises(DataError, match=message) as info:
        load_funding(path)
    assert str(path) in str(info.value)


def test_load_funding_rate_bound_is_the_funding_frame_bound(tmp_path):
    # the CSV reader refuses exactly what validate_funding/align_funding refuse
    assert (
        load_funding(write(tmp_path, "ok.csv", "timestamp,rate\n2024-01-01,-0.1\n")).iloc[0] == -0.1
    )
    with pytest.raises(DataError, match=r"line 2: rate 0.5 is beyond \+-0.1"):
        load_funding(write(tmp_path, "big.csv", "timestamp,rate\n2024-01-01,0.5\n"))


def test_load_funding_wrong_columns_raise(tmp_path):
    with pytest.raises(DataError, match="exactly the columns timestamp,rate"):
        load_funding(write(tmp_path, "c.csv", "time,funding\n2024-01-01,0.0001\n"))


def test_load_funding_header_only_raises(tmp_path):
    with pytest.raises(DataError, match="no funding rows"):
        load_funding(write(tmp_path, "h.csv", "timestamp,rate\n"))


def test_load_funding_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="no such file") as info:
        load_funding(missing)
    assert str(missing) in str(info.value)


def test_load_funding_directory_or_fifo_raises_naming_what_it_is(tmp_path):
    import os

    fifo = tmp_path / "rates.fifo"
    os.mkfifo(fifo)  # read_csv on a FIFO would block until a writer comes
    for path, kind in ((tmp_path, "a directory"), (fifo, "a named pipe")):
        with pytest.raises(DataError, match="not a funding CSV file") as info:
            load_funding(path)
        assert str(path) in str(info.value) and kind in str(info.value)


# -- the funding frame, the store and align_funding ------------------------------------------

PERP = "BTC/USDT:USDT"


def funding_frame(times, rates, marks=None) -> pd.DataFrame:
    index = pd.DatetimeIndex(
        pd.to_datetime(times, utc=True, format="ISO8601"), name="time"
    ).as_unit("ns")
    frame = pd.DataFrame({"rate": rates}, index=index)
    if marks is not None:
        frame["mark_price"] = marks
    return frame


def test_store_save_funding_merges_new_rows_over_old_and_reads_a_range(celeris_home):
    store = Store()
    store.save_funding(
        funding_frame(["2024-01-01 00:00", "2024-01-01 08:00"], [1e-4, 2e-4], [40000.0, 40100.0]),
        "binance",
        PERP,
    )
    path = store.save_funding(
        funding_frame(["2024-01-01 08:00", "2024-01-01 16:00"], [3e-4, -1e-4]), "binance", PERP
    )
    assert path == celeris_home / "data" / "binance" / "BTC-USDT:USDT" / "funding.parquet"
    stored = store.read_funding("binance", PERP)
    assert list(stored.columns) == ["rate", "mark_price"]
    np.testing.assert_array_equal(stored["rate"], [1e-4, 3e-4, -1e-4])
    # the new 08:00 row has no mark price: the stored one is kept
    np.testing.assert_array_equal(stored["mark_price"], [40000.0, 40100.0, np.nan])
    part = store.read_funding("binance", "btc-usdt:usdt", "2024-01-01 08:00", "2024-01-01 16:00")
    assert list(part.index) == [pd.Timestamp("2024-01-01 08:00", tz="UTC")]
    assert store.funding_bounds("binance", PERP) == (
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-01 16:00", tz="UTC"),
    )
    listing = store.list()
    assert listing[["symbol", "timeframe", "rows"]].values.tolist() == [[PERP, "funding", 3]]


def test_store_save_funding_without_mark_price_keeps_the_stored_mark_prices(celeris_home):
    store = Store()
    times = ["2024-01-01 00:00", "2024-01-01 08:00", "2024-01-01 16:00"]
    store.save_funding(
        funding_frame(times, [1e-4, 2e-4, 3e-4], [40000.0, 40100.0, 40200.0]), "binance", PERP
    )
    # a Series of rates, a frame without mark_price, a frame with a NaN mark price
    store.save_funding(funding_frame(times[:1], [5e-4])["rate"], "binance", PERP)
    store.save_funding(funding_frame(times[1:2], [6e-4]), "binance", PERP)
    store.save_funding(funding_frame(times[2:], [7e-4], [np.nan]), "binance", PERP)
    stored = store.read_funding("binance", PERP)
    np.testing.assert_array_equal(stored["rate"], [5e-4, 6e-4, 7e-4])
    np.testing.assert_array_equal(stored["mark_price"], [40000.0, 40100.0, 40200.0])
    # a known new mark price still wins
    store.save_funding(funding_frame(times[:1], [8e-4], [39999.0]), "binance", PERP)
    np.testing.assert_array_equal(
        store.read_funding("binance", PERP)["mark_price"], [39999.0, 40100.0, 40200.0]
    )


def test_store_save_funding_bad_rate_raises_and_writes_nothing(celeris_home):
    bad = funding_frame(["2024-01-01 00:00", "2024-01-01 08:00"], [1e-4, np.nan])
    with pytest.raises(
        DataError, match=r"funding of binance BTC/USDT:USDT: rate at 2024-01-01 08:00:00\+00:00"
    ):
        Store().save_funding(bad, "binance", PERP)
    assert not Store().funding_path("binance", PERP).exists()


def test_store_bars_key_funding_points_to_the_funding_readers(celeris_home):
    with pytest.raises(
        ConfigError, match=r"funding rates are not bars; read them with load_funding"
    ):
        Store().read("binance", PERP, "funding")
    with pytest.raises(ConfigError, match=r"load_funding\('store:binance/BTC/USDT:USDT/funding'\)"):
        load("store:binance/BTC/USDT:USDT/funding")


def test_load_funding_store_source_must_end_in_funding(celeris_home):
    with pytest.raises(DataError, match=r"bad funding source 'store:binance/BTC/USDT:USDT/1h'"):
        load_funding("store:binance/BTC/USDT:USDT/1h")


def test_load_funding_store_source_reads_the_rates(celeris_home):
    Store().save_funding(
        funding_frame(["2024-01-01", "2024-01-01 08:00"], [1e-4, 2e-4]), "okx", PERP
    )
    rates = load_funding("store:okx/BTC/USDT:USDT/funding")
    assert rates.name == "rate" and rates.index.name == "time"
    np.testing.assert_array_equal(rates, [1e-4, 2e-4])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            funding_frame(["2024-01-01 08:00", "2024-01-01 08:00"], [1e-4, 1e-4]),
            r"funding time 2024-01-01 08:00:00\+00:00 duplicates",
        ),
        (
            funding_frame(["2024-01-01 08:00", "2024-01-01 00:00"], [1e-4, 1e-4]),
            r"funding time 2024-01-01 00:00:00\+00:00 is earlier than",
        ),
        (
            funding_frame(["2024-01-01"], [0.2]),
            r"rate at 2024-01-01 00:00:00\+00:00 is 0.2, beyond",
        ),
        (funding_frame(["2024-01-01"], [np.inf]), r"rate at .* is inf, not a finite"),
        (funding_frame(["2024-01-01"], [1e-4], [0.0]), r"mark_price at .* is 0.0"),
        (
            funding_frame(["2024-01-01"], [1e-4]).assign(volume=1.0),
            r"funding has the column rate and optionally mark_price; found rate, volume",
        ),
        (
            funding_frame(["2024-01-01"], [1e-4]).tz_convert("Europe/Paris"),
            r"funding needs a UTC DatetimeIndex, got tz Europe/Paris",
        ),
    ],
)
def test_validate_funding_bad_frames_raise_naming_rule_and_time(frame, message):
    with pytest.raises(DataError, match=r"^src: " + message):
        validate_funding(frame, "src")


def test_funding_interval_is_the_most_common_spacing():
    hours = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 08:00", "2024-01-01 16:00"], utc=True)
    more = hours.append(pd.to_datetime(["2024-01-02 00:00", "2024-01-02 04:00"], utc=True))
    assert funding_interval(pd.DatetimeIndex(more)) == pd.Timedelta(hours=8)
    tie = pd.DatetimeIndex(
        pd.to_datetime(["2024-01-01 00:00", "2024-01-01 08:00", "2024-01-01 12:00"], utc=True)
    )
    assert funding_interval(tie) == pd.Timedelta(hours=4)
    assert funding_interval(tie[:1]) is None


def hourly(n: int = 24, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="1h", tz="UTC", name="time")


def test_align_funding_puts_rates_on_their_bars_and_zero_elsewhere():
    rates = funding_frame(
        ["2024-01-01 00:00", "2024-01-01 08:00", "2024-01-01 16:00"], [1e-4, -2e-4, 3e-4]
    )
    aligned = align_funding(rates["rate"], hourly())
    assert aligned.name == "rate" and aligned.index.equals(hourly())
    expected = np.zeros(24)
    expected[[0, 8, 16]] = [1e-4, -2e-4, 3e-4]
    np.testing.assert_array_equal(aligned, expected)


def test_align_funding_frame_keeps_mark_price_nan_between_funding_times():
    frame = funding_frame(["2024-01-01 02:00", "2024-01-01 03:00"], [1e-4, 2e-4], [100.0, np.nan])
    aligned = align_funding(frame, hourly(5))
    np.testing.assert_array_equal(aligned["rate"], [0.0, 0.0, 1e-4, 2e-4, 0.0])
    np.testing.assert_array_equal(aligned["mark_price"], [np.nan, np.nan, 100.0, np.nan, np.nan])


def test_align_funding_time_between_bars_raises_naming_it():
    daily = pd.date_range("2024-01-01", periods=3, freq="1D", tz="UTC", name="time")
    rates = funding_frame(["2024-01-01 00:00", "2024-01-01 08:00"], [1e-4, 1e-4])["rate"]
    with pytest.raises(
        DataError,
        match=r"funding time 2024-01-01 08:00:00\+00:00 falls between the bars at "
        r"2024-01-01 00:00:00\+00:00 and 2024-01-02 00:00:00\+00:00",
    ):
        align_funding(rates, daily)


@pytest.mark.parametrize("when", ["2023-12-31 16:00", "2024-01-02 00:00"])
def test_align_funding_time_outside_the_bars_raises_naming_it(when):
    rates = funding_frame([when], [1e-4])["rate"]
    with pytest.raises(DataError, match=rf"funding time {when}:00\+00:00 is outside the bars"):
        align_funding(rates, hourly())


def test_align_funding_bars_not_utc_or_unsorted_raise():
    rates = funding_frame(["2024-01-01"], [1e-4])["rate"]
    with pytest.raises(DataError, match="UTC DatetimeIndex"):
        align_funding(rates, hourly().tz_localize(None))
    with pytest.raises(DataError, match=r"bar time 2024-01-01 00:00:00\+00:00 is not after"):
        align_funding(rates, hourly()[[1, 0, 2]])


def test_align_funding_no_funding_gives_zeros():
    empty = funding_frame([], [])["rate"]
    np.testing.assert_array_equal(align_funding(empty, hourly(3)), [0.0, 0.0, 0.0])

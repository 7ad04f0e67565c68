"""Store: layout, merge semantics, DuckDB range reads, listing, atomic writes."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import celeris.data.store as store_mod
from celeris.data import Store, load
from celeris.errors import ConfigError, DataError, StoreError


def test_store_path_layout_under_celeris_home(celeris_home):
    path = Store().path("Binance", "btc/usdt", "1h")
    assert path == celeris_home / "data" / "binance" / "BTC-USDT" / "1h.parquet"


def test_store_default_home_is_dot_celeris(monkeypatch, tmp_path):
    monkeypatch.delenv("CELERIS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Store().root == tmp_path / ".celeris" / "data"


def test_store_save_then_read_round_trip(celeris_home, make_bars):
    bars = make_bars(100)
    bars.index.freq = None
    path = Store().save(bars, "binance", "BTC/USDT", "1m")
    assert path.is_file()
    pd.testing.assert_frame_equal(Store().read("binance", "BTC/USDT", "1m"), bars)


def test_store_merge_union_new_rows_win(celeris_home, make_bars):
    bars = make_bars(100)
    bars.index.freq = None
    store = Store()
    store.save(bars.iloc[:60], "binance", "BTC/USDT", "1m")
    newer = bars.iloc[50:].copy()
    newer["volume"] = 123.0
    store.save(newer, "binance", "BTC/USDT", "1m")
    out = store.read("binance", "BTC/USDT", "1m")
    assert len(out) == 100 and out.index.is_unique and out.index.is_monotonic_increasing
    assert (out["volume"].iloc[50:] == 123.0).all()
    pd.testing.assert_series_equal(out["volume"].iloc[:50], bars["volume"].iloc[:50])


def test_store_merge_older_rows_prepended(celeris_home, make_bars):
    bars = make_bars(100)
    bars.index.freq = None
    store = Store()
    store.save(bars.iloc[50:], "binance", "BTC/USDT", "1m")
    store.save(bars.iloc[:50], "binance", "BTC/USDT", "1m")
    pd.testing.assert_frame_equal(store.read("binance", "BTC/USDT", "1m"), bars)


def test_store_read_time_range_half_open(celeris_home, make_bars):
    bars = make_bars(120)
    store = Store()
    store.save(bars, "binance", "BTC/USDT", "1m")
    out = store.read("binance", "BTC/USDT", "1m", start="2024-01-01 00:30", end="2024-01-01 01:00")
    assert len(out) == 30
    assert out.index[0] == pd.Timestamp("2024-01-01 00:30", tz="UTC")
    assert out.index[-1] == pd.Timestamp("2024-01-01 00:59", tz="UTC")
    tail = store.read("binance", "BTC/USDT", "1m", start=pd.Timestamp("2024-01-01 01:50", tz="UTC"))
    assert len(tail) == 10
    head = store.read("binance", "BTC/USDT", "1m", end="2024-01-01T00:10:00+00:00")
    assert len(head) == 10


def test_store_read_range_with_offset_converted(celeris_home, make_bars):
    Store().save(make_bars(120), "binance", "BTC/USDT", "1m")
    out = Store().read("binance", "BTC/USDT", "1m", start="2024-01-01T01:30:00+01:00")
    assert out.index[0] == pd.Timestamp("2024-01-01 00:30", tz="UTC")


def test_store_read_empty_range_returns_empty_frame(celeris_home, make_bars):
    Store().save(make_bars(10), "binance", "BTC/USDT", "1m")
    out = Store().read("binance", "BTC/USDT", "1m", start="2030-01-01")
    assert out.empty and list(out.columns) == ["open", "high", "low", "close", "volume"]


def test_store_read_missing_key_raises_store_error_listing_keys(celeris_home, make_bars):
    Store().save(make_bars(10), "binance", "BTC/USDT", "1m")
    with pytest.raises(StoreError, match="stored: binance BTC/USDT 1m"):
        Store().read("binance", "ETH/USDT", "1m")


def test_store_read_start_after_end_raises(celeris_home, make_bars):
    Store().save(make_bars(10), "binance", "BTC/USDT", "1m")
    with pytest.raises(ConfigError, match="before end"):
        Store().read("binance", "BTC/USDT", "1m", start="2024-02-01", end="2024-01-01")


def test_store_list_reports_rows_bounds_and_missing(celeris_home, make_bars):
    store = Store()
    assert store.list().empty
    bars = make_bars(100)
    store.save(bars.drop(bars.index[10:15]), "binance", "BTC/USDT", "1m")
    store.save(make_bars(5, freq="1h"), "kraken", "ETH/USD", "1h")
    listing = store.list().set_index(["exchange", "symbol", "timeframe"])
    row = listing.loc[("binance", "BTC/USDT", "1m")]
    assert row["rows"] == 95 and row["missing"] == 5
    assert row["first"] == bars.index[0] and row["last"] == bars.index[-1]
    assert listing.loc[("kraken", "ETH/USD", "1h")]["rows"] == 5


def test_store_save_failing_writer_leaves_old_file_intact(celeris_home, make_bars, monkeypatch):
    bars = make_bars(50)
    store = Store()
    path = store.save(bars.iloc[:20], "binance", "BTC/USDT", "1m")
    before = path.read_bytes()

    def broken_writer(frame, target, meta):
        with open(target, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_parquet", broken_writer)
    with pytest.raises(StoreError, match=r"disk full; the previous file is unchanged"):
        store.save(bars.iloc[20:], "binance", "BTC/USDT", "1m")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["1m.parquet", "1m.parquet.lock"]
    assert len(store.read("binance", "BTC/USDT", "1m")) == 20


def test_store_save_interrupted_leaves_old_file_intact(celeris_home, make_bars, monkeypatch):
    store = Store()
    path = store.save(make_bars(20), "binance", "BTC/USDT", "1m")
    before = path.read_bytes()

    def interrupted(frame, target, meta):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_write_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save(make_bars(30), "binance", "BTC/USDT", "1m")
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["1m.parquet", "1m.parquet.lock"]


def test_store_save_refuses_invalid_bars_and_extra_columns(celeris_home, make_bars):
    with pytest.raises(DataError, match="tz-naive"):
        Store().save(make_bars(5).tz_localize(None), "binance", "BTC/USDT", "1m")
    with pytest.raises(DataError, match="extra column"):
        Store().save(make_bars(5).assign(trades=1), "binance", "BTC/USDT", "1m")


@pytest.mark.parametrize(
    ("exchange", "symbol", "timeframe"),
    [("../etc", "BTC/USDT", "1m"), ("binance", "../../x", "1m"), ("binance", "BTC/USDT", "1 hour")],
)
def test_store_bad_key_raises_config_error(celeris_home, exchange, symbol, timeframe):
    with pytest.raises(ConfigError):
        Store().path(exchange, symbol, timeframe)


def test_store_load_source_reads_store(celeris_home, make_bars):
    bars = make_bars(30)
    bars.index.freq = None
    Store().save(bars, "binance", "BTC/USDT", "1m")
    pd.testing.assert_frame_equal(load("store:binance/BTC/USDT/1m"), bars)
    pd.testing.assert_frame_equal(load("store:binance/BTC-USDT/1m"), bars)
    with pytest.raises(DataError, match="store:EXCHANGE/SYMBOL/TIMEFRAME"):
        load("store:binance")


def test_store_save_sweeps_killed_writers_temp_files(celeris_home, make_bars):
    import subprocess
    import sys

    from celeris.data import atomic

    store = Store()
    path = store.save(make_bars(20), "binance", "BTC/USDT", "1m")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    leftover = path.parent / f".1m.parquet.tmp-{dead.pid}-{atomic._host_tag()}-abcdef"
    leftover.write_bytes(b"PAR1 half a file of a writer that was killed")
    live = path.parent / atomic.temp_name("1m.parquet")  # a writer of this process, mid-write
    live.write_bytes(b"PAR1 being written")
    store.save(make_bars(30), "binance", "BTC/USDT", "1m")
    assert not leftover.exists()
    assert live.exists()


def test_store_save_keeps_users_files_with_temp_like_names(celeris_home, make_bars):
    import os
    import time

    store = Store()
    path = store.save(make_bars(20), "binance", "BTC/USDT", "1m")
    old = time.time() - 2 * 86400  # older than any sweep's age limit
    users = [path.parent / n for n in (".1m.parquet.tmp-notes", ".1m.parquet.backup.tmp")]
    for user in users:
        user.write_bytes(b"the user's own file")
        os.utime(user, (old, old))
    store.save(make_bars(30), "binance", "BTC/USDT", "1m")
    assert all(user.exists() for user in users)

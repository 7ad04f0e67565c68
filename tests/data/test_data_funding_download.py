"""download_funding(): ccxt against a local server speaking Binance's USDⓈ-M funding-rate API."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import ccxt
import numpy as np
import pandas as pd
import pytest

import celeris.data.exchange as exchange_mod
from celeris.data import RetryPolicy, Store, load_funding
from celeris.data.funding import align_funding
from celeris.data.funding_download import download_funding
from celeris.errors import CelerisTypeError, ConfigError, ExchangeError, StoreError
from tests.data.fake_binance import HOUR, T0, FakeBinance, binance_client, serve

PERP = "BTC/USDT:USDT"
EIGHT_HOURS = 8 * HOUR


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    fake = FakeBinance()
    with serve(fake) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def exchange(fake):
    return binance_client(fake.url, types=("spot", "linear"))


@pytest.fixture(autouse=True)
def instant_backoff(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(exchange_mod, "_sleep", waits.append)
    return waits


def at(i: int, step: int = EIGHT_HOURS) -> pd.Timestamp:
    return pd.Timestamp(T0 + i * step, unit="ms", tz="UTC")


def test_download_funding_paginates_over_several_pages(celeris_home, fake, exchange):
    funding = download_funding(exchange, PERP, at(0), at(90), limit=40, progress=False)
    starts = [int(r["startTime"]) for r in fake.funding_requests]
    # pages of 40, 40 and 10 records, then an empty page moves past until (40 hours)
    assert starts == [
        T0,
        T0 + 39 * EIGHT_HOURS + 1,
        T0 + 79 * EIGHT_HOURS + 1,
        T0 + 89 * EIGHT_HOURS + 1,
    ]
    assert {r["symbol"] for r in fake.funding_requests} == {"BTCUSDT"}
    assert {r["limit"] for r in fake.funding_requests} == {"40"}
    assert funding.index.equals(pd.DatetimeIndex([at(i) for i in range(90)], name="time"))
    assert list(funding.columns) == ["rate", "mark_price"]
    np.testing.assert_allclose(funding["rate"], [1e-4 + i * 1e-6 for i in range(90)], rtol=1e-12)
    np.testing.assert_array_equal(funding["mark_price"], [40000.0 + i for i in range(90)])
    assert funding.attrs["interval"] == pd.Timedelta(hours=8)
    assert funding.attrs["gaps"] == [] and funding.attrs["fetched"] == 90
    stored = Store().read_funding("binance", PERP)
    pd.testing.assert_frame_equal(stored, funding, check_freq=False)


def test_download_funding_retries_after_429(celeris_home, fake, exchange, instant_backoff):
    fake.fail_with_429 = 2
    funding = download_funding(
        exchange,
        PERP,
        at(0),
        at(10),
        progress=False,
        retry=RetryPolicy(max_retries=3, backoff=0.5),
    )
    assert len(funding) == 10
    assert instant_backoff == [0.5, 1.0]
    assert [int(r["startTime"]) for r in fake.funding_requests[:3]] == [T0] * 3


def test_download_funding_gives_up_after_bounded_retries_and_stores_nothing(
    celeris_home, fake, exchange
):
    fake.fail_with_429 = 10
    with pytest.raises(ExchangeError, match=r"fetch_funding_rate_history.*failed 3 times"):
        download_funding(exchange, PERP, at(0), at(10), progress=False, retry=RetryPolicy(2, 0.1))
    assert not Store().funding_path("binance", PERP).exists()


def test_download_funding_spot_symbol_raises_naming_the_perp(celeris_home, fake, exchange):
    with pytest.raises(
        ConfigError,
        match=r"^binance BTC/USDT is a spot market and pays no funding; .* use 'BTC/USDT:USDT'",
    ):
        download_funding(exchange, "BTC/USDT", at(0), at(10), progress=False)
    assert fake.funding_requests == []


def test_download_funding_exchange_without_funding_history_raises_before_any_request():
    with pytest.raises(
        ConfigError, match=r"^kraken has no funding-rate history in ccxt.*'BTC/USD'"
    ):
        download_funding(ccxt.kraken(), "BTC/USD", "2024-01-01", "2024-01-02", progress=False)


def test_download_funding_unknown_symbol_raises_with_hint(celeris_home, fake, exchange):
    with pytest.raises(
        ConfigError, match=r"no market 'BTC/USDT:USDC'.*did you mean 'BTC/USDT:USDT'"
    ):
        download_funding(exchange, "BTC/USDT:USDC", at(0), at(10), progress=False)


def test_download_funding_updates_the_store_incrementally(celeris_home, fake, exchange):
    download_funding(exchange, PERP, at(10), at(30), progress=False)
    assert Store().funding_bounds("binance", PERP) == (at(10), at(29))
    fake.funding_requests.clear()
    funding = download_funding(exchange, PERP, at(0), at(90), progress=False)
    starts = [int(r["startTime"]) for r in fake.funding_requests]
    # only before the first stored time (from T0) and after the last one, up to an empty page
    assert starts == [T0, T0 + 29 * EIGHT_HOURS + 1, T0 + 89 * EIGHT_HOURS + 1]
    assert funding.attrs["fetched"] == 10 + 60 and len(funding) == 90
    fake.funding_requests.clear()
    again = download_funding(exchange, PERP, at(0), at(90), progress=False)
    assert [int(r["startTime"]) for r in fake.funding_requests] == [T0 + 89 * EIGHT_HOURS + 1]
    assert again.attrs["fetched"] == 0
    pd.testing.assert_frame_equal(again, funding)


def test_download_funding_request_apart_from_the_store_keeps_it_contiguous(
    celeris_home, fake, exchange
):
    download_funding(exchange, PERP, at(10), at(30), progress=False)
    later = download_funding(exchange, PERP, at(50), at(60), progress=False)
    assert len(later) == 10
    # the hole at(30)..at(49) was fetched with it: the store is one stretch
    assert Store().funding_bounds("binance", PERP) == (at(10), at(59))
    assert len(Store().read_funding("binance", PERP)) == 50
    download_funding(exchange, PERP, at(0), at(5), progress=False)
    assert len(Store().read_funding("binance", PERP)) == 60
    funding = download_funding(exchange, PERP, at(0), at(90), progress=False)
    assert len(funding) == 90 and funding.attrs["gaps"] == []
    assert funding.index.equals(pd.DatetimeIndex([at(i) for i in range(90)], name="time"))


def test_download_funding_jittered_times_are_rounded_to_the_second_and_align(
    celeris_home, fake, exchange
):
    # Binance's fundingTime may be a few ms off the hour: 08:00:00.005, 15:59:59.997
    fake.jitter_ms = {i: (-3 if i % 2 else 5) for i in range(90)}
    funding = download_funding(exchange, PERP, at(0), at(90), limit=40, progress=False)
    expected = pd.DatetimeIndex([at(i) for i in range(90)], name="time")
    assert funding.index.equals(expected) and funding.attrs["gaps"] == []
    assert Store().funding_bounds("binance", PERP) == (at(0), at(89))
    bars = pd.date_range(at(0), at(89), freq="1h", name="time")
    aligned = align_funding(funding["rate"], bars)
    assert (aligned != 0).sum() == 90
    fake.funding_requests.clear()
    again = download_funding(exchange, PERP, at(0), at(90), progress=False)
    assert again.attrs["fetched"] == 0
    pd.testing.assert_frame_equal(again, funding)


def test_download_funding_reports_and_logs_gaps(celeris_home, exchange, fake, caplog):
    fake.funding_offsets = [i for i in range(30) if i not in (12, 13)]
    with caplog.at_level(logging.WARNING, logger="celeris.data"):
        funding = download_funding(exchange, PERP, at(0), at(30), progress=False)
    (gap,) = funding.attrs["gaps"]
    assert (gap.start, gap.end, gap.missing) == (at(12), at(13), 2)
    assert (
        "binance BTC/USDT:USDT funding every 8h: 1 gap(s), 2 missing funding times, "
        "first at 2024-01-05 00:00:00+00:00"
    ) in caplog.text


def test_download_funding_infers_a_four_hour_interval(celeris_home, exchange, fake):
    fake.funding_step = 4 * HOUR
    funding = download_funding(exchange, PERP, at(0), at(30, 4 * HOUR), progress=False)
    assert len(funding) == 30 and funding.attrs["interval"] == pd.Timedelta(hours=4)
    assert funding.attrs["gaps"] == []


def test_download_funding_missing_mark_price_is_nan(celeris_home, exchange, fake):
    fake.no_mark = {0, 1}
    funding = download_funding(exchange, PERP, at(0), at(4), store=False, progress=False)
    np.testing.assert_array_equal(funding["mark_price"], [np.nan, np.nan, 40002.0, 40003.0])


def test_download_funding_insane_rate_raises_and_stores_nothing(celeris_home, exchange, fake):
    fake.bad_rate = {5: "0.5"}
    with pytest.raises(
        ExchangeError,
        match=r"bad funding: binance BTC/USDT:USDT: rate at 2024-01-02 16:00:00\+00:00 is 0.5",
    ):
        download_funding(exchange, PERP, at(0), at(10), progress=False)
    assert not Store().funding_path("binance", PERP).exists()


def test_download_funding_without_store_writes_nothing(celeris_home, exchange, fake):
    funding = download_funding(exchange, PERP, at(3), at(6), store=False, progress=False)
    assert list(funding.index) == [at(3), at(4), at(5)]
    assert not (celeris_home / "data").exists()


def test_download_funding_empty_range_raises(celeris_home, exchange, fake):
    with pytest.raises(ExchangeError, match="binance has no funding rates for BTC/USDT:USDT"):
        download_funding(exchange, PERP, at(200), at(210), progress=False)


def test_download_funding_bad_arguments_raise(celeris_home, exchange):
    with pytest.raises(ConfigError, match="must be before until"):
        download_funding(exchange, PERP, at(5), at(1), progress=False)
    with pytest.raises(CelerisTypeError, match=r"^limit must be an int >= 1, got bool True$"):
        download_funding(exchange, PERP, at(0), at(5), limit=True, progress=False)


def test_download_funding_with_progress_bar_runs(celeris_home, exchange, capsys):
    funding = download_funding(exchange, PERP, at(0), at(5), progress=True)
    assert len(funding) == 5
    assert "binance BTC/USDT:USDT funding" in capsys.readouterr().err


def test_load_funding_reads_the_downloaded_store(celeris_home, exchange):
    funding = download_funding(exchange, PERP, at(0), at(20), progress=False)
    rates = load_funding("store:binance/BTC/USDT:USDT/funding")
    pd.testing.assert_series_equal(rates, funding["rate"], check_freq=False)
    same = load_funding("store:binance/BTC-USDT:USDT/funding")  # the folder spelling
    pd.testing.assert_series_equal(same, rates)
    with pytest.raises(StoreError, match=r"no funding rates stored for binance ETH/USDT:USDT"):
        load_funding("store:binance/ETH/USDT:USDT/funding")

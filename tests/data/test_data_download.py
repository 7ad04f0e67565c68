"""download(): ccxt against a real local HTTP server speaking Binance's public REST API."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import ccxt
import numpy as np
import pandas as pd
import pytest

import celeris.data.exchange as exchange_mod
from celeris.data import RetryPolicy, Store, download
from celeris.errors import CelerisTypeError, ConfigError, ExchangeError
from tests.data.fake_binance import MINUTE, T0, FakeBinance, binance_client, serve


@pytest.fixture
def server() -> Iterator[tuple[FakeBinance, str]]:
    fake = FakeBinance()
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def fake(server):
    return server[0]


@pytest.fixture
def make_exchange(server):
    def make() -> ccxt.binance:
        return binance_client(server[1])

    return make


@pytest.fixture(autouse=True)
def instant_backoff(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(exchange_mod, "_sleep", waits.append)
    return waits


def _until(n: int) -> pd.Timestamp:
    return pd.Timestamp(T0 + n * MINUTE, unit="ms", tz="UTC")


def test_download_paginates_over_several_pages(celeris_home, fake, make_exchange):
    bars = download(
        make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(250), limit=100, progress=False
    )
    assert len(bars) == 250
    assert len(fake.requests) == 3
    assert [int(r["startTime"]) for r in fake.requests] == [
        T0,
        T0 + 100 * MINUTE,
        T0 + 200 * MINUTE,
    ]
    assert bars.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert bars["open"].iloc[123] == pytest.approx(223.0)
    assert bars.attrs["fetched"] == 250 and bars.attrs["gaps"] == []


def test_download_make_exchange_with_exchange_url_reaches_the_local_server(celeris_home, server):
    fake, url = server
    ex = exchange_mod.make_exchange("binance", exchange_url=url)
    assert ex.urls["api"]["public"] == f"{url}/api.binance.com/api/v3"
    bars = download(ex, "BTC/USDT", "1m", "2024-01-01", _until(5), store=False, progress=False)
    assert len(bars) == 5 and len(fake.requests) == 1


def test_download_make_exchange_bad_exchange_url_raises_config_error():
    with pytest.raises(ConfigError, match="bad exchange URL 'localhost:9000'"):
        exchange_mod.make_exchange("binance", exchange_url="localhost:9000")


def test_download_stores_and_resumes_with_only_new_bars(celeris_home, fake, make_exchange):
    download(
        make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(150), limit=100, progress=False
    )
    assert len(Store().read("binance", "BTC/USDT", "1m")) == 150
    fake.requests.clear()
    bars = download(
        make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(250), limit=100, progress=False
    )
    assert [int(r["startTime"]) for r in fake.requests] == [T0 + 150 * MINUTE]
    assert bars.attrs["fetched"] == 100
    assert len(bars) == 250 and bars.index.is_unique
    fake.requests.clear()
    again = download(make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(250), progress=False)
    assert fake.requests == [] and again.attrs["fetched"] == 0
    pd.testing.assert_frame_equal(again, bars)


def test_download_request_apart_from_the_store_keeps_it_contiguous(
    celeris_home, fake, make_exchange
):
    download(make_exchange(), "BTC/USDT", "1m", _until(10), _until(30), progress=False)
    later = download(make_exchange(), "BTC/USDT", "1m", _until(50), _until(60), progress=False)
    assert len(later) == 10
    # the hole 30..49 was fetched with it: the store is one stretch
    assert Store().bounds("binance", "BTC/USDT", "1m") == (_until(10), _until(59))
    assert len(Store().read("binance", "BTC/USDT", "1m")) == 50
    download(make_exchange(), "BTC/USDT", "1m", _until(0), _until(5), progress=False)
    assert len(Store().read("binance", "BTC/USDT", "1m")) == 60
    bars = download(make_exchange(), "BTC/USDT", "1m", _until(0), _until(90), progress=False)
    assert len(bars) == 90 and bars.attrs["gaps"] == []


def test_download_reports_and_logs_gaps(celeris_home, fake, make_exchange, caplog):
    fake.times = fake.times[(fake.times < T0 + 40 * MINUTE) | (fake.times >= T0 + 43 * MINUTE)]
    with caplog.at_level(logging.WARNING, logger="celeris.data"):
        bars = download(
            make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(100), progress=False
        )
    assert len(bars) == 97
    (gap,) = bars.attrs["gaps"]
    assert gap.start == pd.Timestamp("2024-01-01 00:40", tz="UTC")
    assert gap.end == pd.Timestamp("2024-01-01 00:42", tz="UTC")
    assert gap.missing == 3
    assert "1 gap(s), 3 missing bars" in caplog.text
    assert Store().list()["missing"].tolist() == [3]


def test_download_retries_after_429(celeris_home, fake, make_exchange, instant_backoff):
    fake.fail_with_429 = 2
    bars = download(
        make_exchange(),
        "BTC/USDT",
        "1m",
        "2024-01-01",
        _until(50),
        progress=False,
        retry=RetryPolicy(max_retries=3, backoff=0.5),
    )
    assert len(bars) == 50
    assert len(fake.requests) == 3
    assert instant_backoff == [0.5, 1.0]


def test_download_gives_up_after_bounded_retries(
    celeris_home, fake, make_exchange, instant_backoff
):
    fake.fail_with_429 = 10
    with pytest.raises(
        ExchangeError, match=r"failed 3 times, last with (RateLimitExceeded|DDoSProtection)"
    ):
        download(
            make_exchange(),
            "BTC/USDT",
            "1m",
            "2024-01-01",
            _until(50),
            progress=False,
            retry=RetryPolicy(max_retries=2, backoff=0.1),
        )
    assert len(fake.requests) == 3
    assert not Store().exists("binance", "BTC/USDT", "1m")


def test_download_without_store_returns_bars_and_writes_nothing(celeris_home, fake, make_exchange):
    bars = download(
        make_exchange(), "BTC/USDT", "1m", _until(10), _until(20), store=False, progress=False
    )
    assert len(bars) == 10 and bars.index[0] == _until(10)
    assert not (celeris_home / "data").exists()


def test_download_checkpoints_save_partial_progress(celeris_home, fake, make_exchange, monkeypatch):
    calls = {"n": 0}
    original = ccxt.binance.fetch_ohlcv

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ccxt.ExchangeError("boom")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ccxt.binance, "fetch_ohlcv", flaky)
    with pytest.raises(ExchangeError, match="boom"):
        download(
            make_exchange(),
            "BTC/USDT",
            "1m",
            "2024-01-01",
            _until(250),
            limit=50,
            checkpoint=50,
            progress=False,
        )
    assert len(Store().read("binance", "BTC/USDT", "1m")) == 100


def test_download_interrupted_before_the_stored_bars_leaves_no_hole(
    celeris_home, fake, make_exchange, monkeypatch
):
    download(make_exchange(), "BTC/USDT", "1m", _until(100), _until(150), progress=False)
    calls = {"n": 0}
    original = ccxt.binance.fetch_ohlcv

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ccxt.ExchangeError("boom")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ccxt.binance, "fetch_ohlcv", flaky)
    with pytest.raises(ExchangeError, match="boom"):
        download(
            make_exchange(),
            "BTC/USDT",
            "1m",
            _until(0),
            _until(150),
            limit=20,
            checkpoint=20,
            progress=False,
        )
    # a checkpoint of bars 0..39 would leave a hole before bar 100 that no later call fills
    assert Store().bounds("binance", "BTC/USDT", "1m") == (_until(100), _until(149))
    bars = download(make_exchange(), "BTC/USDT", "1m", _until(0), _until(150), progress=False)
    assert len(bars) == 150 and bars.attrs["gaps"] == []


def test_download_with_progress_bar_runs(celeris_home, fake, make_exchange, capsys):
    bars = download(make_exchange(), "BTC/USDT", "1m", "2024-01-01", _until(30), progress=True)
    assert len(bars) == 30
    assert "binance BTC/USDT 1m" in capsys.readouterr().err


def test_download_since_not_before_until_raises(celeris_home, make_exchange):
    with pytest.raises(ConfigError, match="must be before until"):
        download(make_exchange(), "BTC/USDT", "1m", "2024-02-01", "2024-01-01", progress=False)


@pytest.mark.parametrize(
    ("paging", "error", "message"),
    [
        ({"limit": 2.0}, CelerisTypeError, r"^limit must be an int >= 1, got float 2\.0$"),
        ({"limit": True}, CelerisTypeError, r"^limit must be an int >= 1, got bool True$"),
        ({"limit": 0}, ConfigError, r"^limit must be >= 1, got 0$"),
        ({"checkpoint": True}, CelerisTypeError, r"^checkpoint must be an int >= 1, got bool"),
        ({"checkpoint": "5"}, CelerisTypeError, r"^checkpoint must be an int >= 1, got str"),
        ({"checkpoint": 0}, ConfigError, r"^checkpoint must be >= 1, got 0$"),
    ],
)
def test_download_bad_limit_or_checkpoint_raises_one_type_per_mistake(
    celeris_home, make_exchange, paging, error, message
):
    with pytest.raises(error, match=message):
        download(
            make_exchange(), "BTC/USDT", "1m", "2024-01-01", "2024-01-02", progress=False, **paging
        )


def test_download_unknown_exchange_raises_with_hint():
    with pytest.raises(ConfigError, match="did you mean 'binance'"):
        download("binanse", "BTC/USDT", "1m", "2024-01-01", "2024-01-02", progress=False)


def test_download_unknown_symbol_and_timeframe_raise(celeris_home, make_exchange):
    with pytest.raises(ConfigError, match="no market 'ETH/USDT'"):
        download(make_exchange(), "ETH/USDT", "1m", "2024-01-01", "2024-01-02", progress=False)
    with pytest.raises(ConfigError, match="no timeframe '7m'"):
        download(make_exchange(), "BTC/USDT", "7m", "2024-01-01", "2024-01-02", progress=False)


def test_download_created_exchange_has_rate_limiter_on():
    ex = exchange_mod.make_exchange("binance")
    assert ex.enableRateLimit is True and ex.rateLimit > 0


def test_retry_policy_unknown_field_wrong_type_and_frozen():
    with pytest.raises(
        ConfigError, match=r"unknown retry setting 'max_retry' \(did you mean 'max_retries'\?\)"
    ):
        RetryPolicy(max_retry=3)  # type: ignore[call-arg]
    with pytest.raises(CelerisTypeError, match="max_retries"):
        RetryPolicy(max_retries=True)
    with pytest.raises(CelerisTypeError, match="max_retries"):
        RetryPolicy(max_retries=2.0)
    with pytest.raises(ConfigError, match="backoff"):
        RetryPolicy(backoff=-1.0)
    with pytest.raises(ConfigError, match="backoff"):
        RetryPolicy(backoff=float("nan"))
    policy = RetryPolicy(np.int64(2), 0.5, math.inf)  # positional, numpy int, no cap
    assert policy == RetryPolicy(max_retries=2, backoff=0.5, max_backoff=math.inf)
    assert [policy.delay(k) for k in range(3)] == [0.5, 1.0, 2.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_retries = 9  # type: ignore[misc]

"""MarketStream against the fake Binance through ccxt: closed bars, faults, fallback, errors."""

from __future__ import annotations

import pandas as pd
import pytest

from celeris.data.exchange import RetryPolicy
from celeris.errors import ConfigError, ExchangeError
from celeris.live.market import STAT_NAMES, MarketStream, redirect_exchange
from celeris.testing.fake_exchange import FakeExchange
from tests.live.conftest import SYMBOLS, collect, open_stream, run, wait_until


def assert_exchange_bars(fake: FakeExchange, got: dict[str, pd.DataFrame]) -> None:
    """Each symbol's frame equals the fake's closed bars at the same times, bit for bit."""
    for symbol, frame in got.items():
        assert frame.index.is_monotonic_increasing and frame.index.is_unique
        expected = fake.bars(symbol).loc[frame.index]
        pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_freq=False)


def test_market_start_history_is_the_last_closed_bars_without_the_forming_one(fake):
    async def body():
        stream, history = await open_stream(fake, history=25)
        await stream.close()
        return history

    history = run(body())
    for symbol in SYMBOLS:
        pd.testing.assert_frame_equal(
            history[symbol], fake.bars(symbol).iloc[-25:], check_freq=False
        )
        assert history[symbol].index[-1] + pd.Timedelta("1min") == pd.Timestamp(
            fake.now_ms, unit="ms", tz="UTC"
        )


def test_market_next_closed_each_bar_once_in_order_from_the_websocket(fake):
    async def body():
        stream, history = await open_stream(fake)
        assert await stream.next_closed(0.05) == {}  # nothing closed yet
        frames = []
        for _ in range(3):
            await fake.advance_async(1)
            frames.append(await collect(stream, 1))
        stats = stream.stats()
        await stream.close()
        return history, frames, stats

    history, frames, stats = run(body())
    for symbol in SYMBOLS:
        got = pd.concat([f[symbol] for f in frames])
        assert got.index[0] == history[symbol].index[-1] + pd.Timedelta("1min")
        assert_exchange_bars(fake, {symbol: got})
    assert stats["bars"] == 6 and stats["backfilled"] == 0 and stats["reconnects"] == 0
    assert stats["ws_messages"] == 12  # one update and one final per bar and symbol
    assert set(stats) == set(STAT_NAMES)


def test_market_disconnect_reconnects_and_backfills_missed_bars_before_new_ones(fake):
    async def body():
        stream, _ = await open_stream(fake)
        connections = fake.ws_connections
        fake.disconnect()
        fake.advance(3)  # closed while nobody listens: never pushed
        missed = await collect(stream, 3)
        await wait_until(
            "the reconnection",
            lambda: fake.ws_connections > connections and all(fake.subscribers(s) for s in SYMBOLS),
        )
        await fake.advance_async(1)
        after = await collect(stream, 1)
        stats = stream.stats()
        await stream.close()
        return missed, after, stats

    missed, after, stats = run(body())
    assert_exchange_bars(fake, missed)
    assert_exchange_bars(fake, after)
    for symbol in SYMBOLS:
        assert after[symbol].index[0] == missed[symbol].index[-1] + pd.Timedelta("1min")
    assert stats["reconnects"] >= 1 and stats["backfilled"] == 6 and stats["bars"] == 8


def test_market_gap_in_the_stream_is_backfilled_over_rest(fake):
    async def body():
        stream, _ = await open_stream(fake)
        fake.gap("BTC/USDT", k=2)  # the update and the final of BTC's next bar
        await fake.advance_async(2)
        got = await collect(stream, 2)
        stats = stream.stats()
        await stream.close()
        return got, stats

    got, stats = run(body())
    assert_exchange_bars(fake, got)
    assert stats["backfilled"] == 1 and stats["bars"] == 4 and stats["missing"] == 0


def test_market_duplicate_closed_bar_is_dropped_and_counted(fake):
    async def body():
        stream, _ = await open_stream(fake)
        fake.duplicate("ETH/USDT", k=1)
        await fake.advance_async(2)
        got = await collect(stream, 2)
        assert await stream.next_closed(0.05) == {}
        stats = stream.stats()
        await stream.close()
        return got, stats

    got, stats = run(body())
    assert_exchange_bars(fake, got)
    assert stats["duplicates"] == 1 and stats["bars"] == 4


def test_market_late_out_of_order_bar_counted_and_never_returned_out_of_order(fake):
    async def body():
        stream, _ = await open_stream(fake)
        fake.late("BTC/USDT", k=1)  # its next final comes after the following bar's final
        await fake.advance_async(2)
        got = await collect(stream, 2)
        assert await stream.next_closed(0.05) == {}
        stats = stream.stats()
        await stream.close()
        return got, stats

    got, stats = run(body())
    assert_exchange_bars(fake, got)  # in order, the late bar where it belongs
    assert stats["out_of_order"] == 1 and stats["bars"] == 4
    # the late final came either before the bar was due (kept) or after a REST back-fill
    # returned it (dropped as late): never both, never neither
    assert stats["late"] + (1 - stats["backfilled"]) == 1


def test_market_stall_reported_by_stale_then_recovers_with_backfill(fake):
    async def body():
        stream, _ = await open_stream(fake, stale_after=3)
        fake.stall()
        await fake.advance_async(2)
        assert await stream.next_closed(0.05) == {}
        not_yet = stream.stale(now_ms=fake.now_ms)
        await fake.advance_async(2)
        stale = stream.stale(now_ms=fake.now_ms)
        stale_stats = stream.stats()
        fake.stall(False)
        await fake.advance_async(1)
        got = await collect(stream, 5)
        fresh = stream.stale(now_ms=fake.now_ms)
        stats = stream.stats()
        await stream.close()
        return not_yet, stale, stale_stats, got, fresh, stats

    not_yet, stale, stale_stats, got, fresh, stats = run(body())
    assert not_yet == [] and stale == list(SYMBOLS) and fresh == []
    assert stale_stats["stale_symbols"] == 2 and stale_stats["stale_events"] == 2
    assert_exchange_bars(fake, got)
    assert stats["backfilled"] == 8 and stats["stale_symbols"] == 0


def test_market_overdue_bar_fetched_over_rest_when_the_stream_is_quiet(fake, monkeypatch):
    import celeris.live.market as market

    async def body():
        stream, _ = await open_stream(fake, poll_interval_s=0.05)
        await fake.advance_async(1)
        await collect(stream, 1)  # the stream's clock now stands at the fake's
        fake.stall()  # an open connection that says nothing
        await fake.advance_async(2)
        quiet = await stream.next_closed(0.2)  # not overdue by the exchange's clock yet
        wall = market._monotonic()
        monkeypatch.setattr(market, "_monotonic", lambda: wall + 150.0)  # 2.5 bars later
        got = await collect(stream, 2)
        stats = stream.stats()
        await stream.close()
        return quiet, got, stats

    quiet, got, stats = run(body())
    assert quiet == {}
    assert_exchange_bars(fake, got)
    assert stats["backfilled"] == 4 and stats["rest_polls"] == 1 and stats["reconnects"] == 0


def test_market_exchange_clock_follows_the_stream_event_times(fake):
    async def body():
        stream, _ = await open_stream(fake)
        await fake.advance_async(1)
        await collect(stream, 1)
        now = stream.exchange_now_ms()
        await stream.close()
        return now

    now = run(body())
    # the last final's event time is the bar's close; wall time since is far below a bar
    assert fake.now_ms <= now < fake.now_ms + 60_000


def test_market_auto_falls_back_to_rest_polling_when_the_websocket_is_down(fake):
    fake.websocket_down()

    async def body():
        stream, _ = await open_stream(fake, subscribed=False, ws_failures=2, poll_interval_s=0.01)
        await wait_until("the fallback to REST", lambda: stream.mode == "rest")
        await fake.advance_async(2)
        got = await collect(stream, 2)
        stats = stream.stats()
        await stream.close()
        return got, stats

    got, stats = run(body())
    assert_exchange_bars(fake, got)
    assert stats["fallbacks"] == 1 and stats["reconnects"] == 2 and stats["rest_polls"] >= 1
    assert stats["ws_messages"] == 0 and fake.ws_connections == 0 and stats["ws_restored"] == 0


def test_market_auto_returns_to_the_websocket_once_it_is_back(fake):
    fake.websocket_down()

    async def body():
        stream, _ = await open_stream(
            fake, subscribed=False, ws_failures=1, ws_retry_s=0.05, poll_interval_s=0.01
        )
        await wait_until("the fallback to REST", lambda: stream.mode == "rest")
        await fake.advance_async(1)
        by_rest = await collect(stream, 1)
        fake.websocket_down(False)
        await wait_until("the subscription", lambda: all(fake.subscribers(s) for s in SYMBOLS))
        await fake.advance_async(1)  # the first bar over the websocket again (or over REST)
        await wait_until("the websocket", lambda: stream.mode == "ws")
        between = await collect(stream, 1)
        polls = stream.stats()["rest_polls"]
        await fake.advance_async(2)
        by_ws = await collect(stream, 2)
        stats = stream.stats()
        await stream.close()
        return by_rest, between, by_ws, polls, stats

    by_rest, between, by_ws, polls, stats = run(body())
    for got in (by_rest, between, by_ws):
        assert_exchange_bars(fake, got)
    for symbol in SYMBOLS:
        times = [f[symbol].index for f in (by_rest, between, by_ws)]
        assert (
            times[0]
            .append(times[1])
            .append(times[2])
            .to_series()
            .diff()
            .dropna()
            .eq(pd.Timedelta("1min"))
            .all()
        )
    assert stats["fallbacks"] == 1 and stats["ws_restored"] == 1
    # no polling once the websocket is back: at most the one catch-up poll of the restoration
    # (every 10 ms otherwise)
    assert stats["rest_polls"] <= polls + 1
    assert stats["ws_messages"] >= 8  # the last two bars of both symbols came over it


def test_market_transport_rest_never_opens_a_websocket(fake):
    async def body():
        stream, _ = await open_stream(
            fake, subscribed=False, transport="rest", poll_interval_s=0.01
        )
        await fake.advance_async(3)
        got = await collect(stream, 3)
        stats = stream.stats()
        await stream.close()
        return got, stats

    got, stats = run(body())
    assert_exchange_bars(fake, got)
    assert fake.ws_connections == 0 and stats["fallbacks"] == 0 and stats["rest_polls"] >= 1


def test_market_transport_ws_does_not_fall_back(fake):
    fake.websocket_down()

    async def body():
        stream, _ = await open_stream(fake, subscribed=False, transport="ws", ws_failures=1)
        await wait_until("two websocket failures", lambda: stream.stats()["reconnects"] >= 2)
        mode = stream.mode
        await stream.close()
        return mode

    assert run(body()) == "ws"


def test_market_without_a_closed_flag_a_newer_bar_closes_and_rest_gives_its_values(
    fake, monkeypatch
):
    # an exchange whose kline messages carry no "x": only ccxt's candles are seen
    monkeypatch.setattr(MarketStream, "_on_message", lambda self, message: None)

    async def body():
        stream, _ = await open_stream(fake)
        await fake.advance_async(2)  # the second bar's update says the first one closed
        first = await collect(stream, 1)
        await fake.advance_async(1)
        second = await collect(stream, 1)
        stats = stream.stats()
        await stream.close()
        return first, second, stats

    first, second, stats = run(body())
    assert_exchange_bars(fake, first)
    assert_exchange_bars(fake, second)
    for symbol in SYMBOLS:
        assert second[symbol].index[0] == first[symbol].index[0] + pd.Timedelta("1min")
    assert stats["backfilled"] == 4 and stats["ws_messages"] > 0


def test_market_many_symbols_one_connection_every_bar_once():
    symbols = [f"C{i:02d}/USDT" for i in range(40)]
    with FakeExchange(symbols, "1m", history=20, n_bars=40) as fake:

        async def body():
            stream, _ = await open_stream(fake, symbols)
            await fake.advance_async(3)
            got = await collect(stream, 3, symbols)
            stats = stream.stats()
            await stream.close()
            return got, stats

        got, stats = run(body())
        assert_exchange_bars(fake, got)
        assert fake.ws_connections == 1 and stats["bars"] == 120 and stats["backfilled"] == 0


def test_market_rest_failures_exhausted_raise_exchange_error(fake):
    fake.fail_rest(10)

    async def body():
        stream = MarketStream(
            "binance", ["BTC/USDT"], "1m", exchange_url=fake.url, retry=RetryPolicy(1, 0.0, 0.0)
        )
        await stream.start()

    with pytest.raises(ExchangeError, match=r"fetch_time failed 2 times, last with .*429"):
        run(body())


def test_market_rest_failure_retried_within_the_policy(fake):
    fake.fail_rest(2)

    async def body():
        stream, history = await open_stream(fake, retry=RetryPolicy(3, 0.0, 0.0))
        await stream.close()
        return history

    assert len(run(body())["BTC/USDT"]) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exchange": "binanse"}, r"unknown exchange 'binanse' \(did you mean 'binance'\?\)"),
        ({"symbols": ["BTC/USDTT"]}, r"no market 'BTC/USDTT' \(did you mean 'BTC/USDT'\?\)"),
        ({"timeframe": "7m"}, r"no timeframe '7m'"),
        ({"exchange_url": "ftp://x"}, r"bad exchange URL 'ftp://x'"),
        ({"transport": "websocket"}, r"unknown transport 'websocket'"),
        ({"symbols": "BTC/USDT"}, r"non-empty list"),
        ({"symbols": ["BTC/USDT", "BTC/USDT"]}, r"listed twice"),
        ({"symbols": ["BTC/USDT", "BTC/USDT:USDT"]}, r"same market id 'BTCUSDT'"),
        ({"history": 0}, r"history"),
    ],
)
def test_market_bad_configuration_raises_config_error_naming_it(fake, kwargs, message):
    args = {
        "exchange": "binance",
        "symbols": ["BTC/USDT"],
        "timeframe": "1m",
        "exchange_url": fake.url,
    }
    args.update(kwargs)

    async def body():
        stream = MarketStream(
            args.pop("exchange"), args.pop("symbols"), args.pop("timeframe"), **args
        )
        await stream.start()

    with pytest.raises(ConfigError, match=message):
        run(body())


def test_market_next_closed_before_start_raises_config_error():
    stream = MarketStream("binance", ["BTC/USDT"], "1m")
    with pytest.raises(ConfigError, match="start"):
        run(stream.next_closed(0.01))


def test_market_redirect_keeps_hosts_as_path_and_websocket_scheme():
    import ccxt.pro

    ex = ccxt.pro.binance()
    redirect_exchange(ex, "http://127.0.0.1:9000/")
    api = ex.urls["api"]
    assert api["public"] == "http://127.0.0.1:9000/api.binance.com/api/v3"
    assert api["fapiPublic"] == "http://127.0.0.1:9000/fapi.binance.com/fapi/v1"
    assert api["ws"]["spot"] == "ws://127.0.0.1:9000/stream.binance.com/ws"
    assert api["ws"]["linear"] == "ws://127.0.0.1:9000/fstream.binance.com/ws"
    sandbox = ccxt.pro.binance()
    redirect_exchange(sandbox, "sandbox")
    assert sandbox.urls["api"]["public"] == sandbox.urls["test"]["public"]
    assert "testnet" in sandbox.urls["api"]["ws"]["spot"]
    run(ex.close())
    run(sandbox.close())


def test_market_backfill_of_a_hole_the_stream_filled_meanwhile_fetches_nothing():
    # _collect finds the holes of every symbol, then back-fills them concurrently: by the time a
    # symbol's turn comes its bars may have arrived (it raised IndexError on the empty list)
    from celeris.live.market import _Symbol

    stream = MarketStream("binance", ["BTC/USDT"], "1m")
    st = _Symbol("BTC/USDT", "BTCUSDT", last=0, pending={60_000: (1.0, 1.0, 1.0, 1.0, 1.0)})

    async def fetch(*args: object) -> dict:
        raise AssertionError("nothing is missing: no request")

    stream._fetch = fetch  # type: ignore[method-assign]
    run(stream._backfill(st, 120_000))
    assert stream.stats()["missing"] == 0

"""The fake Binance on the wire: kline messages, subscriptions, REST answers, faults, funding."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import aiohttp
import ccxt
import pandas as pd
import pytest

from celeris.errors import ConfigError
from celeris.live.market import redirect_exchange
from celeris.testing.fake_exchange import FakeExchange

KLINE_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}


@pytest.fixture(scope="module")
def fake():
    with FakeExchange(["BTC/USDT", "ETH/USDT"], "1m", history=30, n_bars=200) as exchange:
        yield exchange


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def receive(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))
    return out


async def silent(ws: aiohttp.ClientWebSocketResponse) -> bool:
    try:
        await asyncio.wait_for(ws.receive(), 0.1)
    except TimeoutError:
        return True
    return False


def with_socket(fake: FakeExchange, body, path: str = "/stream.binance.com/ws/0"):
    async def main():
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(fake.url.replace("http", "ws") + path) as ws,
        ):
            await ws.send_str(
                json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7})
            )
            assert await receive(ws, 1) == [{"result": None, "id": 7}]
            return await body(ws)

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_fake_exchange_kline_messages_in_binance_format_update_then_final(fake):
    async def body(ws):
        await fake.advance_async(1)
        return await receive(ws, 2)

    update, final = with_socket(fake, body)
    bar = fake.bars("BTC/USDT").iloc[-1]
    t = int(bar.name.value // 1_000_000)
    for msg in (update, final):
        assert msg["e"] == "kline" and msg["s"] == "BTCUSDT" and set(msg["k"]) == KLINE_KEYS
        assert msg["k"]["t"] == t and msg["k"]["T"] == t + 59_999 and msg["k"]["i"] == "1m"
    assert update["k"]["x"] is False and update["E"] < final["E"] == t + 60_000
    assert final["k"]["x"] is True
    assert [float(final["k"][c]) for c in "ohlcv"] == [
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
    ]
    assert final["k"]["o"] == f"{bar.open:.8f}"  # Binance's fixed 8 decimals


def test_fake_exchange_only_subscribed_streams_and_list_subscriptions(fake):
    async def body(ws):
        await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        listed = await receive(ws, 1)
        await fake.advance_async(1)
        msgs = await receive(ws, 2)
        await ws.send_str(
            json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 9})
        )
        unsub = await receive(ws, 1)
        await fake.advance_async(1)
        return listed, msgs, unsub, await silent(ws)

    listed, msgs, unsub, quiet = with_socket(fake, body)
    assert listed == [{"result": ["btcusdt@kline_1m"], "id": 8}]
    assert {m["s"] for m in msgs} == {"BTCUSDT"}  # ETHUSDT was not subscribed
    assert unsub == [{"result": None, "id": 9}] and quiet


@pytest.mark.parametrize("fault", ["duplicate", "late", "gap", "stall"])
def test_fake_exchange_fault_changes_the_messages_sent(fake, fault):
    async def body(ws):
        if fault == "duplicate":
            fake.duplicate("BTC/USDT")
            await fake.advance_async(1)
            return await receive(ws, 3)
        if fault == "late":
            fake.late("BTC/USDT")
            await fake.advance_async(2)
            return await receive(ws, 4)
        if fault == "gap":
            fake.gap("BTC/USDT", k=3)
            await fake.advance_async(2)
            return await receive(ws, 1)
        fake.stall()
        try:
            await fake.advance_async(1)
            return await silent(ws)
        finally:
            fake.stall(False)

    got = with_socket(fake, body)
    if fault == "duplicate":
        assert [m["k"]["x"] for m in got] == [False, True, True] and got[1] == got[2]
    elif fault == "late":
        t = [(m["k"]["t"], m["k"]["x"]) for m in got]
        first, second = t[0][0], t[0][0] + 60_000
        assert t == [(first, False), (second, False), (second, True), (first, True)]
    elif fault == "gap":
        assert got[0]["k"]["x"] is True  # the final of the second bar, all before it skipped
        assert got[0]["k"]["t"] == int(fake.bars("BTC/USDT").index[-1].value // 1_000_000)
    else:
        assert got is True


def test_fake_exchange_disconnect_and_websocket_down(fake):
    async def body(ws):
        assert fake.disconnect() == 1
        msg = await asyncio.wait_for(ws.receive(), 10)
        return msg.type

    assert with_socket(fake, body) in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    fake.websocket_down()
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError, match="503"):
            with_socket(fake, body)
    finally:
        fake.websocket_down(False)


def test_fake_exchange_rest_klines_end_with_the_forming_bar(fake):
    status, rows = get(
        f"{fake.url}/api.binance.com/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=4"
    )
    assert status == 200 and len(rows) == 4
    closed = fake.bars("ETH/USDT").iloc[-3:]
    assert [r[0] for r in rows[:3]] == [int(t.value // 1_000_000) for t in closed.index]
    assert [float(x) for x in rows[2][1:6]] == list(closed.iloc[-1])
    forming = rows[3]
    assert forming[0] == fake.now_ms and forming[1] == forming[4] and float(forming[5]) == 0.0
    start = rows[0][0]
    _, paged = get(f"{fake.url}/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={start}&limit=2")
    assert [r[0] for r in paged] == [start, start + 60_000]
    assert get(f"{fake.url}/api/v3/time") == (200, {"serverTime": fake.now_ms})


@pytest.mark.parametrize(
    ("query", "code"),
    [("symbol=XYZUSDT&interval=1m", -1121), ("symbol=BTCUSDT&interval=5m", -1120)],
)
def test_fake_exchange_rest_bad_request_binance_error(fake, query, code):
    status, body = get(f"{fake.url}/api/v3/klines?{query}")
    assert status == 400 and body["code"] == code


def test_fake_exchange_funding_through_ccxt(fake):
    ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["linear"]}}})
    redirect_exchange(ex, fake.url)
    rate = ex.fetch_funding_rate("BTC/USDT:USDT")
    rates = ex.fetch_funding_rates()
    history = ex.fetch_funding_rate_history("ETH/USDT:USDT", since=0)
    assert rate["fundingRate"] == pytest.approx(1e-4) and rate["symbol"] == "BTC/USDT:USDT"
    assert set(rates) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert [h["timestamp"] for h in history] == [
        int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
    ]


def test_fake_exchange_rest_failures_answer_429(fake):
    fake.fail_rest(1)
    assert get(f"{fake.url}/api/v3/time")[0] == 429
    assert get(f"{fake.url}/api/v3/time")[0] == 200


def test_fake_exchange_bad_setup_and_use_raise_config_error(fake):
    bars = fake.bars("BTC/USDT")
    with pytest.raises(ConfigError, match="not spaced by 1m"):
        FakeExchange(["BTC/USDT"], "1m", bars={"BTC/USDT": bars.iloc[[0, 2, 3]]})
    with pytest.raises(ConfigError, match="no bars given for symbol 'ETH/USDT'"):
        FakeExchange(["BTC/USDT", "ETH/USDT"], "1m", bars={"BTC/USDT": bars})
    with pytest.raises(ConfigError, match="history=5 leaves no bar"):
        FakeExchange(["BTC/USDT"], "1m", bars={"BTC/USDT": bars.iloc[:5]}, history=5)
    with pytest.raises(ConfigError, match=r"runs past the data \(\d+ bars left\)"):
        fake.advance(10_000)
    with pytest.raises(ConfigError, match="has no symbol 'DOGE/USDT'"):
        fake.gap("DOGE/USDT")
    with pytest.raises(ConfigError, match="not running"):
        _ = FakeExchange(["BTC/USDT"], "1m", n_bars=10, history=2).url


def test_fake_exchange_given_bars_are_served_as_given():
    bars = FakeExchange(["BTC/USDT"], "1m", n_bars=20, history=2)._markets["BTCUSDT"]
    frame = pd.DataFrame(
        bars.ohlcv,
        columns=["open", "high", "low", "close", "volume"],
        index=pd.DatetimeIndex(
            pd.to_datetime(bars.times, unit="ms", utc=True), name="time"
        ).as_unit("ns"),
    )
    with FakeExchange(["BTC/USDT"], "1m", bars={"BTC/USDT": frame}, history=10) as fake:
        fake.advance(3)
        pd.testing.assert_frame_equal(fake.bars("BTC/USDT"), frame.iloc[:13], check_freq=False)

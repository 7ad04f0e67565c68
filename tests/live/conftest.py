"""Fixtures of the live tests: a fake Binance (celeris.testing.fake_exchange) and helpers that
drive a MarketStream against it through ccxt, failing clearly instead of waiting forever."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pandas as pd
import pytest

from celeris.live.market import MarketStream
from celeris.testing.fake_exchange import FakeExchange

T = TypeVar("T")
SYMBOLS = ("BTC/USDT", "ETH/USDT")
WAIT_S = 10.0  # the longest any helper waits before failing the test


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    """A fake Binance with two symbols of 1m bars, 60 closed, one kline update per bar."""
    with FakeExchange(SYMBOLS, "1m", history=60, n_bars=400) as exchange:
        yield exchange


def run(coro: Awaitable[T], timeout_s: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop; fail the test after ``timeout_s``."""

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(coro, timeout_s)
        except TimeoutError:
            pytest.fail(f"the test's coroutine ran past {timeout_s} s")

    return asyncio.run(bounded())


async def wait_until(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.005)


async def open_stream(
    fake: FakeExchange, symbols: Sequence[str] = SYMBOLS, *, subscribed: bool = True, **kwargs: Any
) -> tuple[MarketStream, dict[str, pd.DataFrame]]:
    """Start a stream on ``fake``; with ``subscribed``, return once every symbol is subscribed
    to the fake's websocket."""
    kwargs.setdefault("history", 10)
    stream = MarketStream("binance", list(symbols), "1m", exchange_url=fake.url, **kwargs)
    history = await stream.start()
    if subscribed:
        await wait_until(
            "the websocket subscription", lambda: all(fake.subscribers(s) for s in symbols)
        )
    return stream, history


async def collect(
    stream: MarketStream, n: int, symbols: Sequence[str] = SYMBOLS, timeout_s: float = WAIT_S
) -> dict[str, pd.DataFrame]:
    """Call next_closed until each symbol has ``n`` new bars (exactly: more fails the test)."""
    got: dict[str, list[pd.DataFrame]] = {s: [] for s in symbols}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while any(sum(map(len, got[s])) < n for s in symbols):
        remaining = deadline - loop.time()
        if remaining <= 0:
            have = {s: sum(map(len, f)) for s, f in got.items()}
            pytest.fail(f"timed out after {timeout_s} s waiting for {n} bars per symbol: {have}")
        for symbol, frame in (await stream.next_closed(remaining)).items():
            got[symbol].append(frame)
    out = {s: pd.concat(f) for s, f in got.items()}
    for s, frame in out.items():
        assert len(frame) == n, f"{s}: {len(frame)} bars returned, expected {n}"
    return out

"""Latency of MarketStream against the local fake Binance: from ``advance`` (the bar closes on the
exchange) to ``next_closed`` returning it, through ccxt's websocket, for 1 and 100 symbols.

    python benchmarks/bench_market.py [--bars 200] [--symbols 1 100]

Reports, per symbol count, the median and p99 of: the first ``next_closed`` return after each
bar close, the return that completes every symbol's bar, the time from the last closed-bar
message's arrival at the stream to that return (the client's own share: the fake runs in the
same process and competes for the GIL), and how many calls that took.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from celeris.live.market import MarketStream
from celeris.testing.fake_exchange import FakeExchange


async def measure(fake: FakeExchange, symbols: list[str], bars: int) -> dict[str, float]:
    stream = MarketStream("binance", symbols, "1m", exchange_url=fake.url, history=5)
    await stream.start()
    while not all(fake.subscribers(s) for s in symbols):
        await asyncio.sleep(0.01)
    first, full, calls, client = [], [], [], []
    arrived: list[float] = []  # when the stream saw each closed-bar message (perf_counter)
    observe = stream._on_message

    def on_message(message: dict) -> None:
        if message.get("k", {}).get("x"):
            arrived.append(time.perf_counter())
        observe(message)

    stream._on_message = on_message  # type: ignore[method-assign]
    for _ in range(bars):
        arrived.clear()
        t0 = time.perf_counter()
        await fake.advance_async(1)
        seen: set[str] = set()
        n = 0
        while len(seen) < len(symbols):
            out = await stream.next_closed(10.0)
            if not out:
                raise RuntimeError("no bar within 10 s")
            n += 1
            if n == 1:
                first.append(time.perf_counter() - t0)
            seen.update(out)
        done = time.perf_counter()
        full.append(done - t0)
        client.append(done - arrived[-1])
        calls.append(n)
    stats = stream.stats()
    await stream.close()
    assert stats["backfilled"] == 0 and stats["bars"] == bars * len(symbols), stats
    ms = lambda xs, q: float(np.percentile(np.asarray(xs) * 1e3, q))  # noqa: E731
    return {
        "first_p50_ms": ms(first, 50),
        "first_p99_ms": ms(first, 99),
        "all_p50_ms": ms(full, 50),
        "all_p99_ms": ms(full, 99),
        "last_message_to_all_p50_ms": ms(client, 50),
        "last_message_to_all_p99_ms": ms(client, 99),
        "calls_p50": float(np.median(calls)),
        "calls_max": float(max(calls)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=200)
    parser.add_argument("--symbols", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    for n in args.symbols:
        symbols = [f"C{i:03d}/USDT" for i in range(n)]
        with FakeExchange(symbols, "1m", history=10, n_bars=args.bars + 20) as fake:
            result = asyncio.run(measure(fake, symbols, args.bars))
        print(
            f"{n} symbols, {args.bars} bars: "
            + ", ".join(f"{k}={v:.2f}" for k, v in result.items())
        )


if __name__ == "__main__":
    main()

"""``celeris exchange fake``: a local exchange speaking Binance's protocol, for offline runs.

The server is :class:`celeris.testing.fake_exchange.FakeExchange`; this command paces its clock
(in real time by default, ``--speed`` bars per second otherwise) until Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer

from celeris.cli._common import cli_errors, command_group, console
from celeris.errors import ConfigError

SymbolsOpt = Annotated[
    str, typer.Option("--symbols", help="Comma-separated unified symbols, e.g. BTC/USDT,ETH/USDT.")
]
TimeframeOpt = Annotated[str, typer.Option("--timeframe", help="The kline interval served.")]
PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).")]
SpeedOpt = Annotated[
    float | None,
    typer.Option(
        "--speed",
        help="Bars closed per second of wall time (default: real time, one bar per timeframe).",
        show_default=False,
    ),
]
HistoryOpt = Annotated[int, typer.Option("--history", help="Bars already closed at start.")]
BarsOpt = Annotated[int, typer.Option("--bars", help="Bars to close before the data runs out.")]


def register(app: typer.Typer) -> None:
    """Add ``celeris exchange fake`` to the top-level app."""
    group = command_group(app, "exchange", "Local stand-ins for exchanges (offline runs, tests).")
    group.command("fake")(fake_cmd)


@cli_errors
def fake_cmd(
    symbols: SymbolsOpt = "BTC/USDT",
    timeframe: TimeframeOpt = "1m",
    port: PortOpt = 9000,
    speed: SpeedOpt = None,
    history: HistoryOpt = 1000,
    bars: BarsOpt = 100_000,
) -> None:
    """Serve a fake Binance (REST and kline websocket) on 127.0.0.1 over synthetic bars.

    Point ccxt, or celeris live, at it with --exchange-url http://127.0.0.1:PORT.
    Example: celeris exchange fake --symbols BTC/USDT,ETH/USDT --timeframe 1m --port 9000 --speed 2
    """
    serve_fake(symbols, timeframe, port=port, speed=speed, history=history, bars=bars)


def serve_fake(
    symbols: str,
    timeframe: str,
    *,
    port: int,
    speed: float | None,
    history: int,
    bars: int,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the fake exchange until ``stop`` is set (or Ctrl-C); ``on_ready(url)`` once serving."""
    import pandas as pd

    from celeris.data.timeframes import timeframe_to_timedelta
    from celeris.testing.fake_exchange import FakeExchange

    names = [s.strip() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols is empty; give e.g. BTC/USDT,ETH/USDT")
    if speed is not None and not speed > 0:
        raise ConfigError(f"--speed must be above 0 bars per second, got {speed}")
    tf_s = timeframe_to_timedelta(timeframe).total_seconds()
    # the clock starts now: the bar forming at start is the one forming on the wall clock
    now = time.time()
    forming = now // tf_s * tf_s
    start = forming - history * tf_s
    fake = FakeExchange(
        names,
        timeframe,
        history=history,
        n_bars=history + bars + 1,
        start=pd.Timestamp(int(start), unit="s", tz="UTC"),
        port=port,
    )
    with fake:
        rate = speed if speed is not None else 1.0 / tf_s
        first = 1.0 / rate if speed is not None else forming + tf_s - now
        fake.pace(rate, first_delay_s=first)
        pace = f"{speed:g} bars/s" if speed is not None else "real time"
        console.print(
            f"fake binance at {fake.url}: {', '.join(names)} {timeframe}, {history} bars closed, "
            f"{pace}; use --exchange-url {fake.url} (Ctrl-C stops)",
            highlight=False,
        )
        if on_ready is not None:
            on_ready(fake.url)
        waiter = stop if stop is not None else threading.Event()
        while not waiter.wait(0.5):
            pass

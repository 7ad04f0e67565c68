"""`celeris exchange fake`: serves a Binance ccxt can read, paced by the wall clock; bad input is
one line and exit 2."""

from __future__ import annotations

import threading
import time

import ccxt
import pytest
from typer.testing import CliRunner

from celeris.cli.exchange_cmd import serve_fake
from celeris.cli.main import app
from celeris.live.market import redirect_exchange

runner = CliRunner()


def test_exchange_fake_serves_bars_up_to_the_wall_clock_through_ccxt():
    stop, ready = threading.Event(), threading.Event()
    urls: list[str] = []

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(
        target=serve_fake,
        args=("BTC/USDT,ETH/USDT", "1m"),
        kwargs={
            "port": 0,
            "speed": None,
            "history": 50,
            "bars": 10,
            "stop": stop,
            "on_ready": on_ready,
        },
        daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(30), "the fake exchange did not start within 30 s"
        ex = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
        redirect_exchange(ex, urls[0])
        now_ms = int(time.time() * 1000)
        server_ms = ex.fetch_time()
        bars = ex.fetch_ohlcv("ETH/USDT", "1m", limit=5)
    finally:
        stop.set()
        thread.join(30)
    # real time: the clock is the open of the bar forming on the wall clock
    assert server_ms == now_ms // 60_000 * 60_000 or server_ms == (now_ms // 60_000 - 1) * 60_000
    # the forming bar last (a minute boundary may pass between the two requests)
    last = bars[-1][0]
    assert last in (server_ms, server_ms + 60_000)
    assert [b[0] for b in bars] == [last - i * 60_000 for i in range(4, -1, -1)]
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", ""], "--symbols is empty"),
        (["--speed", "0"], "--speed must be above 0"),
        (["--timeframe", "1x"], "bad timeframe '1x'"),
        (["--symbols", "BTCUSDT"], "not unified like 'BTC/USDT'"),
    ],
)
def test_exchange_fake_bad_option_one_line_exit_2(args, message):
    result = runner.invoke(app, ["exchange", "fake", "--port", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1

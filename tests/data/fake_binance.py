"""A local HTTP server speaking the slice of Binance's public REST API that ccxt's downloads use.

Spot (``/api/v3/exchangeInfo``, ``/api/v3/klines``) and USDⓈ-M futures
(``/fapi/v1/exchangeInfo``, ``/fapi/v1/fundingRate``, the endpoint behind ccxt's
``fetch_funding_rate_history``: ``symbol, startTime, endTime, limit`` in, a list of
``{symbol, fundingTime, fundingRate, markPrice}`` out, oldest first). Shared by the download
tests of ``celeris.data`` and of ``celeris data download``.

Its faults are the download's: holes in the klines, 429 answers, funding records off their
time, without a mark price or with an unreadable rate, and a log of every query. The live
stream's fake exchange (:mod:`celeris.testing.fake_exchange`: websocket, simulated clock) has
none of these and needs none of the logs, so the two stay apart; both take the URLs that
:func:`celeris.live.market.redirect_exchange` writes.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import ccxt
import numpy as np
import pandas as pd

from celeris.data.exchange import redirect_exchange

MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
_SPOT_SYMBOL = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "quoteAsset": "USDT",
    "baseAssetPrecision": 8,
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "MARKET"],
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False,
    "permissions": ["SPOT"],
    "permissionSets": [["SPOT"]],
    "filters": [],
}
EXCHANGE_INFO = {"timezone": "UTC", "serverTime": T0, "rateLimits": [], "symbols": [_SPOT_SYMBOL]}
FAPI_EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": T0,
    "rateLimits": [],
    "assets": [],
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "pair": "BTCUSDT",
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": 2,
            "quantityPrecision": 3,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "filters": [],
            "orderTypes": ["LIMIT", "MARKET"],
            "timeInForce": ["GTC"],
        }
    ],
}


class FakeBinance:
    """Klines for BTCUSDT 1m from T0 (``n`` bars minus ``missing`` offsets) and BTCUSDT perp
    funding every 8 hours from T0 (``n_funding`` records minus ``missing_funding`` offsets).

    Funding record ``i`` has the rate ``1e-4 + i * 1e-6`` and the mark price ``40000 + i``
    (an empty mark price, as Binance sends for old records, where ``i`` is in ``no_mark``).
    ``fail_with_429`` answers that many requests (of either data endpoint) with HTTP 429.
    """

    def __init__(
        self,
        n: int = 250,
        missing: tuple[int, ...] = (),
        n_funding: int = 90,
        missing_funding: tuple[int, ...] = (),
    ) -> None:
        self.times = np.array(
            [T0 + i * MINUTE for i in range(n) if i not in missing], dtype=np.int64
        )
        self.funding_offsets = [i for i in range(n_funding) if i not in missing_funding]
        self.funding_step = 8 * HOUR
        self.no_mark: set[int] = set()
        self.jitter_ms: dict[int, int] = {}  # record i is sent jitter_ms[i] ms off its time
        self.bad_rate: dict[int, str] = {}
        self.requests: list[dict[str, str]] = []
        self.funding_requests: list[dict[str, str]] = []
        self.fail_with_429 = 0

    def klines(self, query: dict[str, str]) -> list[list[object]]:
        start = int(query.get("startTime", T0))
        end = int(query.get("endTime", 2**62))
        limit = int(query.get("limit", 500))
        chosen = self.times[(self.times >= start) & (self.times <= end)][:limit]
        rows = []
        for t in chosen:
            price = 100.0 + (t - T0) / MINUTE
            rows.append(
                [
                    int(t),
                    f"{price:.2f}",
                    f"{price + 1:.2f}",
                    f"{price - 1:.2f}",
                    f"{price + 0.5:.2f}",
                    "10.5",
                    int(t) + MINUTE - 1,
                    "1000",
                    7,
                    "5",
                    "500",
                    "0",
                ]
            )
        return rows

    def funding_time(self, i: int) -> int:
        return T0 + i * self.funding_step

    def funding(self, query: dict[str, str]) -> list[dict[str, object]]:
        """``GET /fapi/v1/fundingRate``: records with startTime <= fundingTime <= endTime."""
        start = int(query.get("startTime", 0))
        end = int(query.get("endTime", 2**62))
        limit = min(int(query.get("limit", 100)), 1000)
        sent = {i: self.funding_time(i) + self.jitter_ms.get(i, 0) for i in self.funding_offsets}
        chosen = [i for i in self.funding_offsets if start <= sent[i] <= end]
        if "startTime" not in query:
            chosen = chosen[-limit:]  # Binance: the most recent records without a start
        return [
            {
                "symbol": query.get("symbol", "BTCUSDT"),
                "fundingTime": sent[i],
                "fundingRate": self.bad_rate.get(i, f"{1e-4 + i * 1e-6:.8f}"),
                "markPrice": "" if i in self.no_mark else f"{40000 + i:.8f}",
            }
            for i in chosen[:limit]
        ]


@contextlib.contextmanager
def serve(fake: FakeBinance) -> Iterator[str]:
    """Run a local server for ``fake``; yield its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _data(self, log: list[dict[str, str]], query: dict[str, str], answer: object) -> None:
            log.append(query)
            if fake.fail_with_429 > 0:
                fake.fail_with_429 -= 1
                self._send(429, {"code": -1003, "msg": "Too many requests"})
            else:
                self._send(200, answer)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            # redirect_exchange keeps the original host as the first path segment
            head, _, rest = url.path.lstrip("/").partition("/")
            path = "/" + rest if "." in head else url.path
            if path == "/api/v3/exchangeInfo":
                self._send(200, EXCHANGE_INFO)
            elif path == "/fapi/v1/exchangeInfo":
                self._send(200, FAPI_EXCHANGE_INFO)
            elif path == "/dapi/v1/exchangeInfo":  # ccxt's default load_markets asks for it
                self._send(200, {**FAPI_EXCHANGE_INFO, "symbols": []})
            elif path == "/api/v3/klines":
                self._data(fake.requests, query, fake.klines(query))
            elif path == "/fapi/v1/fundingRate":
                self._data(fake.funding_requests, query, fake.funding(query))
            else:
                self._send(404, {"code": -1, "msg": f"no route {path}"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def binance_client(url: str, types: tuple[str, ...] = ("spot",)) -> ccxt.binance:
    """A ccxt binance whose REST calls go to ``url``, loading the market ``types`` given."""
    ex = ccxt.binance({"options": {"fetchMarkets": {"types": list(types)}}, "timeout": 5_000})
    redirect_exchange(ex, url)  # what --exchange-url does
    ex.rateLimit = 1  # the local server needs no spacing; the limiter itself stays on
    return ex

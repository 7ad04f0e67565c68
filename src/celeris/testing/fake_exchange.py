"""A local exchange speaking Binance's public protocol, with a clock the caller drives.

:class:`FakeExchange` serves, on ``127.0.0.1`` and a free port, what ccxt's ``binance`` (REST)
and ``ccxt.pro.binance`` (websocket) need for market data:

- spot REST: ``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``, ``/api/v3/klines``;
- USDⓈ-M futures REST: ``/fapi/v1/ping``, ``/fapi/v1/time``, ``/fapi/v1/exchangeInfo``,
  ``/fapi/v1/klines``, ``/fapi/v1/premiumIndex`` (ccxt's ``fetch_funding_rate(s)``),
  ``/fapi/v1/fundingRate`` (``fetch_funding_rate_history``); ``/dapi/v1/exchangeInfo`` answers
  no markets (ccxt's ``load_markets`` asks for it);
- the kline websocket stream (``<symbol>@kline_<interval>``) in Binance's message format, with
  Binance's subscription protocol (``{"method": "SUBSCRIBE", "params": [...], "id": n}``,
  answered ``{"result": null, "id": n}``; streams named in the URL path work too).

Every path may carry the original host name as its first segment
(``/api.binance.com/api/v3/klines``, ``/stream.binance.com/ws``): that is how
:func:`celeris.live.market.redirect_exchange` points all of ccxt's hosts at one server. A
websocket on a host starting with ``fstream`` is the futures stream; any other is spot.

The clock is simulated: the bars come from a frame per symbol (or synthetic data) and
``advance(n)`` closes the next ``n`` bars of every symbol, pushing ``updates_per_bar`` updates of
the forming bar and then its final ``"x": true`` message. Faults on demand:
:meth:`~FakeExchange.disconnect`, :meth:`~FakeExchange.gap`, :meth:`~FakeExchange.duplicate`,
:meth:`~FakeExchange.late`, :meth:`~FakeExchange.stall`, :meth:`~FakeExchange.websocket_down`,
:meth:`~FakeExchange.fail_rest`. ``celeris exchange fake`` runs one for users, paced in real time
or at ``--speed`` bars per second.

It runs its aiohttp server in a background thread; everything that changes its state runs on
that thread's event loop, so the REST answers and the stream always agree on the clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_int
from celeris.data.schema import BAR_COLUMNS, validate
from celeris.data.timeframes import timeframe_to_timedelta
from celeris.errors import ConfigError

__all__ = ["FakeExchange"]

logger = logging.getLogger(__name__)

_FUNDING_STEP_MS = 8 * 3_600_000
_MAX_LIMIT = {"spot": 1000, "linear": 1500}


@dataclass
class _Faults:
    skip: int = 0  # kline messages still to drop
    duplicate: int = 0  # closed-bar messages still to send twice
    late: int = 0  # closed-bar messages still to hold back until the next one
    held: list[str] = field(default_factory=list)


@dataclass
class _Market:
    symbol: str  # unified, "BTC/USDT"
    market_id: str  # "BTCUSDT"
    base: str
    quote: str
    times: np.ndarray  # [n] int64 open times, ms
    ohlcv: np.ndarray  # [n, 5] float64, rounded to 8 decimals
    faults: _Faults = field(default_factory=_Faults)


class FakeExchange:
    """A local Binance (REST + kline websocket) over given or synthetic bars.

    Parameters
    ----------
    symbols : sequence of str
        Unified spot symbols (``"BTC/USDT"``); each is also listed as a USDⓈ-M perpetual
        (``"BTC/USDT:USDT"``) with the same bars.
    timeframe : str
        The one kline interval served (``"1m"``, ``"1h"``, ...).
    bars : mapping of symbol to DataFrame, optional
        Bars per symbol (a frame :func:`celeris.data.validate` accepts, spaced by
        ``timeframe``); default synthetic bars (:func:`celeris.data.synthetic.synthetic`, seed
        per symbol). Prices are rounded to 8 decimals, as Binance sends them.
    history : int
        Bars already closed when the exchange starts (the clock starts at the open of bar
        ``history``).
    n_bars : int
        Synthetic bars per symbol (history plus what ``advance`` may close); ignored with
        ``bars``.
    start : str or Timestamp, optional
        Open time of the first synthetic bar (default ``2024-01-01``).
    updates_per_bar : int
        Updates of the forming bar pushed before its final message.
    funding_rate : float
        The funding rate of every perpetual, settled every 8 hours (without ``funding``).
    funding : mapping of symbol to Series, optional
        Funding rates per symbol (spot or perpetual spelling) on their settlement times (a UTC DatetimeIndex), instead of
        ``funding_rate`` every 8 hours: what ``/fapi/v1/fundingRate`` answers once settled and
        what ``/fapi/v1/premiumIndex`` names as the next funding.
    port : int
        0 picks a free port.
    """

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT",),
        timeframe: str = "1m",
        *,
        bars: Mapping[str, pd.DataFrame] | None = None,
        history: int = 500,
        n_bars: int = 5_000,
        start: str | pd.Timestamp = "2024-01-01",
        updates_per_bar: int = 1,
        funding_rate: float = 1e-4,
        funding: Mapping[str, pd.Series] | None = None,
        port: int = 0,
    ) -> None:
        if isinstance(symbols, str) or not symbols:
            raise ConfigError(
                "the fake exchange needs a non-empty list of symbols such as ['BTC/USDT']"
            )
        self.timeframe = timeframe
        self.tf_ms = int(timeframe_to_timedelta(timeframe).total_seconds() * 1000)
        self.updates_per_bar = check_int("updates_per_bar", updates_per_bar, minimum=0)
        self.funding_rate = float(funding_rate)
        self._port = check_int("port", port, minimum=0, maximum=65_535)
        history = check_int("history", history, minimum=0)
        self._markets: dict[str, _Market] = {}
        for i, symbol in enumerate(symbols):
            frame = bars[symbol] if bars is not None and symbol in bars else None
            if bars is not None and frame is None:
                raise ConfigError(f"fake exchange: no bars given for symbol {symbol!r}")
            self._markets[_market_id(symbol)] = self._market(symbol, frame, i, n_bars, start)
        lengths = {m.symbol: len(m.times) for m in self._markets.values()}
        firsts = {int(m.times[0]) for m in self._markets.values()}
        if len(firsts) != 1:
            raise ConfigError("fake exchange: every symbol's bars must start at the same time")
        self._t0 = firsts.pop()
        self._n = min(lengths.values())
        if history >= self._n:
            raise ConfigError(
                f"fake exchange: history={history} leaves no bar to advance to "
                f"(the shortest symbol has {self._n} bars)"
            )
        self._pos = history  # bars closed so far; bar _pos is forming
        given = {_market_id(s): rates for s, rates in (funding or {}).items()}
        if set(given) - set(self._markets):  # "BTC/USDT" and "BTC/USDT:USDT" name one market
            extra = sorted(set(given) - set(self._markets))
            raise ConfigError(f"fake exchange: funding given for unknown market(s) {extra}")
        self._funding = {
            mid: self._funding_of(m, given.get(mid)) for mid, m in self._markets.items()
        }
        self._funding_delay_ms = 0
        self._stalled = False
        self._ws_down = False
        self._rest_failures = 0
        self._subs: dict[Any, set[str]] = {}  # websocket -> stream names
        self._outbox: dict[Any, asyncio.Queue[str]] = {}  # websocket -> messages to send
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of REST calls
        self.ws_connections = 0  # websocket connections accepted so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._url: str | None = None
        self._pacer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ construction
    def _market(
        self, symbol: str, frame: pd.DataFrame | None, i: int, n_bars: int, start: Any
    ) -> _Market:
        if "/" not in symbol:
            raise ConfigError(f"fake exchange: symbol {symbol!r} is not unified like 'BTC/USDT'")
        base, quote = symbol.split("/", 1)
        if frame is None:
            from celeris.data.synthetic import synthetic

            freq = pd.Timedelta(milliseconds=self.tf_ms)
            frame = synthetic(
                check_int("n_bars", n_bars, minimum=2),
                freq=freq,  # type: ignore[arg-type]
                seed=i,
                start=start,
                s0=100.0 * (i + 1),
            )
        else:
            frame = validate(frame)
            steps = np.diff(_epoch_ms(frame.index))
            if len(steps) and not (steps == self.tf_ms).all():
                bad = frame.index[1:][steps != self.tf_ms][0]
                raise ConfigError(
                    f"fake exchange: bars of {symbol!r} are not spaced by {self.timeframe} "
                    f"(first irregular bar at {bad})"
                )
        times = _epoch_ms(frame.index)
        ohlcv = np.round(frame[list(BAR_COLUMNS)].to_numpy(dtype=np.float64), 8)
        return _Market(symbol, _market_id(symbol), base, quote, times, ohlcv)

    def _funding_of(self, m: _Market, rates: pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
        """A perpetual's funding times (epoch ms) and rates: given, or ``funding_rate`` every
        8 hours over the bars."""
        if rates is None:
            first = -(-int(m.times[0]) // _FUNDING_STEP_MS) * _FUNDING_STEP_MS
            times = np.arange(first, int(m.times[-1]) + 1, _FUNDING_STEP_MS, dtype=np.int64)
            return times, np.full(times.shape[0], self.funding_rate)
        if not isinstance(rates, pd.Series) or not isinstance(rates.index, pd.DatetimeIndex):
            raise ConfigError(f"fake exchange: funding of {m.symbol!r} must be a Series on times")
        times = _epoch_ms(rates.index)
        if (np.diff(times) <= 0).any():
            raise ConfigError(f"fake exchange: funding times of {m.symbol!r} must increase")
        return times, rates.to_numpy(np.float64)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``): what ``--exchange-url`` takes."""
        if self._url is None:
            raise ConfigError("the fake exchange is not running: call start() or use `with`")
        return self._url

    def start(self) -> FakeExchange:
        """Start the server thread; return ``self`` once it accepts connections."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-exchange", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            self._thread = None
            raise ConfigError(f"fake exchange could not start on port {self._port}: {errors[0]}")
        return self

    def close(self) -> None:
        """Stop the server and its thread (idempotent)."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None
        self._url = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        port = self._runner.addresses[0][1]
        self._url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
        await self._close_sockets()
        if self._runner is not None:
            await self._runner.cleanup()

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        if self._loop is None or self._thread is None:
            coro.close()
            raise ConfigError("the fake exchange is not running: call start() or use `with`")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ clock
    @property
    def now_ms(self) -> int:
        """The exchange's clock (epoch ms): the open time of the bar now forming."""
        return self._t0 + self._pos * self.tf_ms

    @property
    def closed(self) -> int:
        """Number of bars closed so far (per symbol)."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bars left to close before the data runs out."""
        return self._n - 1 - self._pos

    def bars(self, symbol: str) -> pd.DataFrame:
        """Every closed bar of ``symbol`` so far, as a validated bar frame."""
        m = self._lookup(symbol)
        return _frame(m.times[: self._pos], m.ohlcv[: self._pos])

    def advance(self, n: int = 1) -> int:
        """Close the next ``n`` bars of every symbol, pushing their kline messages.

        Returns once the messages are queued to every connection (not delivered); the clock
        then stands at the open of the next bar. Returns the new clock (epoch ms).
        """
        n = check_int("n", n, minimum=0)
        return int(self._run(self._advance(n)))

    async def advance_async(self, n: int = 1) -> int:
        """:meth:`advance` for a caller inside an event loop (does not block it)."""
        n = check_int("n", n, minimum=0)
        if self._loop is None:
            raise ConfigError("the fake exchange is not running: call start() or use `with`")
        fut: concurrent.futures.Future[int] = asyncio.run_coroutine_threadsafe(
            self._advance(n), self._loop
        )
        return await asyncio.wrap_future(fut)

    async def _advance(self, n: int) -> int:
        if self._pos + n >= self._n:
            raise ConfigError(
                f"fake exchange: advancing {n} bars runs past the data ({self.remaining} bars left)"
            )
        for _ in range(n):
            i = self._pos
            for m in self._markets.values():
                for k in range(self.updates_per_bar):
                    self._emit(m, self._kline(m, i, k), final=False)
                self._emit(m, self._kline(m, i, None), final=True)
            self._pos += 1
        return self.now_ms

    def pace(self, bars_per_second: float, *, first_delay_s: float | None = None) -> None:
        """Close bars by themselves, ``bars_per_second`` of them per second of wall time (the
        first after ``first_delay_s``, default one period), on a monotonic schedule."""
        if not bars_per_second > 0:
            raise ConfigError(f"speed must be above 0 bars per second, got {bars_per_second}")
        period = 1.0 / bars_per_second
        delay = period if first_delay_s is None else max(0.0, float(first_delay_s))

        async def go() -> None:
            async def tick() -> None:
                loop = asyncio.get_running_loop()
                due = loop.time() + delay
                while self.remaining > 0:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await self._advance(1)
                    due += period
                logger.warning("fake exchange: out of bars at %s", self.now_ms)

            if self._pacer is not None:
                self._pacer.cancel()
            self._pacer = asyncio.get_running_loop().create_task(tick())

        self._run(go())

    # ------------------------------------------------------------------ faults
    def disconnect(self) -> int:
        """Drop every websocket connection now; return how many were dropped."""
        return int(self._run(self._close_sockets()))

    def gap(self, symbol: str | None = None, k: int = 1) -> None:
        """Skip (never send) the next ``k`` kline messages of ``symbol`` (every symbol: None)."""
        self._set(symbol, "skip", check_int("k", k, minimum=0))

    def duplicate(self, symbol: str | None = None, k: int = 1) -> None:
        """Send each of the next ``k`` closed-bar messages of ``symbol`` twice."""
        self._set(symbol, "duplicate", check_int("k", k, minimum=0))

    def late(self, symbol: str | None = None, k: int = 1) -> None:
        """Hold back each of the next ``k`` closed-bar messages of ``symbol`` and send it right
        after the following bar's closed-bar message (a late, out-of-order bar)."""
        self._set(symbol, "late", check_int("k", k, minimum=0))

    def stall(self, stalled: bool = True) -> None:
        """Stop (``True``) or resume (``False``) sending websocket messages; the clock and the
        REST API go on (messages not sent during a stall are lost, as on a silent socket)."""
        self._stalled = bool(stalled)

    def websocket_down(self, down: bool = True) -> None:
        """Refuse websocket connections (HTTP 503) and drop the open ones, or accept again."""
        self._ws_down = bool(down)
        if down:
            self.disconnect()

    def subscribers(self, symbol: str) -> int:
        """Number of websocket connections subscribed to ``symbol``'s kline stream."""
        stream = f"{self._lookup(symbol).market_id.lower()}@kline_{self.timeframe}"

        async def count() -> int:
            return sum(stream in streams for streams in self._subs.values())

        return int(self._run(count()))

    def delay_funding(self, bars: int) -> None:
        """Publish a settled funding rate only once the clock is ``bars`` bars past its funding
        time (0, the default: at once), as an exchange that lists a settlement late."""
        self._funding_delay_ms = check_int("bars", bars, minimum=0) * self.tf_ms

    def fail_rest(self, n: int) -> None:
        """Answer the next ``n`` klines, time or funding requests with HTTP 429."""
        self._rest_failures = check_int("n", n, minimum=0)

    def _set(self, symbol: str | None, fault: str, k: int) -> None:
        chosen = self._chosen(symbol)

        async def add() -> None:  # on the server's loop, between two messages
            for m in chosen:
                setattr(m.faults, fault, getattr(m.faults, fault) + k)

        self._run(add())

    def _chosen(self, symbol: str | None) -> list[_Market]:
        return list(self._markets.values()) if symbol is None else [self._lookup(symbol)]

    def _lookup(self, symbol: str) -> _Market:
        m = self._markets.get(_market_id(symbol))
        if m is None:
            known = ", ".join(x.symbol for x in self._markets.values())
            raise ConfigError(f"fake exchange has no symbol {symbol!r}; it serves {known}")
        return m

    # ------------------------------------------------------------------ websocket
    def _kline(self, m: _Market, i: int, k: int | None) -> dict[str, Any]:
        """Binance's kline event for bar ``i``: update ``k`` of ``updates_per_bar`` or final."""
        t = int(m.times[i])
        o, h, low, c, v = (float(x) for x in m.ohlcv[i])
        if k is not None:  # an update: the bar so far, linearly on its way to the close
            share = (k + 1) / (self.updates_per_bar + 1)
            c = round(o + (c - o) * share, 8)
            h, low, v = max(o, c), min(o, c), round(v * share, 8)
            event = t + int(self.tf_ms * share)
        else:
            event = t + self.tf_ms
        return {
            "e": "kline",
            "E": event,
            "s": m.market_id,
            "k": {
                "t": t,
                "T": t + self.tf_ms - 1,
                "s": m.market_id,
                "i": self.timeframe,
                "f": 100 * i,
                "L": 100 * i + 99,
                "o": _num(o),
                "c": _num(c),
                "h": _num(h),
                "l": _num(low),
                "v": _num(v),
                "n": 100,
                "x": k is None,
                "q": _num(v * c),
                "V": _num(v / 2),
                "Q": _num(v * c / 2),
                "B": "0",
            },
        }

    def _emit(self, m: _Market, event: dict[str, Any], *, final: bool) -> None:
        f = m.faults
        if self._stalled:
            return
        if f.skip > 0:
            f.skip -= 1
            return
        text = json.dumps(event, separators=(",", ":"))
        texts = [text]
        if final and f.late > 0 and not f.held:
            f.late -= 1
            f.held.append(text)
            return
        if final and f.duplicate > 0:
            f.duplicate -= 1
            texts.append(text)
        if final and f.held:
            texts.extend(f.held)  # the held bar arrives after its successor
            f.held.clear()
        stream = f"{m.market_id.lower()}@kline_{self.timeframe}"
        for ws, streams in list(self._subs.items()):
            if stream in streams and not ws.closed:
                # each connection has its own writer task: a slow (or blocked) client never
                # holds up the clock or the other connections
                for t in texts:
                    self._outbox[ws].put_nowait(t)

    async def _close_sockets(self) -> int:
        sockets = list(self._subs)
        self._subs.clear()
        for ws in sockets:
            await ws.close(code=1001, message=b"fake exchange: disconnect")
        return len(sockets)

    async def _websocket(self, request: Any, path: str) -> Any:
        from aiohttp import WSMsgType, web

        if self._ws_down:
            return web.json_response({"code": -1, "msg": "websocket down (fake fault)"}, status=503)
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        self.ws_connections += 1
        outbox: asyncio.Queue[str] = asyncio.Queue()
        self._outbox[ws] = outbox
        writer = asyncio.get_running_loop().create_task(_writer(ws, outbox))
        # streams named in the path (/ws/btcusdt@kline_1m) subscribe at once
        self._subs[ws] = {s for s in path.split("/") if "@" in s}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    outbox.put_nowait(self._control(ws, msg.data))
        finally:
            self._subs.pop(ws, None)
            self._outbox.pop(ws, None)
            writer.cancel()
        return ws

    def _control(self, ws: Any, data: str) -> str:
        """Apply a subscription request; return the answer to send."""
        try:
            req = json.loads(data)
            method, rid = req["method"], req.get("id")
        except (ValueError, KeyError, TypeError):
            return json.dumps({"error": {"code": 2, "msg": "Invalid request"}})
        streams = self._subs.setdefault(ws, set())
        params = [str(p) for p in req.get("params") or []]
        if method == "SUBSCRIBE":
            streams.update(params)
            reply: Any = None
        elif method == "UNSUBSCRIBE":
            streams.difference_update(params)
            reply = None
        elif method == "LIST_SUBSCRIPTIONS":
            reply = sorted(streams)
        else:
            return json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": rid})
        return json.dumps({"result": reply, "id": rid})

    # ------------------------------------------------------------------ REST
    async def _route(self, request: Any) -> Any:
        from aiohttp import web

        tail = request.match_info["tail"]
        parts = tail.split("/")
        if parts and "." in parts[0]:  # /api.binance.com/api/v3/... : drop the host segment
            parts = parts[1:]
        path = "/" + "/".join(parts)
        if path == "/ws" or path.startswith(("/ws/", "/market/ws", "/public/ws")):
            return await self._websocket(request, path)
        query = dict(request.query)
        self.requests.append((path, query))
        handler = _ROUTES.get(path)
        if handler is None:
            return web.json_response({"code": -1, "msg": f"no route {path}"}, status=404)
        if handler in _LIMITED and self._rest_failures > 0:
            self._rest_failures -= 1
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429)
        try:
            body = handler(self, query, "linear" if path.startswith("/fapi") else "spot")
        except _BinanceError as exc:
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=400)
        return web.json_response(body)

    def _ping(self, q: dict[str, str], kind: str) -> Any:
        return {}

    def _time(self, q: dict[str, str], kind: str) -> Any:
        return {"serverTime": self.now_ms}

    def _exchange_info(self, q: dict[str, str], kind: str) -> Any:
        symbols = [
            _spot_info(m) if kind == "spot" else _perp_info(m) for m in self._markets.values()
        ]
        return {"timezone": "UTC", "serverTime": self.now_ms, "rateLimits": [], "symbols": symbols}

    def _no_markets(self, q: dict[str, str], kind: str) -> Any:
        return {"timezone": "UTC", "serverTime": self.now_ms, "rateLimits": [], "symbols": []}

    def _market_of(self, q: dict[str, str]) -> _Market:
        m = self._markets.get(q.get("symbol", ""))
        if m is None:
            raise _BinanceError(-1121, "Invalid symbol.")
        return m

    def _klines(self, q: dict[str, str], kind: str) -> Any:
        m = self._market_of(q)
        if q.get("interval") != self.timeframe:
            raise _BinanceError(-1120, "Invalid interval.")
        limit = min(int(q.get("limit", 500)), _MAX_LIMIT[kind])
        visible = self._pos + 1  # the closed bars and the one forming, as Binance answers
        times = m.times[:visible]
        lo = int(np.searchsorted(times, int(q["startTime"]), "left")) if "startTime" in q else None
        hi = int(np.searchsorted(times, int(q["endTime"]), "right")) if "endTime" in q else visible
        if lo is None:
            lo = max(0, hi - limit)
        hi = min(hi, lo + limit)
        rows = []
        for i in range(lo, hi):
            t = int(m.times[i])
            if i == self._pos:  # forming: only its open so far
                o = float(m.ohlcv[i, 0])
                o, h, low, c, v = o, o, o, o, 0.0
            else:
                o, h, low, c, v = (float(x) for x in m.ohlcv[i])
            end = t + self.tf_ms - 1
            rows.append(
                [
                    t,
                    _num(o),
                    _num(h),
                    _num(low),
                    _num(c),
                    _num(v),
                    end,
                    _num(v * c),
                    100,
                    _num(v / 2),
                    _num(v * c / 2),
                    "0",
                ]
            )
        return rows

    def _premium_index(self, q: dict[str, str], kind: str) -> Any:
        chosen = [self._market_of(q)] if "symbol" in q else list(self._markets.values())
        out = []
        for m in chosen:
            price = _num(float(m.ohlcv[max(self._pos - 1, 0), 3]))
            times, rates = self._funding[m.market_id]
            after = int(np.searchsorted(times, self.now_ms, "right"))
            if after < len(times):
                next_funding, rate = int(times[after]), float(rates[after])
            else:  # past the given rates: the 8-hour grid
                next_funding = (self.now_ms // _FUNDING_STEP_MS + 1) * _FUNDING_STEP_MS
                rate = self.funding_rate
            out.append(
                {
                    "symbol": m.market_id,
                    "markPrice": price,
                    "indexPrice": price,
                    "estimatedSettlePrice": price,
                    "lastFundingRate": f"{rate:.8f}",
                    "interestRate": "0.00010000",
                    "nextFundingTime": next_funding,
                    "time": self.now_ms,
                }
            )
        return out[0] if "symbol" in q else out

    def _funding_history(self, q: dict[str, str], kind: str) -> Any:
        m = self._market_of(q)
        limit = min(int(q.get("limit", 100)), 1000)
        times, rates = self._funding[m.market_id]
        # settled (and, with delay_funding, listed) by now
        listed = int(np.searchsorted(times, self.now_ms - self._funding_delay_ms, "right"))
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        chosen = [i for i in range(listed) if start <= times[i] <= end]
        chosen = chosen[:limit] if "startTime" in q else chosen[-limit:]
        out = []
        for j in chosen:
            t = int(times[j])
            i = min(max((t - self._t0) // self.tf_ms, 0), len(m.times) - 1)
            out.append(
                {
                    "symbol": m.market_id,
                    "fundingTime": t,
                    "fundingRate": f"{float(rates[j]):.8f}",
                    "markPrice": _num(float(m.ohlcv[i, 0])),
                }
            )
        return out


class _BinanceError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


_ROUTES = {
    "/api/v3/ping": FakeExchange._ping,
    "/fapi/v1/ping": FakeExchange._ping,
    "/api/v3/time": FakeExchange._time,
    "/fapi/v1/time": FakeExchange._time,
    "/api/v3/exchangeInfo": FakeExchange._exchange_info,
    "/fapi/v1/exchangeInfo": FakeExchange._exchange_info,
    "/dapi/v1/exchangeInfo": FakeExchange._no_markets,
    "/api/v3/klines": FakeExchange._klines,
    "/fapi/v1/klines": FakeExchange._klines,
    "/fapi/v1/premiumIndex": FakeExchange._premium_index,
    "/fapi/v1/fundingRate": FakeExchange._funding_history,
}
_LIMITED = {
    FakeExchange._klines,
    FakeExchange._time,
    FakeExchange._funding_history,
    FakeExchange._premium_index,
}


async def _writer(ws: Any, outbox: asyncio.Queue[str]) -> None:
    try:
        while True:
            text = await outbox.get()
            await ws.send_str(text)
    except (ConnectionError, RuntimeError):  # closed under us: the client reconnects
        pass


def _num(x: float) -> str:
    return f"{x:.8f}"


def _epoch_ms(index: pd.Index) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(index).as_unit("ms").asi8, dtype=np.int64)


def _market_id(symbol: str) -> str:
    return str(symbol).split(":", 1)[0].replace("/", "").upper()


def _frame(times: np.ndarray, ohlcv: np.ndarray) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="time").as_unit("ns")
    return pd.DataFrame(ohlcv, index=index, columns=list(BAR_COLUMNS))


def _spot_info(m: _Market) -> dict[str, Any]:
    return {
        "symbol": m.market_id,
        "status": "TRADING",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
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


def _perp_info(m: _Market) -> dict[str, Any]:
    return {
        "symbol": m.market_id,
        "pair": m.market_id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.quote,
        "pricePrecision": 8,
        "quantityPrecision": 8,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": [],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC"],
    }

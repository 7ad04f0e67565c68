"""Funding rates for the live loop on perpetual futures: a replay's series, or the exchange's.

A perpetual's funding is charged at the open of the bar that starts at the funding time (bars
are labelled by their open; :func:`celeris.data.funding.align_funding`). The loop hands each
step its bars' rates with the bars, ``(k, n_symbols)``, 0 between funding times
(:meth:`celeris.live.loop.LiveLoop.run`, ``funding=``); the journal keeps them, so a restart
replays the journaled bars with the rates they were charged. Two sources have the same two
methods (``start`` and ``rates``):

- :class:`ReplayFunding`: given rates per symbol put on the replayed bars by ``align_funding``,
  exactly what ``celeris backtest --perp --funding`` puts on the same bars, so a replay equals
  ``from_signals(..., instrument="perp", funding_rate=...)`` bit for bit;
- :class:`ExchangeFunding`: the exchange's settled rates through ccxt REST
  (``fetch_funding_rate_history``; ``fetch_funding_rate`` for the next funding time).

When a settled rate is there. The loop processes a bar once it has closed, one timeframe after
its open; the rate settled at the bar's open is then normally listed already (an exchange
lists a settlement shortly after it). The source knows each symbol's next funding time (the
exchange's ``nextFundingTime``) and asks the exchange only on the first step (for what was
listed while the bar source started), on a step whose bars reach the next funding time, and on
one that reaches back to a rate already listed (a resumed run's catch-up, a loop lagging
behind the exchange), so a step without funding costs no request. The rates are asked for up
to the exchange's now, so a lagging loop learns every rate listed meanwhile. A rate announced
but not listed yet is asked for again every
``poll_s`` for up to ``wait_s`` seconds (the step waits; its bars' signals with it); then the
step fails with :class:`~celeris.errors.ExchangeError` naming the symbol and the funding time,
before anything is journaled, so a restart processes that bar again: a due rate is never
charged as 0. A rate listed for a bar already processed without it (the exchange moved its
schedule unannounced) cannot be charged any more: it is counted (``missed``) and logged as an
error. Counters: :meth:`ExchangeFunding.stats` (exported as ``celeris_live_funding_*_total``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from celeris.checks import check_real
from celeris.data.exchange import RetryPolicy, redirect_exchange

# the funding download's checks and record parsing, shared rather than written twice
from celeris.data.funding import align_funding
from celeris.data.funding_download import check_perpetual, funding_record, to_funding_second
from celeris.errors import ConfigError, DataError, ExchangeError, did_you_mean

__all__ = ["FUNDING_STAT_NAMES", "ExchangeFunding", "FundingSource", "ReplayFunding"]

logger = logging.getLogger("celeris.live")

#: The keys of :meth:`ExchangeFunding.stats`, all monotonic counters.
FUNDING_STAT_NAMES = (
    "requests",  # REST requests (history, next funding time, markets), retries included
    "failures",  # requests that failed (network, rate limit), retried or not
    "fetches",  # funding-history rounds for a step (one per symbol whose bars reach a funding)
    "waits",  # rounds repeated because a due rate was not listed yet
    "rates",  # funding rates handed to the loop (settled rates on processed bars)
    "missed",  # rates listed for bars already processed without them (logged as errors)
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PAGE = 1000  # funding records per history request (Binance's most)
_monotonic = time.monotonic


class FundingSource(Protocol):
    async def start(self) -> None: ...

    async def rates(self, times: np.ndarray) -> np.ndarray: ...


def _utc(times_ms: Any) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(times_ms, np.int64), unit="ms", utc=True))


class ReplayFunding:
    """Funding rates on the replayed bars: ``rates`` ``(n_bars, n_symbols)`` on bar ``times``.

    Build it with :meth:`from_series` (rates per symbol at their funding times, put on the bars
    by :func:`~celeris.data.funding.align_funding`).
    """

    def __init__(self, symbols: Sequence[str], times: np.ndarray, rates: np.ndarray) -> None:
        self.symbols = tuple(symbols)
        self.times = np.asarray(times, dtype=np.int64)
        self._rates = np.asarray(rates, dtype=np.float64)
        if self._rates.shape != (self.times.shape[0], len(self.symbols)):
            raise DataError(
                f"replay funding: rates must be ({self.times.shape[0]}, {len(self.symbols)}) "
                f"(bars x symbols), got {self._rates.shape}"
            )

    @classmethod
    def from_series(
        cls,
        symbols: Sequence[str],
        funding: Mapping[str, pd.Series],
        bars: Mapping[str, pd.DataFrame],
    ) -> ReplayFunding:
        """Put each symbol's funding (a Series of rates at funding times, :func:`load_funding`)
        on the times the loop steps on: the union of the replayed bars' times, as
        ``celeris backtest --perp --funding`` puts them on its panel.

        Raises
        ------
        ConfigError
            Funding for a symbol that is not replayed, or a replayed symbol without funding.
        DataError
            A funding time between two bars (naming the symbol and the time).
        """
        symbols = tuple(symbols)
        unknown = [s for s in funding if s not in symbols]
        if unknown:
            raise ConfigError(
                f"funding given for {unknown[0]!r}{did_you_mean(str(unknown[0]), symbols)}, "
                f"which is not one of the replayed symbols {list(symbols)}"
            )
        absent = [s for s in symbols if s not in funding]
        if absent:
            raise ConfigError(f"no funding given for {absent[0]!r}: give one per symbol")
        stamps = [pd.DatetimeIndex(bars[s].index).as_unit("ns").asi8 for s in symbols]
        times = stamps[0] if len(stamps) == 1 else np.unique(np.concatenate(stamps))
        index = pd.DatetimeIndex(times, tz="UTC")
        out = np.zeros((times.shape[0], len(symbols)))
        for a, sym in enumerate(symbols):
            rates = funding[sym]
            stamps_of = getattr(rates, "index", None)
            if not isinstance(stamps_of, pd.DatetimeIndex) or str(stamps_of.tz) != "UTC":
                raise DataError(
                    f"funding of {sym}: rates need a UTC DatetimeIndex of funding times "
                    "(celeris.data.load_funding gives one)"
                )
            if len(index):  # the funding within the replayed bars, as the backtest slices it
                rates = rates[(stamps_of >= index[0]) & (stamps_of <= index[-1])]
            try:
                out[:, a] = align_funding(rates, index).to_numpy()
            except DataError as exc:
                raise DataError(f"funding of {sym}: {exc}") from None
        return cls(symbols, times, out)

    async def start(self) -> None:
        return None

    async def rates(self, times: np.ndarray) -> np.ndarray:
        """The rates of the bars at ``times`` (int64 ns), ``(k, n_symbols)``."""
        times = np.asarray(times, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.times, times), max(self.times.shape[0] - 1, 0))
        bad = self.times[pos] != times if self.times.shape[0] else np.ones(times.shape, bool)
        if bad.any():
            t = pd.Timestamp(int(times[np.flatnonzero(bad)[0]]), tz="UTC")
            raise DataError(f"replay funding: bar {t} is not one of the replayed bars' times")
        return self._rates[pos]


@dataclass(eq=False)
class _Perp:
    """What the source knows of one perpetual's funding (times are epoch ms)."""

    symbol: str
    due: list[int] = field(default_factory=list)  # announced funding times, not listed yet
    seen_until: int = -1  # the newest funding time listed so far
    refresh: bool = False  # ask for the next funding time at the next step


class ExchangeFunding:
    """The exchange's settled funding rates, through ccxt REST, for the live loop.

    Each symbol's next funding time is the exchange's (``fetch_funding_rate``: Binance's
    ``nextFundingTime``), asked at the start and after each funding; a step whose bars reach
    it asks for the rates listed since the last one seen (``fetch_funding_rate_history``, up to
    the exchange's now, so a loop that lags behind learns every rate listed meanwhile) and
    waits for it as the module says. A step that reaches back to a listed rate (a resumed run's
    catch-up, a lagging loop) asks again. Other steps cost no request.

    Parameters
    ----------
    exchange : str
        A ccxt exchange id with perpetual swaps and funding history (``"binance"``).
    symbols : sequence of str
        The perpetual swaps, in the loop's order (``"BTC/USDT:USDT"``).
    exchange_url : str, optional
        Another server for ccxt's hosts (:func:`~celeris.data.exchange.redirect_exchange`).
    wait_s : float
        Longest wait, per step, for a due rate that is not listed yet, before failing.
    poll_s : float
        Seconds between two requests for a rate not listed yet.
    retry : RetryPolicy, optional
        Retries of a failed request (network errors, rate limits); default 5 from 0.5 s.
    """

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        *,
        exchange_url: str | None = None,
        wait_s: float = 30.0,
        poll_s: float = 1.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if isinstance(symbols, str) or not symbols:
            raise ConfigError(f"funding needs a non-empty list of symbols, got {symbols!r}")
        self.exchange_id = str(exchange).strip().lower()
        self.symbols = tuple(str(s) for s in symbols)
        self.exchange_url = exchange_url
        self.wait_s = check_real("wait_s", wait_s, minimum=0.0)
        self.poll_s = check_real("poll_s", poll_s, minimum=1e-3)
        self.retry = retry if retry is not None else RetryPolicy(5, 0.5, 5.0)
        self._state = [_Perp(s) for s in self.symbols]
        self._stats = dict.fromkeys(FUNDING_STAT_NAMES, 0)
        self._ex: Any = None
        self._ccxt: Any = None
        self._first: int | None = None  # the first bar asked for (ms): earlier ones not traded

    def stats(self) -> dict[str, int]:
        """Return the counters named in :data:`FUNDING_STAT_NAMES` (a copy)."""
        return dict(self._stats)

    def due(self) -> dict[str, list[int]]:
        """Each symbol's announced funding times not listed yet (epoch ms)."""
        return {st.symbol: list(st.due) for st in self._state}

    async def start(self) -> None:
        """Load the markets (every symbol must be a perpetual swap) and ask for each symbol's
        last listed rates and next funding time.

        Raises
        ------
        ConfigError
            Unknown exchange, an exchange without funding history in ccxt, a symbol that is
            not a perpetual swap (a spot symbol: use ``BASE/QUOTE:SETTLE``).
        ExchangeError
            The exchange failed after the retries.
        """
        if self._ex is not None:
            raise ConfigError("ExchangeFunding.start() was already called")
        self._ex = self._make_exchange()
        try:
            markets = await self._request("load_markets", self._ex.load_markets)
            for symbol in self.symbols:
                check_perpetual(self._ex, markets or {}, symbol)
            await asyncio.gather(*(self._learn(st) for st in self._state))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close ccxt's connections (idempotent)."""
        ex, self._ex = self._ex, None
        if ex is not None:
            try:
                await ex.close()
            except Exception as exc:  # closing a broken connection must not mask the cause
                logger.debug("closing %s: %s", self.exchange_id, exc)

    async def rates(self, times: np.ndarray) -> np.ndarray:
        """The funding rates of the bars at ``times`` (int64 ns, one step's), ``(k, n_symbols)``.

        Raises
        ------
        ExchangeError
            A due rate not listed after ``wait_s``, or the exchange failed after the retries.
        DataError
            A listed funding time falls between two of the bars (naming symbol and time).
        """
        if self._ex is None:
            raise ConfigError("call ExchangeFunding.start() before rates()")
        times = np.asarray(times, dtype=np.int64)
        out = np.zeros((times.shape[0], len(self.symbols)))
        if not times.shape[0]:
            return out
        t0, t1 = int(times[0] // 1_000_000), int(times[-1] // 1_000_000)
        first = self._first is None  # the first step asks for everything listed since its
        if first:  # first bar: the clock moved on while the bar source started
            self._first = t0
        stale = [st for st in self._state if st.refresh]
        if stale:
            await asyncio.gather(*(self._refresh(st) for st in stale))
        todo = []
        for a, st in enumerate(self._state):
            while st.due and st.due[0] < t0:  # announced before the bars traded here (warm-up)
                st.due.pop(0)
            if first or (st.due and st.due[0] <= t1) or t0 <= st.seen_until:
                todo.append(a)
        if not todo:
            return out
        found = await asyncio.gather(*(self._settled(self._state[a], t0, t1) for a in todo))
        bars = pd.DatetimeIndex(times, tz="UTC")
        for a, listed in zip(todo, found, strict=True):
            if not listed:
                continue
            series = pd.Series(list(listed.values()), index=_utc(list(listed)))
            try:
                out[:, a] = align_funding(series, bars).to_numpy()
            except DataError as exc:
                raise DataError(f"{self.exchange_id} {self._state[a].symbol}: {exc}") from None
            self._stats["rates"] += len(listed)
        return out

    # ------------------------------------------------------------------ internals
    def _make_exchange(self) -> Any:
        try:
            import ccxt
            import ccxt.async_support
        except ImportError as exc:  # pragma: no cover - ccxt is a declared extra
            raise ConfigError("live funding needs ccxt: pip install 'celeris[exchange]'") from exc
        self._ccxt = ccxt
        name = self.exchange_id
        if name not in ccxt.exchanges:
            raise ConfigError(
                f"unknown exchange {name!r}{did_you_mean(name, ccxt.exchanges)}; "
                "use a ccxt exchange id such as 'binance', 'bybit' or 'okx'"
            )
        config: dict[str, Any] = {"enableRateLimit": True}
        if self.exchange_url is not None and urlsplit(str(self.exchange_url)).hostname in _LOOPBACK:
            config["rateLimit"] = 1  # a local server needs no spacing; the limiter stays on
        ex = getattr(ccxt.async_support, name)(config)
        if self.exchange_url is not None:
            redirect_exchange(ex, self.exchange_url)
        if not ex.has.get("fetchFundingRateHistory") or not ex.has.get("fetchFundingRate"):
            raise ConfigError(
                f"{name} has no funding rates (history and next funding time) in ccxt, so a "
                "perpetual run cannot be charged its funding; use an exchange with perpetual "
                "swaps such as 'binance', 'bybit' or 'okx'"
            )
        return ex

    async def _request(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        ccxt = self._ccxt
        for attempt in range(self.retry.max_retries + 1):
            self._stats["requests"] += 1
            try:
                return await fn(*args, **kwargs)
            except ccxt.NetworkError as exc:  # includes rate limits and timeouts
                self._stats["failures"] += 1
                if attempt == self.retry.max_retries:
                    raise ExchangeError(
                        f"{self.exchange_id}: {what} failed {attempt + 1} times, last with "
                        f"{type(exc).__name__}: {str(exc)[:300]}"
                    ) from exc
                await asyncio.sleep(self.retry.delay(attempt))
            except ccxt.BaseError as exc:
                self._stats["failures"] += 1
                raise ExchangeError(
                    f"{self.exchange_id}: {what} failed: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _history(self, symbol: str, since: int | None) -> dict[int, float]:
        """The rates of ``symbol`` listed from ``since`` (ms) on (None: the last few), on times
        rounded to the second as the funding download stores them."""
        out: dict[int, float] = {}
        cursor = since
        while True:
            page = await self._request(
                f"fetch_funding_rate_history({symbol!r}, since={cursor})",
                self._ex.fetch_funding_rate_history, symbol, since=cursor,
                limit=_PAGE if since is not None else 3,
            )  # fmt: skip
            raw = [funding_record(r, self.exchange_id, symbol) for r in page or []]
            for ms, rate, _ in raw:
                if since is not None and ms < since:
                    continue
                if not np.isfinite(rate):
                    raise ExchangeError(
                        f"{self.exchange_id} {symbol}: the funding record at "
                        f"{pd.Timestamp(ms, unit='ms', tz='UTC')} has no rate"
                    )
                out[to_funding_second(ms)] = rate
            last = max((ms for ms, _, _ in raw), default=None)
            if cursor is None or last is None or len(raw) < _PAGE or last < cursor:
                return out
            cursor = last + 1

    async def _next_funding(self, symbol: str) -> int:
        """The exchange's next funding time of ``symbol`` (ms)."""
        info = await self._request(
            f"fetch_funding_rate({symbol!r})", self._ex.fetch_funding_rate, symbol
        )
        stamp = (info or {}).get("fundingTimestamp") if isinstance(info, dict) else None
        if stamp is None:
            raise ExchangeError(
                f"{self.exchange_id} {symbol}: the exchange did not tell the next funding time "
                f"(fetch_funding_rate answered {info!r:.200})"
            )
        return to_funding_second(int(stamp))

    async def _learn(self, st: _Perp) -> None:
        st.due = [await self._next_funding(st.symbol)]
        st.seen_until = max(await self._history(st.symbol, None), default=-1)

    async def _refresh(self, st: _Perp) -> None:
        """The next funding time after the ones charged (asked again while the exchange still
        names one already listed)."""
        nxt = await self._next_funding(st.symbol)
        if nxt > st.seen_until:
            st.due = sorted({*st.due, nxt})
            st.refresh = False

    async def _settled(self, st: _Perp, t0: int, t1: int) -> dict[int, float]:
        """The rates listed for ``st`` on ``[t0, t1]``: asks for the next funding time and the
        rates listed since the last one seen (or ``t0``) until the announced ones on these
        bars are listed."""
        since = t0 if st.seen_until < 0 else min(t0, st.seen_until + 1)
        deadline = _monotonic() + self.wait_s
        while True:
            self._stats["fetches"] += 1
            # the next funding time first: every funding before it is settled when the
            # history is asked for
            nxt = await self._next_funding(st.symbol)
            listed = await self._history(st.symbol, since)
            newest = max(st.seen_until, max(listed, default=-1))
            if newest < nxt <= t1:  # announced, on these bars, not listed yet
                st.due = sorted({*st.due, nxt})
            missing = [d for d in st.due if d <= t1 and d not in listed]
            if not missing:
                break
            left = deadline - _monotonic()
            if left <= 0:
                when = pd.Timestamp(missing[0], unit="ms", tz="UTC")
                raise ExchangeError(
                    f"{self.exchange_id} {st.symbol}: the funding rate settled at {when} is not "
                    f"listed after {self.wait_s:g} s (fetch_funding_rate_history); the bar "
                    "opening then is not processed, so a restart charges it once it is there"
                )
            self._stats["waits"] += 1
            await asyncio.sleep(min(self.poll_s, left))
        first = self._first if self._first is not None else t0
        for ms in sorted(t for t in listed if first <= t < t0):
            self._stats["missed"] += 1
            logger.error(
                "%s %s: funding rate %.8f settled at %s was listed after its bar was processed "
                "without it: not charged",
                self.exchange_id, st.symbol, listed[ms], pd.Timestamp(ms, unit="ms", tz="UTC"),
            )  # fmt: skip
        newest = max(st.seen_until, max(listed, default=-1))
        st.seen_until = newest
        st.due = sorted(d for d in {*st.due, nxt} if d > max(t1, newest))
        st.refresh = not st.due
        return {t: r for t, r in listed.items() if t0 <= t <= t1}

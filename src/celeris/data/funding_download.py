"""Download perpetual-swap funding rates through ccxt: :func:`download_funding`.

The requests go through the helpers of :mod:`celeris.data.exchange` (the retry policy with
exponential backoff, ccxt's rate limiter, the progress bar), so a funding download behaves like
a bar download; what differs is the answer (funding records, not OHLCV rows), the checks (a
perpetual swap, not a spot market) and where it is stored (beside the bars,
:meth:`Store.save_funding`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_int
from celeris.data.exchange import RetryPolicy, _call, _progress, make_exchange
from celeris.data.funding_schema import FUNDING_COLUMNS, funding_interval, validate_funding
from celeris.data.store import Store, to_utc
from celeris.data.timeframes import Gap, find_gaps
from celeris.errors import ConfigError, DataError, ExchangeError, did_you_mean

logger = logging.getLogger("celeris.data")

__all__ = ["check_perpetual", "download_funding", "funding_record", "to_funding_second"]

_HOUR_MS = 3_600_000
# An empty page moves the cursor by ``limit`` of the shortest funding interval in use (1 hour):
# an exchange that answers time windows, not "the next records", cannot make us skip data.
_EMPTY_PAGE_STEP_MS = _HOUR_MS


def download_funding(
    exchange: str | Any,
    symbol: str,
    since: str | pd.Timestamp | int,
    until: str | pd.Timestamp | int | None = None,
    *,
    store: bool | Store = True,
    limit: int = 1000,
    progress: bool = True,
    retry: RetryPolicy | None = None,
) -> pd.DataFrame:
    """Download the funding rates of a perpetual swap in ``[since, until)``, resuming from the store.

    Pages are requested with ccxt's ``fetch_funding_rate_history(symbol, since=cursor,
    limit=limit)`` (Binance USDⓈ-M: ``GET /fapi/v1/fundingRate``), walking forward from the
    last funding time received, with ccxt's rate limiter on and network failures and
    rate-limit answers retried per ``retry`` (as :func:`~celeris.data.download`). With a store,
    only the funding times before the first or after the last stored one are requested (a
    range apart from the stored one is extended to it, so the store stays one contiguous
    stretch), and each stretch is saved (atomically, beside the bars) once it is complete. A page with no
    records moves the cursor forward by ``limit`` hours.

    Parameters
    ----------
    exchange : str or ccxt.Exchange
        A ccxt exchange id with perpetual swaps (``"binance"``, ``"binanceusdm"``, ``"bybit"``,
        ``"okx"``) or a ready ccxt exchange object.
    symbol : str
        Unified ccxt symbol of the perpetual swap: ``"BTC/USDT:USDT"`` (settled in USDT), not
        the spot ``"BTC/USDT"``.
    since, until : str, pandas.Timestamp or int
        Half-open range; naive times are UTC, ints are epoch milliseconds. ``until`` defaults
        to now.
    store : bool or Store
        Save to (and resume from) the local store: ``True`` for ``Store()``, or a Store.
    limit : int
        Funding records per request (Binance allows 1000).
    progress : bool
        Show a rich progress bar on stderr.
    retry : RetryPolicy, optional
        Retry policy for network errors; default ``RetryPolicy()``.

    Returns
    -------
    pandas.DataFrame
        Funding of ``[since, until)`` (stored and new rows with a store), on the exchange's
        funding times rounded to the nearest second (funding is paid on the hour; Binance's
        ``fundingTime`` may carry a few milliseconds of jitter, which would keep the rows from
        lining up with bar times in :func:`~celeris.data.funding.align_funding`): float64 columns
        ``rate`` and ``mark_price`` (NaN where the exchange sent none; Binance sends it for
        recent records) on the UTC funding times, sorted and unique, validated
        (:func:`~celeris.data.funding_schema.validate_funding`: finite rates within
        ``+-MAX_ABS_RATE``). ``df.attrs`` holds ``"interval"`` (the most common spacing, a
        Timedelta, None under two rows), ``"gaps"`` (a list of :class:`Gap`: funding times
        missing on that spacing, also logged as a warning on the ``celeris.data`` logger) and
        ``"fetched"`` (records downloaded by this call).

    Raises
    ------
    CelerisTypeError
        ``limit`` is not an int.
    ConfigError
        Unknown exchange or symbol, an exchange without funding history in ccxt, a spot (or
        dated futures) symbol, ``since >= until`` or ``limit`` below 1.
    ExchangeError
        The exchange failed after the retries, answered garbage, or has no funding in the range.
    """
    retry = retry if retry is not None else RetryPolicy()
    limit = check_int("limit", limit, minimum=1)
    ex = make_exchange(exchange) if isinstance(exchange, str) else exchange
    ex.enableRateLimit = True
    start_ms, stop_ms = _window(ex, since, until)
    if not (getattr(ex, "has", None) or {}).get("fetchFundingRateHistory"):
        raise ConfigError(
            f"{ex.id} has no funding-rate history in ccxt (has['fetchFundingRateHistory'] is "
            f"not set), so {symbol!r} cannot be downloaded from it; use an exchange with "
            "perpetual swaps such as 'binance', 'bybit' or 'okx' and a symbol like 'BTC/USDT:USDT'"
        )
    db = Store() if store is True else (store or None)
    if db is not None:
        db.funding_path(ex.id, symbol)  # refuse a bad key before any request
    check_perpetual(ex, _call(ex, retry, "load_markets", ex.load_markets), symbol)
    segments = [(start_ms, stop_ms)]
    if db is not None:
        segments = _missing_segments(db.funding_bounds(ex.id, symbol), start_ms, stop_ms)

    pager = _FundingPager(ex, retry, symbol, limit=limit, db=db)
    with _progress(progress, f"{ex.id} {symbol} funding") as bar:
        pager.fetch(segments, bar)
    start = pd.Timestamp(start_ms, unit="ms", tz="UTC")
    stop = pd.Timestamp(stop_ms, unit="ms", tz="UTC")
    if db is not None and db.funding_bounds(ex.id, symbol) is not None:
        funding = db.read_funding(ex.id, symbol, start, stop)
    else:
        funding = _frame(pager.kept, ex.id, symbol)
    if len(funding) == 0:
        raise ExchangeError(f"{ex.id} has no funding rates for {symbol} between {start} and {stop}")
    times = pd.DatetimeIndex(funding.index)
    interval = funding_interval(times)
    gaps = _logged_gaps(times, interval, ex.id, symbol)
    funding.attrs = {
        "exchange": ex.id,
        "symbol": symbol,
        "interval": interval,
        "gaps": gaps,
        "fetched": pager.fetched,
    }
    return funding


def _window(
    ex: Any, since: str | pd.Timestamp | int, until: str | pd.Timestamp | int | None
) -> tuple[int, int]:
    """Return ``[start_ms, stop_ms)``, ending at now at the latest (funding is never ahead)."""
    start = to_utc(since, "since")
    stop = to_utc(until, "until") if until is not None else None
    if stop is not None and start >= stop:
        raise ConfigError(f"since ({start}) must be before until ({stop})")
    now_ms = int(ex.milliseconds()) + 1  # a funding settled at this very millisecond is in
    start_ms = int(start.value // 1_000_000)
    stop_ms = min(int(stop.value // 1_000_000), now_ms) if stop is not None else now_ms
    if start_ms >= stop_ms:
        raise ConfigError(f"since ({start}) must be before now; funding is not known ahead")
    return start_ms, stop_ms


def check_perpetual(ex: Any, markets: dict[str, Any], symbol: str) -> None:
    """Raise a ConfigError unless ``symbol`` is a perpetual swap of ``ex``."""
    swaps = [s for s, m in markets.items() if (m or {}).get("swap")]
    market = markets.get(symbol)
    if market is None:
        raise ConfigError(
            f"{ex.id} has no market {symbol!r}{did_you_mean(symbol, swaps or markets)}; "
            "funding is paid on perpetual swaps, e.g. 'BTC/USDT:USDT'"
        )
    if market.get("swap"):
        return
    kind = "a spot market" if market.get("spot") else f"a {market.get('type') or 'non-swap'} market"
    base, quote = market.get("base"), market.get("quote")
    guess = [f"{base}/{quote}:{quote}", f"{base}/{quote}:{base}"]
    perps = [s for s in guess if s in swaps] or [f"{base}/{quote}:{quote}"]
    raise ConfigError(
        f"{ex.id} {symbol} is {kind} and pays no funding; funding rates are those of the "
        f"perpetual swap: use {perps[0]!r} (ccxt's BASE/QUOTE:SETTLE form)"
    )


def _missing_segments(
    bounds: tuple[pd.Timestamp, pd.Timestamp] | None, start_ms: int, stop_ms: int
) -> list[tuple[int, int]]:
    """Return what to fetch so that the stored stretch grows from its edges to cover the request.

    ``[start_ms, first)`` when the request starts before the first stored time and
    ``[last + 1, stop_ms)`` when it ends after the last one. A request that does not touch the
    stored stretch is extended to its edge (the hole between them is fetched too), so the store
    always holds one contiguous stretch of the exchange's history and a later, wider request
    never leaves a hole inside the stored bounds.
    """
    if bounds is None:
        return [(start_ms, stop_ms)]
    first_ms = int(bounds[0].value // 1_000_000)
    last_ms = int(bounds[1].value // 1_000_000)
    segments = [(start_ms, first_ms), (last_ms + 1, stop_ms)]
    return [(a, b) for a, b in segments if a < b]


class _FundingPager:
    """Walk segments page by page and keep the records inside them.

    With a store, each segment is saved when it is complete, so what is stored is always a
    contiguous stretch of the exchange's history (an interrupted segment is fetched again).
    ``kept`` holds every record kept (without a store); ``fetched`` counts them.
    """

    def __init__(
        self, ex: Any, retry: RetryPolicy, symbol: str, *, limit: int, db: Store | None
    ) -> None:
        self.ex, self.retry, self.symbol, self.limit, self.db = ex, retry, symbol, limit, db
        self.kept: list[tuple[int, float, float]] = []
        self.fetched = 0

    def fetch(self, segments: list[tuple[int, int]], bar: Any) -> None:
        """Fetch every segment, showing progress in hours on ``bar`` (or ``None``)."""
        total = sum(-(-(b - a) // _HOUR_MS) for a, b in segments)
        task = bar.add_task("download", total=total) if bar is not None else None
        done_before = 0
        for seg_start, seg_end in segments:
            rows = self._segment(seg_start, seg_end, bar, task, done_before)
            done_before += -(-(seg_end - seg_start) // _HOUR_MS)
            self.fetched += len(rows)
            if self.db is not None and rows:
                self.db.save_funding(_frame(rows, self.ex.id, self.symbol), self.ex.id, self.symbol)
            else:
                self.kept.extend(rows)
        if bar is not None and task is not None:
            bar.update(task, completed=total)

    def _segment(
        self, seg_start: int, seg_end: int, bar: Any, task: Any, done_before: int
    ) -> list[tuple[int, float, float]]:
        kept: list[tuple[int, float, float]] = []
        cursor = seg_start
        while cursor < seg_end:
            rows, last = self._page(cursor)
            if not rows:
                cursor += self.limit * _EMPTY_PAGE_STEP_MS
            else:
                if last < cursor:
                    raise ExchangeError(
                        f"{self.ex.id}: asked for {self.symbol} funding from "
                        f"{pd.Timestamp(cursor, unit='ms', tz='UTC')} and got records ending at "
                        f"{pd.Timestamp(last, unit='ms', tz='UTC')}"
                    )
                kept.extend(r for r in rows if seg_start <= r[0] < seg_end)
                cursor = last + 1
            if bar is not None and task is not None:
                done = (min(cursor, seg_end) - seg_start) // _HOUR_MS
                bar.update(task, completed=done_before + done)
        return kept

    def _page(self, cursor: int) -> tuple[list[tuple[int, float, float]], int]:
        """Return the page's records (times rounded to the second) and its last time as sent.

        The cursor walks on the exchange's own times, so a record sent at 08:00:00.005 and
        recorded at 08:00:00 is not asked for again and again.
        """
        records = _call(
            self.ex,
            self.retry,
            f"fetch_funding_rate_history({self.symbol!r}, since={cursor})",
            self.ex.fetch_funding_rate_history,
            self.symbol,
            since=cursor,
            limit=self.limit,
        )
        raw = [funding_record(r, self.ex.id, self.symbol) for r in (records or [])]
        rows = [(to_funding_second(ms), rate, mark) for ms, rate, mark in raw]
        return rows, max((ms for ms, _, _ in raw), default=cursor)


def funding_record(record: Any, exchange_id: str, symbol: str) -> tuple[int, float, float]:
    """Turn a ccxt funding-rate-history structure into ``(ms, rate, mark_price)``.

    ccxt's unified structure has no mark price; the exchange's own answer (``info``) does on
    Binance (``markPrice``, empty for old records): NaN when absent or empty.
    """
    if not isinstance(record, dict) or record.get("timestamp") is None:
        raise ExchangeError(
            f"{exchange_id} {symbol}: the exchange sent a funding record without a time: "
            f"{record!r:.200}"
        )
    rate = record.get("fundingRate")
    info = record.get("info")
    mark = info.get("markPrice") if isinstance(info, dict) else None
    try:
        rate_value = float(rate) if rate is not None else np.nan
        mark_value = float(mark) if mark not in (None, "") else np.nan
    except (TypeError, ValueError) as exc:
        raise ExchangeError(
            f"{exchange_id} {symbol}: the exchange sent an unreadable funding record at "
            f"{pd.Timestamp(int(record['timestamp']), unit='ms', tz='UTC')}: {exc}"
        ) from None
    return int(record["timestamp"]), rate_value, mark_value


def to_funding_second(ms: int) -> int:
    """Round epoch milliseconds to the nearest second (funding is paid on the hour; Binance's
    ``fundingTime`` may carry a few milliseconds of jitter, e.g. 08:00:00.005)."""
    return (ms + 500) // 1000 * 1000


def _frame(rows: list[tuple[int, float, float]], exchange_id: str, symbol: str) -> pd.DataFrame:
    """Turn ``(ms, rate, mark_price)`` rows into a validated funding frame (last row wins)."""
    frame = pd.DataFrame(rows, columns=["time", *FUNDING_COLUMNS])
    frame = frame.drop_duplicates("time", keep="last").sort_values("time")
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame.pop("time").astype("int64"), unit="ms", utc=True), name="time"
    ).as_unit("ns")
    try:
        return validate_funding(frame, f"{exchange_id} {symbol}")
    except DataError as exc:
        raise ExchangeError(f"the exchange sent bad funding: {exc}") from exc


def _logged_gaps(
    index: pd.DatetimeIndex, interval: pd.Timedelta | None, exchange_id: str, symbol: str
) -> list[Gap]:
    gaps = find_gaps(index, interval) if interval is not None else []
    if gaps:
        logger.warning(
            "%s %s funding every %s: %d gap(s), %d missing funding times, first at %s",
            exchange_id,
            symbol,
            _hours_text(interval),
            len(gaps),
            sum(g.missing for g in gaps),
            gaps[0].start,
        )
    return gaps


def _hours_text(interval: pd.Timedelta | None) -> str:
    """``8h`` for eight hours (the exchanges' spelling), the Timedelta itself otherwise."""
    if interval is not None and interval % pd.Timedelta(hours=1) == pd.Timedelta(0):
        return f"{interval // pd.Timedelta(hours=1)}h"
    return str(interval)

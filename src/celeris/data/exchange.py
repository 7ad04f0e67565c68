"""Download OHLCV bars from an exchange through ccxt: :func:`download`.

Funding rates of perpetual swaps: :func:`celeris.data.funding_download.download_funding`, which
uses the same retry, rate-limit and progress helpers.

ccxt is imported only when a download starts (``pip install 'celeris[exchange]'``).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import pandas as pd

from celeris._settings import FrozenConfig, integer, number
from celeris.checks import check_int
from celeris.data.schema import BAR_COLUMNS, validate
from celeris.data.store import Store, to_utc
from celeris.data.timeframes import Gap, find_gaps
from celeris.errors import ConfigError, DataError, ExchangeError, did_you_mean
from celeris.progress import progress_bar

logger = logging.getLogger("celeris.data")

_sleep = time.sleep  # tests replace this to run backoffs instantly
#: What ``exchange_url`` takes for ccxt's own sandbox (testnet) URLs.
SANDBOX = ("sandbox", "testnet")


class RetryPolicy(FrozenConfig, kw_only=False):
    """How often and how patiently to retry a request that failed on the network side.

    Frozen; an unknown field is refused with a "did you mean" hint, a wrong type raises
    :class:`~celeris.errors.CelerisTypeError`, a negative (or NaN) value
    :class:`~celeris.errors.ConfigError`.

    Parameters
    ----------
    max_retries : int
        Retries after the first attempt (so ``max_retries + 1`` attempts in all).
    backoff : float
        Seconds before the first retry; doubled after each failure.
    max_backoff : float
        Upper bound of one wait, in seconds (``math.inf``: no bound).
    """

    config_label: ClassVar[str] = "retry"

    max_retries: Annotated[int, integer(ge=0)] = 5
    backoff: Annotated[float, number(ge=0.0, finite=False)] = 1.0
    max_backoff: Annotated[float, number(ge=0.0, finite=False)] = 30.0

    def delay(self, attempt: int) -> float:
        """Return the wait in seconds before retry number ``attempt`` (0-based)."""
        return float(min(self.backoff * 2.0**attempt, self.max_backoff))


def make_exchange(exchange_id: str, *, exchange_url: str | None = None) -> Any:
    """Create a ccxt exchange with its rate limiter on, or raise :class:`ConfigError`.

    ``exchange_url`` points it at another server (see :func:`redirect_exchange`).
    """
    try:
        import ccxt
    except ImportError as exc:  # pragma: no cover - ccxt is a declared extra
        raise ConfigError("downloading needs ccxt: pip install 'celeris[exchange]'") from exc
    name = str(exchange_id).strip().lower()
    if name not in ccxt.exchanges:
        raise ConfigError(
            f"unknown exchange {exchange_id!r}{did_you_mean(name, ccxt.exchanges)}; "
            "use a ccxt exchange id such as 'binance', 'kraken', 'coinbase' or 'okx'"
        )
    ex = getattr(ccxt, name)({"enableRateLimit": True})
    if exchange_url is not None:
        redirect_exchange(ex, exchange_url)
    return ex


def redirect_exchange(ex: Any, url: str) -> None:
    """Point every REST and websocket root of the ccxt exchange ``ex`` at ``url``.

    ``"sandbox"`` (or ``"testnet"``) switches on ccxt's own sandbox URLs
    (``ex.set_sandbox_mode(True)``: Binance's spot and futures testnets, for instance).
    Otherwise ``url`` is ``http(s)://HOST[:PORT][/PREFIX]`` and each API root
    ``SCHEME://ORIGINAL-HOST[:port]/PATH`` in ``ex.urls["api"]`` becomes
    ``URL/ORIGINAL-HOST/PATH`` (``ws``/``wss`` for websocket roots, after the scheme of
    ``url``). Keeping the original host as the first path segment lets one server stand in for
    all of an exchange's hosts (Binance spreads spot, futures and their streams over a dozen) and
    keeps ccxt's own host-based decisions working (ccxt tells a Binance spot stream from a futures
    one by ``/stream`` in its URL). :class:`celeris.testing.fake_exchange.FakeExchange`
    understands these paths.
    """
    if str(url).strip().lower() in SANDBOX:
        if not ex.urls.get("test"):
            raise ConfigError(f"exchange {ex.id!r} has no sandbox (testnet) URLs in ccxt")
        ex.set_sandbox_mode(True)
        return
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(
            f"bad exchange URL {url!r}: write http(s)://HOST[:PORT], e.g. http://127.0.0.1:9000, "
            "or 'sandbox' for the exchange's testnet"
        )
    base = f"{parts.netloc}{parts.path.rstrip('/')}"
    ws_scheme = "wss" if parts.scheme == "https" else "ws"

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if not isinstance(value, str) or "://" not in value:
            return value
        old = urlsplit(value)
        scheme = ws_scheme if old.scheme in ("ws", "wss") else parts.scheme
        host = old.netloc.rsplit(":", 1)[0] if old.netloc.count(":") == 1 else old.netloc
        return f"{scheme}://{base}/{host}{old.path}"

    ex.urls["api"] = move(ex.urls["api"])


# _call (the one retry loop of every ccxt request) and _progress are shared with
# celeris.data.funding_download, so funding downloads retry and report exactly as bar downloads.
def _call(ex: Any, retry: RetryPolicy, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    import ccxt

    for attempt in range(retry.max_retries + 1):
        try:
            return fn(*args, **kwargs)
        except ccxt.NetworkError as exc:  # includes RateLimitExceeded, DDoSProtection, timeouts
            if attempt == retry.max_retries:
                raise ExchangeError(
                    f"{ex.id}: {what} failed {attempt + 1} times, last with "
                    f"{type(exc).__name__}: {_short(exc)}"
                ) from exc
            wait = retry.delay(attempt)
            logger.info(
                "%s: %s failed (%s), retry %d/%d in %.2fs",
                ex.id,
                what,
                type(exc).__name__,
                attempt + 1,
                retry.max_retries,
                wait,
            )
            _sleep(wait)
        except ccxt.BadSymbol as exc:
            raise ConfigError(f"{ex.id}: {_short(exc)}") from exc
        except ccxt.BaseError as exc:
            raise ExchangeError(
                f"{ex.id}: {what} failed: {type(exc).__name__}: {_short(exc)}"
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def download(
    exchange: str | Any,
    symbol: str,
    timeframe: str,
    since: str | pd.Timestamp | int,
    until: str | pd.Timestamp | int | None = None,
    *,
    store: bool | Store = True,
    limit: int = 1000,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    checkpoint: int = 200_000,
) -> pd.DataFrame:
    """Download bars of ``[since, until)`` from an exchange, resuming from the local store.

    Pages are requested with ``fetch_ohlcv(symbol, timeframe, since=cursor, limit=limit)``,
    walking forward from the last bar received; ccxt's rate limiter is on
    (``enableRateLimit=True``: requests are spaced by the exchange's ``rateLimit``). Network
    failures and rate-limit answers (``ccxt.NetworkError``, ``ccxt.RateLimitExceeded``) are
    retried with exponential backoff per ``retry``. With a store, only the bars missing before
    the first or after the last stored bar are requested (a range apart from the stored bars
    is extended to them, so the store stays one contiguous stretch), and the fetched bars are
    saved every ``checkpoint`` bars (the bars before the first stored one once all are in, so
    the store never has a hole), so an interrupted download resumes where it stopped. The
    bar still forming at the time of the call is never kept. A page with no bars moves the
    cursor forward by ``limit`` bars (some exchanges answer windows, not "the next bars").

    Parameters
    ----------
    exchange : str or ccxt.Exchange
        A ccxt exchange id (``"binance"``) or a ready ccxt exchange object (for custom URLs,
        credentials or a sandbox); its ``enableRateLimit`` is switched on.
    symbol : str
        Unified ccxt symbol, e.g. ``"BTC/USDT"``.
    timeframe : str
        Exchange timeframe, e.g. ``"1m"``, ``"1h"``, ``"1d"``.
    since, until : str, pandas.Timestamp or int
        Half-open range; naive times are UTC, ints are epoch milliseconds. ``until`` defaults
        to now.
    store : bool or Store
        Save to (and resume from) the local store: ``True`` for ``Store()``, or a Store.
    limit : int
        Bars per request (the exchange may cap it; Binance allows 1000).
    progress : bool
        Show a rich progress bar on stderr.
    retry : RetryPolicy, optional
        Retry policy for network errors; default ``RetryPolicy()`` (5 retries from 1 s).
    checkpoint : int
        Save to the store every this many fetched bars.

    Returns
    -------
    pandas.DataFrame
        Validated bars of ``[since, until)`` (stored and new ones when ``store`` is on).
        ``df.attrs`` holds ``"gaps"`` (a list of :class:`Gap`: runs of missing bars between
        the first and the last bar, also logged as a warning on the ``celeris.data`` logger)
        and ``"fetched"`` (the number of bars downloaded by this call).

    Raises
    ------
    CelerisTypeError
        ``limit`` or ``checkpoint`` is not an int (a bool or a float, say).
    ConfigError
        Unknown exchange, symbol or timeframe, ``since >= until``, or ``limit`` or
        ``checkpoint`` below 1.
    ExchangeError
        The exchange failed after the retries, answered garbage, or has no bars in the range.
    """
    retry = retry if retry is not None else RetryPolicy()
    limit, checkpoint = _check_paging(limit, checkpoint)
    ex = make_exchange(exchange) if isinstance(exchange, str) else exchange
    ex.enableRateLimit = True
    start = to_utc(since, "since")
    stop = to_utc(until, "until") if until is not None else None
    if stop is not None and start >= stop:
        raise ConfigError(f"since ({start}) must be before until ({stop})")
    _check_timeframe(ex, timeframe)
    db = Store() if store is True else (store or None)
    if db is not None:
        db.key(ex.id, symbol, timeframe)  # refuse a bad key before any request
    tf_ms = int(ex.parse_timeframe(timeframe) * 1000)
    start_ms, stop_ms = _closed_bars_window(ex, start, stop, tf_ms)
    _check_symbol(ex, retry, symbol)
    segments = [(start_ms, stop_ms)]
    if db is not None:
        segments = _missing_segments(db, ex.id, symbol, timeframe, start_ms, stop_ms, tf_ms)

    pager = _Pager(ex, retry, symbol, timeframe, tf_ms, limit=limit, db=db, checkpoint=checkpoint)
    bounds = db.bounds(ex.id, symbol, timeframe) if db is not None else None
    pager.stored_first_ms = int(bounds[0].value // 1_000_000) if bounds is not None else None
    with _progress(progress, f"{ex.id} {symbol} {timeframe}") as bar:
        pager.fetch(segments, bar)
    until_ts = pd.Timestamp(stop_ms, unit="ms", tz="UTC")
    if db is not None:
        pager.flush()
        bars = db.read(ex.id, symbol, timeframe, start, until_ts)
    else:
        bars = _frame(pager.pending, ex.id, symbol) if pager.pending else pd.DataFrame()
    if len(bars) == 0:
        raise ExchangeError(
            f"{ex.id} has no {timeframe} bars for {symbol} between {start} and {until_ts}"
        )
    gaps = _logged_gaps(bars, ex.id, symbol, timeframe, tf_ms)
    bars.attrs = {
        "exchange": ex.id,
        "symbol": symbol,
        "timeframe": timeframe,
        "gaps": gaps,
        "fetched": pager.fetched,
    }
    return bars


def _check_paging(limit: int, checkpoint: int) -> tuple[int, int]:
    return check_int("limit", limit, minimum=1), check_int("checkpoint", checkpoint, minimum=1)


def _check_timeframe(ex: Any, timeframe: str) -> None:
    timeframes = getattr(ex, "timeframes", None) or {}
    if timeframes and timeframe not in timeframes:
        raise ConfigError(
            f"{ex.id} has no timeframe {timeframe!r}{did_you_mean(timeframe, timeframes)}; "
            f"it offers {', '.join(timeframes)}"
        )


def _check_symbol(ex: Any, retry: RetryPolicy, symbol: str) -> None:
    markets = _call(ex, retry, "load_markets", ex.load_markets)
    if symbol not in markets:
        raise ConfigError(
            f"{ex.id} has no market {symbol!r}{did_you_mean(symbol, markets)}; "
            "use a unified symbol such as 'BTC/USDT'"
        )


def _closed_bars_window(
    ex: Any, start: pd.Timestamp, stop: pd.Timestamp | None, tf_ms: int
) -> tuple[int, int]:
    """Return ``[start_ms, stop_ms)``, ending before the bar still forming (never kept)."""
    now_ms = int(ex.milliseconds())
    forming = (now_ms // tf_ms) * tf_ms  # start of the bar still forming
    start_ms = int(start.value // 1_000_000)
    stop_ms = min(int(stop.value // 1_000_000), forming) if stop is not None else forming
    if start_ms >= stop_ms:
        raise ConfigError(
            f"since ({start}) must be before until ({stop or 'now'}) and before the bar still forming"
        )
    return start_ms, stop_ms


def _missing_segments(
    db: Store,
    exchange_id: str,
    symbol: str,
    timeframe: str,
    start_ms: int,
    stop_ms: int,
    tf_ms: int,
) -> list[tuple[int, int]]:
    """Return what to fetch so that the stored bars grow from their edges to cover the request.

    ``[start_ms, first)`` when the request starts before the first stored bar and
    ``[last + tf, stop_ms)`` when it ends after the last one. A request that does not touch the
    stored bars is extended to their edge (the hole between them is fetched too), so the store
    always holds one contiguous stretch of the exchange's history and a later, wider request
    never leaves a hole inside the stored bounds.
    """
    bounds = db.bounds(exchange_id, symbol, timeframe)
    if bounds is None:
        return [(start_ms, stop_ms)]
    first_ms = int(bounds[0].value // 1_000_000)
    last_ms = int(bounds[1].value // 1_000_000)
    segments = [(start_ms, first_ms), (last_ms + tf_ms, stop_ms)]
    return [(a, b) for a, b in segments if a < b]


class _Pager:
    """Walk segments page by page, keep the bars inside them, save every ``checkpoint`` bars.

    ``pending`` holds the rows not yet saved (all of them without a store); ``fetched`` counts
    the rows kept.
    """

    def __init__(
        self,
        ex: Any,
        retry: RetryPolicy,
        symbol: str,
        timeframe: str,
        tf_ms: int,
        *,
        limit: int,
        db: Store | None,
        checkpoint: int,
    ) -> None:
        self.ex, self.retry, self.symbol, self.timeframe = ex, retry, symbol, timeframe
        self.tf_ms, self.limit, self.db, self.checkpoint = tf_ms, limit, db, checkpoint
        self.pending: list[list[Any]] = []
        self.fetched = 0
        # A segment that ends at the first stored bar is saved only once complete: a
        # checkpoint of its start would leave a hole before the stored bars.
        self.stored_first_ms: int | None = None
        self._bar: Any = None
        self._task: Any = None

    def flush(self) -> None:
        """Save the pending rows to the store (nothing without one)."""
        if self.db is not None and self.pending:
            self.db.save(
                _frame(self.pending, self.ex.id, self.symbol),
                self.ex.id,
                self.symbol,
                self.timeframe,
            )
            self.pending = []

    def fetch(self, segments: list[tuple[int, int]], bar: Any) -> None:
        """Fetch every segment, showing progress on ``bar`` (a progress bar or ``None``)."""
        total = sum((b - a) // self.tf_ms + 1 for a, b in segments)
        self._bar = bar
        self._task = bar.add_task("download", total=total) if bar is not None else None
        done_before = 0
        for seg_start, seg_end in segments:
            self._segment(seg_start, seg_end, done_before, total)
            done_before += (seg_end - seg_start) // self.tf_ms + 1
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=total)

    def _segment(self, seg_start: int, seg_end: int, done_before: int, total: int) -> None:
        bar, task, tf_ms = self._bar, self._task, self.tf_ms
        before_stored = self.stored_first_ms is not None and seg_start < self.stored_first_ms
        cursor = seg_start
        while cursor < seg_end:
            rows = self._page(cursor)
            if not rows:
                # Some exchanges answer windows, not "the next bars": step over an empty one.
                cursor += self.limit * tf_ms
                if bar is not None and task is not None:
                    bar.advance(task, self.limit)
                continue
            last = int(rows[-1][0])
            if last < cursor:
                raise ExchangeError(
                    f"{self.ex.id}: asked for bars from {pd.Timestamp(cursor, unit='ms', tz='UTC')} "
                    f"and got bars ending at {pd.Timestamp(last, unit='ms', tz='UTC')}"
                )
            keep = [r for r in rows if seg_start <= int(r[0]) < seg_end]
            self.pending.extend(keep)
            self.fetched += len(keep)
            if bar is not None and task is not None:
                done = done_before + (min(last, seg_end) - seg_start) // tf_ms + 1
                bar.update(task, completed=min(total, done))
            cursor = last + tf_ms
            if self.db is not None and len(self.pending) >= self.checkpoint and not before_stored:
                self.flush()
        if before_stored:
            self.flush()  # complete: it now touches the stored bars

    def _page(self, cursor: int) -> list[list[Any]]:
        rows = _call(
            self.ex,
            self.retry,
            f"fetch_ohlcv({self.symbol!r}, {self.timeframe!r}, since={cursor})",
            self.ex.fetch_ohlcv,
            self.symbol,
            self.timeframe,
            since=cursor,
            limit=self.limit,
        )
        return [r for r in (rows or []) if r and r[0] is not None]


def _logged_gaps(
    bars: pd.DataFrame, exchange_id: str, symbol: str, timeframe: str, tf_ms: int
) -> list[Gap]:
    gaps = find_gaps(bars, pd.Timedelta(milliseconds=tf_ms))
    if gaps:
        logger.warning(
            "%s %s %s: %d gap(s), %d missing bars, first at %s",
            exchange_id,
            symbol,
            timeframe,
            len(gaps),
            sum(g.missing for g in gaps),
            gaps[0].start,
        )
    return gaps


def _frame(rows: list[list[Any]], exchange_id: str, symbol: str) -> pd.DataFrame:
    """Turn ccxt OHLCV rows ``[ms, o, h, l, c, v]`` into a validated bar frame."""
    frame = pd.DataFrame([r[:6] for r in rows], columns=["time", *BAR_COLUMNS])
    frame = frame.drop_duplicates("time", keep="last").sort_values("time")
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame.pop("time").astype("int64"), unit="ms", utc=True), name="time"
    ).as_unit("ns")
    try:
        return validate(frame.astype("float64"))
    except DataError as exc:
        raise ExchangeError(f"{exchange_id} {symbol}: the exchange sent bad bars: {exc}") from exc


def _progress(enabled: bool, description: str) -> Any:
    # A download's bar stays on screen when done: it is the record of what was fetched.
    return progress_bar(enabled, description, transient=False) or nullcontext(None)


__all__ = ["Gap", "RetryPolicy", "download", "make_exchange", "redirect_exchange"]

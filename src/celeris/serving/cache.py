"""Forecast caches: an in-process LRU with TTL and an optional Redis tier.

Entries are keyed by :func:`cache_key` — a BLAKE2b digest of the model name, version and the
input window (dtype, shape and bytes) — so a new model version never sees an old version's
answers. :class:`TieredCache` looks in memory first, then in Redis (promoting a Redis hit to
memory), and writes to both.

Redis is an accelerator, never a dependency: :class:`RedisCache` turns every Redis failure
(refused connection, timeout, a server that went away mid-command) into a miss or a skipped
write, counts it, logs one WARNING per outage (and one INFO on recovery), and stops calling
Redis for a back-off period (doubling up to ``max_backoff_s``) before trying again.

A *slow* Redis is an outage too. Look-ups run on the caller's thread, which in a server is the
event loop: a Redis answering in 20 ms (alive, under any socket timeout) once held every request
of the process behind it (1,538 -> 45 requests/s). So each ``MGET`` runs in a reader thread and
the caller waits at most ``read_budget_s`` for it; a look-up over budget is a miss (counted in
``errors`` and ``slow``), and ``slow_strikes`` of them in a row (3: one scheduling hiccup of a
loaded machine is not an outage) make the tier bypassed exactly as after a refused connection
(one WARNING, the same back-off). While bypassed no look-up waits at all: once a back-off has passed,
a reader thread probes Redis (a timed ``PING``, within the budget to count) and look-ups use it
again only after the probe answered (the next look-up is timed as usual). The connection is
opened in the background when the cache is created, so the first look-up does not pay for the
handshake.

Reads wait (a request needs the answer), writes do not: :meth:`RedisCache.put_many` queues the
encoded entries for a writer thread that sends everything pending in one pipeline, so a request
never waits for a Redis write (measured ~0.2 ms per round trip on a loaded 2-core machine, more
than the whole batcher's overhead). :meth:`RedisCache.flush` waits for the queue to empty.
Every failure, a write's found by the writer thread included, is reported to ``on_error``
(:class:`TieredCache` turns it into ``cache_errors_total{tier="redis"}``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from celeris.checks import check_int, check_real
from celeris.errors import ConfigError

if TYPE_CHECKING:
    from celeris.serving.batcher import MetricsSink

__all__ = ["MemoryCache", "RedisCache", "TieredCache", "cache_key"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def cache_key(model: str, version: str, array: np.ndarray) -> bytes:
    """Return a 16-byte key for ``array`` computed by ``model`` at ``version``.

    The digest covers the model name and version, the dtype, the shape and the raw bytes (in
    C order), so equal windows in different dtypes or layouts never collide.
    """
    arr = np.asarray(array, order="C")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{model}\x00{version}\x00{arr.dtype.str}\x00{arr.shape}\x00".encode())
    h.update(memoryview(arr).cast("B"))  # type: ignore[arg-type]
    return h.digest()


def _check_ttl(ttl_s: float | None) -> float | None:
    if ttl_s is None:
        return None
    return check_real("ttl_s", ttl_s, minimum=0, open_low=True, reason="seconds, or None")


def _frozen(value: np.ndarray) -> np.ndarray:
    """Return a read-only copy of ``value``, so no caller can change a cached answer."""
    out = np.array(value, copy=True)
    out.setflags(write=False)
    return out


class MemoryCache:
    """An in-process LRU of arrays with a time to live; thread-safe.

    Parameters
    ----------
    max_items
        Most entries kept; the least recently used goes first.
    ttl_s
        Seconds an entry lives after it is written (``None``: until evicted).
    clock
        Monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, max_items: int = 100_000, ttl_s: float | None = 60.0, *, clock: Clock = time.monotonic
    ) -> None:
        self.max_items = check_int("max_items", max_items, minimum=1)
        self.ttl_s = _check_ttl(ttl_s)
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> np.ndarray | None:
        """Return the live entry for ``key`` (read-only) or ``None``."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            if entry[0] <= self._clock():
                del self._data[key]
                self.expirations += 1
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """Return :meth:`get` of each key."""
        return [self.get(k) for k in keys]

    def put(self, key: bytes, value: np.ndarray) -> None:
        """Store a read-only copy of ``value`` under ``key``, evicting the least recently used."""
        self._store(key, _frozen(value))

    def put_many(self, keys: Sequence[bytes], values: Sequence[np.ndarray]) -> None:
        """Store each value under its key."""
        for k, v in zip(keys, values, strict=True):
            self._store(k, _frozen(v))

    def _store(self, key: bytes, value: np.ndarray) -> None:
        expires = math.inf if self.ttl_s is None else self._clock() + self.ttl_s
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()

    def stats(self) -> dict[str, Any]:
        """Return size, hits, misses, hit rate, evictions and expirations."""
        looked = self.hits + self.misses
        return {
            "items": len(self._data),
            "max_items": self.max_items,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / looked if looked else 0.0,
            "evictions": self.evictions,
            "expirations": self.expirations,
        }


# Redis value layout: b"<dtype.str>|<d0>,<d1>,...|" followed by the C-order bytes.
def _encode(value: np.ndarray) -> bytes:
    arr = np.asarray(value, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    header = f"{arr.dtype.str}|{','.join(map(str, arr.shape))}|".encode()
    return header + arr.tobytes()


def _decode(blob: bytes) -> np.ndarray | None:
    try:
        dtype_s, shape_s, data = blob.split(b"|", 2)
        dtype = np.dtype(dtype_s.decode())
        shape = tuple(int(d) for d in shape_s.decode().split(",")) if shape_s else ()
        if dtype.hasobject or dtype.itemsize * math.prod(shape) != len(data):
            return None
        out = np.frombuffer(data, dtype=dtype).reshape(shape)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    return out  # frombuffer over bytes is read-only already


class RedisCache:
    """A Redis tier of arrays with a TTL that never raises to its caller.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (anything ``redis.Redis.from_url`` takes).
    ttl_s
        Expiry set on every write (Redis ``PX``).
    prefix
        Prepended to every key, so several deployments can share a server.
    socket_timeout_s
        Connect and command timeout: what one call can cost when the server hangs.
    backoff_s, max_backoff_s
        After a failure, Redis is not called for ``backoff_s``, doubling per failed retry up to
        ``max_backoff_s``; the first success ends the outage.
    max_pending
        Most entries waiting for the writer thread; beyond it writes are dropped (counted).
    read_budget_s
        Longest a look-up waits for Redis; a slower answer is a miss. Many times the healthy
        round trip (~0.1-0.2 ms), small enough that the few over-budget look-ups before the
        circuit opens cost the event loop nothing noticeable.
    slow_strikes
        Over-budget look-ups in a row that open the circuit (Redis is then bypassed for the
        back-off period, as during an outage). Right after a back-off, one is enough.
    clock
        Monotonic clock in seconds (injectable for tests).
    """

    on_error: Callable[[], None] | None
    """Called (never raising) once per failed or over-budget Redis call, from any thread."""

    def __init__(
        self,
        url: str,
        ttl_s: float = 60.0,
        prefix: str = "celeris:",
        *,
        socket_timeout_s: float = 0.05,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_pending: int = 10_000,
        read_budget_s: float = 0.005,
        slow_strikes: int = 3,
        clock: Clock = time.monotonic,
    ) -> None:
        try:
            import redis
            import redis.backoff
            import redis.retry
        except ImportError as exc:  # pragma: no cover - redis is in the serve extra
            raise ConfigError(
                "the Redis cache needs redis-py: pip install 'celeris[serve]'"
            ) from exc
        ttl = _check_ttl(ttl_s)
        if ttl is None:
            raise ConfigError("the Redis cache needs a ttl_s")
        socket_timeout_s, backoff_s, max_backoff_s, read_budget_s = (
            check_real(name, value, minimum=0, open_low=True, reason="seconds")
            for name, value in (
                ("socket_timeout_s", socket_timeout_s),
                ("backoff_s", backoff_s),
                ("max_backoff_s", max_backoff_s),
                ("read_budget_s", read_budget_s),
            )
        )
        self.url = url
        self.ttl_s = ttl
        self._ttl_ms = max(1, round(ttl * 1e3))
        self.prefix = prefix.encode()
        self.backoff_s = backoff_s
        self.max_backoff_s = max(max_backoff_s, backoff_s)
        self.read_budget_s = float(read_budget_s)
        self.slow_strikes = check_int("slow_strikes", slow_strikes, minimum=1)
        self._slow_run = 0  # over-budget look-ups in a row
        self.on_error = None
        self._clock = clock
        self._errors_type: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            # No client-side retries: a failure is an outage to back off from, not to hammer.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {url!r}: {exc}") from None
        self._lock = threading.Lock()
        self._available = True
        self._retry_at = 0.0
        self._backoff = backoff_s
        self._down_since: float | None = None  # set during an outage
        self._slow_outage = False  # that outage began with (or saw) over-budget look-ups
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.outages = 0
        self.skipped = 0  # calls not made because Redis was backing off
        self.slow = 0  # look-ups abandoned after read_budget_s
        self.dropped = 0  # writes dropped because the writer queue was full
        self.written = 0
        self.max_pending = max_pending
        self._pending: deque[tuple[bytes, bytes]] = deque()
        self._cv = threading.Condition()
        self._writing = False
        self._closed = False
        self._writer: threading.Thread | None = None
        # Two readers: an abandoned MGET (up to socket_timeout_s) never delays the next one.
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="celeris-redis-reader"
        )
        self._probing = False
        self._readers.submit(self._connect)

    @property
    def available(self) -> bool:
        """Return False during an outage: from a failure (or ``slow_strikes`` slow look-ups)
        until a call to Redis succeeds again (for a slow Redis: a look-up within budget)."""
        return self._down_since is None

    def _connect(self) -> None:
        # Open a pooled connection before the first look-up needs it; a failure here is
        # reported by the first real call, so it is not counted twice.
        with contextlib.suppress(*self._errors_type):
            self._client.ping()

    def _usable(self) -> bool:
        if self._available:
            return True
        with self._lock:
            if not self._probing and self._clock() >= self._retry_at and not self._closed:
                self._probing = True
                self._retry_at = self._clock() + self._backoff  # no second probe meanwhile
                with contextlib.suppress(RuntimeError):  # closed meanwhile: no probe
                    self._readers.submit(self._probe)
        self.skipped += 1
        return False

    def _probe(self) -> None:
        """Ask Redis whether it is back; runs in a reader thread.

        Not timed against the budget: a background thread's clock also counts its waits for
        the GIL, which a busy server holds for milliseconds. The next look-up is timed (its
        caller waits, so the reader runs at once), and a slow Redis opens the circuit again
        with a doubled back-off.
        """
        try:
            self._client.ping()
        except self._errors_type as exc:
            self._failed(exc, "PING")
        else:
            # Alive: let look-ups try it again. The outage ends with the first call that
            # succeeds (for a slow Redis, a look-up within budget); one slow look-up re-opens.
            with self._lock:
                self._slow_run = self.slow_strikes - 1
                self._available = True
            if not self._slow_outage:
                self._succeeded()
        finally:
            self._probing = False

    def _count_error(self) -> None:
        hook = self.on_error
        if hook is not None:
            try:
                hook()
            except Exception:  # a metrics sink must never break the cache
                log.exception("Redis cache error hook failed")
        with self._lock:
            self.errors += 1

    def _failed(self, exc: BaseException, what: str, *, slow: bool = False) -> None:
        now = self._clock()
        self._count_error()
        with self._lock:
            self._available = False
            if self._down_since is None:  # a new outage: logged once
                self._down_since = now
                self._slow_outage = slow
                self._backoff = self.backoff_s
                self.outages += 1
                log.warning(
                    "Redis cache at %s unavailable (%s failed: %s: %s); serving from memory, "
                    "retrying after %g s, backing off to %g s",
                    self._safe_url(),
                    what,
                    type(exc).__name__,
                    exc,
                    self.backoff_s,
                    self.max_backoff_s,
                )
            else:  # still down (or slow again right after a probe): back off longer
                self._slow_outage = self._slow_outage or slow
                self._backoff = min(self._backoff * 2, self.max_backoff_s)
            self._retry_at = now + self._backoff

    def _succeeded(self, *, timed: bool = True) -> None:
        """A call to Redis worked; ``timed``: it was a look-up within budget (a write's or a
        probe's success does not end an outage caused by slowness)."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None or (self._slow_outage and not timed):
                return
            self._available = True
            down = self._clock() - self._down_since
            self._down_since = None
            self._slow_outage = False
            log.info("Redis cache at %s is back after %.1f s", self._safe_url(), down)

    def _safe_url(self) -> str:
        # Never log a password embedded in the URL.
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else self.url

    def get(self, key: bytes) -> np.ndarray | None:
        """Return the value stored under ``key`` or ``None`` (also on any Redis failure)."""
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """Return the values under ``keys`` with one ``MGET`` (all ``None`` on failure)."""
        if not keys:
            return []
        if not self._usable():
            return [None] * len(keys)
        try:
            future = self._readers.submit(self._client.mget, [self.prefix + k for k in keys])
        except RuntimeError:  # closed
            return [None] * len(keys)
        try:
            blobs = future.result(timeout=self.read_budget_s)
        except concurrent.futures.TimeoutError:
            self.slow += 1
            self._slow_run += 1
            if self._slow_run < self.slow_strikes:
                self._count_error()  # a miss, not (yet) an outage
                return [None] * len(keys)
            self._slow_run = 0
            slow = TimeoutError(
                f"{self.slow_strikes} look-ups in a row got no answer within the "
                f"{self.read_budget_s * 1e3:g} ms budget"
            )
            self._failed(slow, "MGET", slow=True)
            return [None] * len(keys)
        except self._errors_type as exc:
            self._failed(exc, "MGET")
            return [None] * len(keys)
        self._slow_run = 0
        self._succeeded()
        out = [_decode(b) if isinstance(b, bytes) else None for b in blobs]
        found = sum(v is not None for v in out)
        self.hits += found
        self.misses += len(out) - found
        return out

    def put(self, key: bytes, value: np.ndarray) -> None:
        """Store ``value`` under ``key`` with the TTL (skipped on any Redis failure)."""
        self.put_many([key], [value])

    def put_many(self, keys: Sequence[bytes], values: Sequence[np.ndarray]) -> None:
        """Queue each value for the writer thread (``SET`` with the TTL); return at once."""
        if not keys or self._closed:
            return
        entries = [(self.prefix + k, _encode(v)) for k, v in zip(keys, values, strict=True)]
        with self._cv:
            if len(self._pending) + len(entries) > self.max_pending:
                self.dropped += len(entries)
                return
            self._pending.extend(entries)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="celeris-redis-writer", daemon=True
                )
                self._writer.start()
            self._cv.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued write was sent (or dropped); return False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._writing, timeout_s)

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and drained
                entries = list(self._pending)
                self._pending.clear()
                self._writing = True
            try:
                self._write(entries)
            finally:
                with self._cv:
                    self._writing = False
                    self._cv.notify_all()

    def _write(self, entries: list[tuple[bytes, bytes]]) -> None:
        if not self._usable():
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, blob in entries:
                pipe.set(key, blob, px=self._ttl_ms)
            pipe.execute()
        except self._errors_type as exc:
            self._failed(exc, "SET")
            return
        self.written += len(entries)
        self._succeeded(timed=False)

    def close(self) -> None:
        """Send the queued writes (briefly), stop the writer thread and close the pool."""
        self.flush(timeout_s=1.0)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=1.0)
        self._readers.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(*self._errors_type):
            self._client.close()

    def stats(self) -> dict[str, Any]:
        """Return availability, hits, misses, hit rate, errors, outages, skipped calls and
        look-ups abandoned over budget (``slow``)."""
        looked = self.hits + self.misses
        down = self._down_since
        return {
            "url": self._safe_url(),
            "available": self._down_since is None,
            # closed: in use; open: bypassed; half-open: a probe found it alive, the next
            # look-up decides
            "circuit": (
                "closed" if self._down_since is None else "half-open" if self._available else "open"
            ),
            "down_for_s": 0.0 if down is None else self._clock() - down,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / looked if looked else 0.0,
            "errors": self.errors,
            "outages": self.outages,
            "skipped": self.skipped,
            "slow": self.slow,
            "read_budget_s": self.read_budget_s,
            "written": self.written,
            "dropped": self.dropped,
        }


class TieredCache:
    """Memory first, then Redis (optional); hits in Redis are promoted to memory.

    Parameters
    ----------
    memory
        The in-process tier.
    redis
        The shared tier, or ``None``.
    metrics
        Receives one ``cache_event`` per look-up per tier consulted and a ``cache_error`` per
        Redis failure: of a look-up (refused, or slower than its budget) or of a write found by
        the background writer.
    """

    def __init__(
        self,
        memory: MemoryCache | None = None,
        redis: RedisCache | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        from celeris.serving.batcher import guarded

        self.memory = memory if memory is not None else MemoryCache()
        self.redis = redis
        self.metrics: MetricsSink = guarded(metrics)
        if redis is not None:
            redis.on_error = self._redis_failed

    def _redis_failed(self) -> None:
        self.metrics.cache_error("redis")

    def get(self, key: bytes) -> np.ndarray | None:
        """Return the cached value for ``key`` from the first tier that has it, or ``None``."""
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """Return the cached value (or ``None``) for each key, asking Redis once for misses."""
        out = self.memory.get_many(keys)
        metrics = self.metrics
        missing = []
        for i, v in enumerate(out):
            metrics.cache_event("memory", v is not None)
            if v is None:
                missing.append(i)
        if not missing or self.redis is None:
            return out
        errors = self.redis.errors
        found = self.redis.get_many([keys[i] for i in missing])
        if self.redis.errors != errors:  # failed or over budget (counted by _redis_failed)
            return out
        if not self.redis.available:  # backing off: Redis was not asked
            return out
        promote_keys, promote_values = [], []
        for i, v in zip(missing, found, strict=True):
            metrics.cache_event("redis", v is not None)
            if v is not None:
                out[i] = v
                promote_keys.append(keys[i])
                promote_values.append(v)
        if promote_keys:
            self.memory.put_many(promote_keys, promote_values)
        return out

    def put(self, key: bytes, value: np.ndarray) -> None:
        """Store ``value`` in every tier."""
        self.put_many([key], [value])

    def put_many(self, keys: Sequence[bytes], values: Sequence[np.ndarray]) -> None:
        """Store each value under its key in every tier."""
        self.memory.put_many(keys, values)
        if self.redis is not None:
            self.redis.put_many(keys, values)  # queued; the writer reports its failures

    def close(self) -> None:
        """Close the Redis connection pool, if any."""
        if self.redis is not None:
            self.redis.close()

    def stats(self) -> dict[str, Any]:
        """Return per-tier statistics and the overall hit rate of look-ups."""
        mem = self.memory.stats()
        out: dict[str, Any] = {"memory": mem, "redis": None}
        hits, looked = mem["hits"], mem["hits"] + mem["misses"]
        if self.redis is not None:
            red = self.redis.stats()
            out["redis"] = red
            hits += red["hits"]
        out["hit_rate"] = hits / looked if looked else 0.0
        return out

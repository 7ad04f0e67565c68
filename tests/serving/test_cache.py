"""Caches: keys, in-memory LRU with TTL, the Redis tier against a real redis-server, outages."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from celeris import CelerisTypeError, ConfigError
from celeris.serving.cache import MemoryCache, RedisCache, TieredCache, cache_key


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def vec(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# ---------------------------------------------------------------------------- keys


def test_cache_key_depends_on_model_version_dtype_shape_and_values():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    base = cache_key("m", "1", x)
    assert len(base) == 16 and base == cache_key("m", "1", x.copy())
    variants = [
        cache_key("n", "1", x),
        cache_key("m", "2", x),
        cache_key("m", "1", x.astype(np.float64)),
        cache_key("m", "1", x.reshape(3, 4)),
        cache_key("m", "1", x + np.float32(1e-6) * (np.arange(12).reshape(4, 3) == 5)),
    ]
    assert len({base, *variants}) == 6
    # A non-contiguous view hashes like its contiguous copy.
    wide = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert cache_key("m", "1", wide[:, ::2]) == cache_key("m", "1", wide[:, ::2].copy())


# ---------------------------------------------------------------------------- memory tier


def test_memory_cache_evicts_least_recently_used():
    cache = MemoryCache(max_items=3, ttl_s=None)
    for key in (b"a", b"b", b"c"):
        cache.put(key, vec(ord(key)))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"d", vec(4.0))
    assert cache.get(b"b") is None  # b was the least recently used
    assert [cache.get(k) is not None for k in (b"a", b"c", b"d")] == [True, True, True]
    stats = cache.stats()
    assert stats["items"] == 3 and stats["evictions"] == 1
    assert stats["hits"] == 4 and stats["misses"] == 1 and stats["hit_rate"] == pytest.approx(0.8)


def test_memory_cache_entries_expire_after_ttl():
    clock = FakeClock()
    cache = MemoryCache(max_items=10, ttl_s=2.0, clock=clock)
    cache.put(b"k", vec(1.0))
    clock.advance(1.999)
    np.testing.assert_array_equal(cache.get(b"k"), vec(1.0))
    clock.advance(0.002)
    assert cache.get(b"k") is None
    assert cache.stats()["expirations"] == 1 and len(cache) == 0
    # A new write restarts the clock.
    cache.put(b"k", vec(2.0))
    clock.advance(1.5)
    np.testing.assert_array_equal(cache.get(b"k"), vec(2.0))


def test_memory_cache_stores_read_only_copies():
    cache = MemoryCache()
    value = vec(1.0, 2.0)
    cache.put(b"k", value)
    value[0] = 99.0  # the caller changes its array afterwards
    got = cache.get(b"k")
    assert got is not None
    np.testing.assert_array_equal(got, vec(1.0, 2.0))
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 5.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_items": 0}, "max_items"),
        ({"ttl_s": -1.0}, "ttl_s"),
        ({"ttl_s": float("nan")}, "ttl_s"),
    ],
)
def test_memory_cache_bad_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MemoryCache(**kwargs)


# ---------------------------------------------------------------------------- redis tier


def test_redis_cache_round_trip_keeps_dtype_shape_and_ttl(redis_server):
    cache = RedisCache(redis_server.url, ttl_s=30.0, prefix="t:")
    values = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1.5, -2.5], dtype=np.float64),
        np.array(7, dtype=np.int64),
    ]
    keys = [b"a", b"b", b"c"]
    cache.put_many(keys, values)
    assert cache.flush()
    got = cache.get_many([*keys, b"missing"])
    for want, have in zip(values, got[:3], strict=True):
        assert have is not None and have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_array_equal(have, want)
    assert got[3] is None
    ttl_ms = redis_server.client().pttl(b"t:a")
    assert 0 < ttl_ms <= 30_000
    stats = cache.stats()
    assert stats["available"] and stats["hits"] == 3 and stats["misses"] == 1
    assert stats["written"] == 3 and stats["outages"] == 0
    cache.close()


def test_redis_cache_entries_expire_in_redis(redis_server):
    cache = RedisCache(redis_server.url, ttl_s=0.05)
    cache.put(b"k", vec(1.0))
    assert cache.flush()
    assert cache.get(b"k") is not None
    time.sleep(0.12)
    assert cache.get(b"k") is None
    cache.close()


def test_redis_cache_corrupt_entry_reads_as_miss(redis_server):
    cache = RedisCache(redis_server.url, prefix="t:")
    client = redis_server.client()
    client.set(b"t:bad", b"<f4|3|too short")
    client.set(b"t:junk", b"no header at all")
    assert cache.get_many([b"bad", b"junk"]) == [None, None]
    cache.close()


def test_redis_cache_full_writer_queue_drops_and_counts(redis_server):
    cache = RedisCache(redis_server.url, max_pending=2)
    cache.put_many([b"a", b"b", b"c"], [vec(1.0)] * 3)  # more than the queue holds at once
    assert cache.flush()
    assert cache.stats()["dropped"] == 3 and cache.get(b"a") is None
    cache.close()


def test_redis_cache_hides_password_in_logs_and_stats(caplog):
    cache = RedisCache("redis://user:s3cret@127.0.0.1:1/0", backoff_s=10.0)
    with caplog.at_level(logging.WARNING, logger="celeris.serving.cache"):
        assert cache.get(b"k") is None  # nothing listens on port 1
    assert "s3cret" not in caplog.text and "127.0.0.1:1" in caplog.text
    assert "s3cret" not in str(cache.stats())
    cache.close()


def test_redis_cache_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="ttl_s"):
        RedisCache("redis://127.0.0.1:1/0", ttl_s=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="backoff_s"):
        RedisCache("redis://127.0.0.1:1/0", backoff_s=0.0)
    with pytest.raises(ConfigError, match="Redis URL"):
        RedisCache("http://127.0.0.1:1/0")


# ---------------------------------------------------------------------------- tiered


def test_tiered_cache_promotes_redis_hits_to_memory(redis_server, recording_metrics):
    shared = RedisCache(redis_server.url)
    writer = TieredCache(MemoryCache(), shared)
    writer.put(b"k", vec(3.0))
    assert shared.flush()
    # Another process (its own memory tier) finds it in Redis, then in its memory.
    reader = TieredCache(MemoryCache(), RedisCache(redis_server.url), metrics=recording_metrics)
    np.testing.assert_array_equal(reader.get(b"k"), vec(3.0))
    np.testing.assert_array_equal(reader.get(b"k"), vec(3.0))
    assert reader.get(b"nope") is None
    assert recording_metrics.cache_events == [
        ("memory", False),
        ("redis", True),
        ("memory", True),
        ("memory", False),
        ("redis", False),
    ]
    stats = reader.stats()
    assert stats["memory"]["hits"] == 1 and stats["redis"]["hits"] == 1
    assert stats["hit_rate"] == pytest.approx(2 / 3)
    writer.close()
    reader.close()


def test_tiered_cache_survives_redis_outage_and_recovers(redis_server, recording_metrics, caplog):
    redis_tier = RedisCache(redis_server.url, backoff_s=0.05, max_backoff_s=0.1)
    cache = TieredCache(MemoryCache(), redis_tier, metrics=recording_metrics)
    cache.put(b"before", vec(1.0))
    assert redis_tier.flush()

    redis_server.kill()
    with caplog.at_level(logging.INFO, logger="celeris.serving.cache"):
        for i in range(50):  # nothing raises; memory keeps answering
            np.testing.assert_array_equal(cache.get(b"before"), vec(1.0))
            assert cache.get(f"miss{i}".encode()) is None
            cache.put(f"new{i}".encode(), vec(float(i)))
            assert redis_tier.flush()
            np.testing.assert_array_equal(cache.get(f"new{i}".encode()), vec(float(i)))
        assert not redis_tier.available
        stats = cache.stats()["redis"]
        assert stats["outages"] == 1 and stats["errors"] >= 1
        assert recording_metrics.cache_errors and set(recording_metrics.cache_errors) == {"redis"}
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()

        redis_server.start()  # an empty Redis comes back on the same port
        deadline = time.monotonic() + 5.0
        while not redis_tier.available and time.monotonic() < deadline:
            cache.get(b"probe")  # look-ups retry Redis once the back-off has passed
            time.sleep(0.02)
        assert redis_tier.available
        assert any("is back" in r.getMessage() for r in caplog.records)
    cache.put(b"after", vec(2.0))
    assert redis_tier.flush()
    assert redis_server.client().exists(b"celeris:after") == 1
    assert cache.stats()["redis"]["outages"] == 1
    cache.close()


# ---------------------------------------------------------------------------- a slow Redis


class SlowProxy:
    """A TCP proxy in front of a real redis-server that holds every reply ``delay_s``.

    ``commands(b"MGET")`` counts the commands that reached Redis through it.
    """

    def __init__(self, port: int, delay_s: float) -> None:
        import socket
        import threading

        self.delay_s = delay_s
        self._target = ("127.0.0.1", port)
        self._sent = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._socks: list[socket.socket] = [self._listener]
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self, name: bytes) -> int:
        with self._lock:
            return bytes(self._sent).upper().count(b"\r\n" + name + b"\r\n")

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._socks += [client, server]
            for src, dst, slow in ((client, server, False), (server, client, True)):
                t = threading.Thread(target=self._pipe, args=(src, dst, slow), daemon=True)
                t.start()
                self._threads.append(t)

    def _pipe(self, src, dst, slow: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if slow:
                time.sleep(self.delay_s)
            else:
                with self._lock:
                    self._sent += data
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


def _wait_until(check, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def slow_redis(redis_server):
    proxy = SlowProxy(redis_server.port, delay_s=0.2)
    yield proxy
    proxy.close()


def test_redis_cache_slow_server_bypassed_counted_and_logged_like_outage(
    redis_server, slow_redis, recording_metrics, caplog
):
    redis_server.client().set(b"celeris:k", b"<f4|1|" + vec(7.0).tobytes())
    clock = FakeClock()
    # Alive and under its socket timeout, but over the look-up budget: the event loop must not
    # wait for it (it used to wait the whole 200 ms on every look-up).
    tier = RedisCache(slow_redis.url, socket_timeout_s=5.0, read_budget_s=0.02, clock=clock)
    cache = TieredCache(MemoryCache(), tier, metrics=recording_metrics)
    with caplog.at_level(logging.INFO, logger="celeris.serving.cache"):
        assert cache.get(b"k") is None  # over budget: a miss, counted; not yet an outage
        assert (tier.stats()["slow"], tier.available) == (1, True)
        assert recording_metrics.cache_errors == ["redis"]
        assert cache.get(b"k") is None
        assert cache.get(b"k") is None  # the third in a row opens the circuit
        stats = tier.stats()
        assert (stats["available"], stats["slow"], stats["outages"]) == (False, 3, 1)
        assert recording_metrics.cache_errors == ["redis"] * 3
        for _ in range(50):  # bypassed: no look-up reaches (or waits for) Redis meanwhile
            assert cache.get(b"k") is None
        assert tier.stats()["skipped"] == 50
        deadline = time.monotonic() + 10.0  # the abandoned MGETs still reach Redis, late
        while slow_redis.commands(b"MGET") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert slow_redis.commands(b"MGET") == 3  # and they are the only ones
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "budget" in warnings[0].getMessage()

        # Still slow after the back-off: the probe (a PING in the background) finds Redis
        # alive, and the next look-up is timed again: over budget, bypassed again.
        assert tier.stats()["circuit"] == "open"
        clock.advance(tier.backoff_s + 0.001)
        assert cache.get(b"k") is None  # starts the probe; does not wait for it
        _wait_until(lambda: tier.stats()["circuit"] == "half-open")
        assert not tier.available  # alive is not enough: the outage is not over
        assert cache.get(b"k") is None  # half-open: one slow look-up is enough
        stats = tier.stats()
        assert (stats["slow"], stats["circuit"], stats["outages"]) == (4, "open", 1)
        assert recording_metrics.cache_errors == ["redis"] * 4
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # the same outage: not logged again
        assert not any("is back" in r.getMessage() for r in caplog.records)

        slow_redis.delay_s = 0.0  # fast again: after the back-off Redis answers look-ups
        found = None
        deadline = time.monotonic() + 20.0
        while found is None and time.monotonic() < deadline:
            clock.advance(tier.max_backoff_s + 0.001)  # (a reply still in flight may be slow)
            found = cache.get(b"k")
            time.sleep(0.01)
        np.testing.assert_array_equal(found, vec(7.0))
        assert tier.available
        assert any("is back" in r.getMessage() for r in caplog.records)
    cache.close()


def test_tiered_cache_writer_thread_outage_counted_in_cache_errors(recording_metrics):
    # Writes are sent by a background thread: its failures count like a look-up's.
    tier = RedisCache("redis://127.0.0.1:1/0", backoff_s=30.0)  # nothing listens on port 1
    cache = TieredCache(MemoryCache(), tier, metrics=recording_metrics)
    cache.put(b"k", vec(1.0))
    assert tier.flush()
    assert tier.stats()["errors"] == 1
    assert recording_metrics.cache_errors == ["redis"]
    cache.close()


def test_redis_cache_bad_read_budget_raises_clear_error():
    with pytest.raises(ConfigError, match=r"read_budget_s must be > 0, got 0\.0"):
        RedisCache("redis://127.0.0.1:1/0", read_budget_s=0.0)
    # Unified (celeris.checks): a wrong type is a CelerisTypeError (it was a ConfigError).
    with pytest.raises(CelerisTypeError, match="read_budget_s must be a real number > 0"):
        RedisCache("redis://127.0.0.1:1/0", read_budget_s="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="slow_strikes"):
        RedisCache("redis://127.0.0.1:1/0", slow_strikes=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_items": 2.0}, CelerisTypeError, "max_items must be an int >= 1, got float 2.0"),
        ({"max_items": True}, CelerisTypeError, "max_items must be an int >= 1, got bool"),
        ({"ttl_s": True}, CelerisTypeError, "ttl_s must be a real number > 0"),
        ({"ttl_s": "60"}, CelerisTypeError, "ttl_s must be a real number > 0"),
        ({"ttl_s": float("inf")}, ConfigError, "ttl_s must be finite"),
    ],
)
def test_memory_cache_wrong_type_raises_type_error_bad_value_config_error(kwargs, error, match):
    # One rule for every check (celeris.checks): these were all ConfigError before.
    with pytest.raises(error, match=match):
        MemoryCache(**kwargs)

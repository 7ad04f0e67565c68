"""Caches: keys, in-memory LRU with TTL, the Redis tier against a real redis-server, outages."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from celeris import ConfigError
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

"""Prometheus metrics of a serving process: requests, latency, batches, queues, caches, errors,
process/system gauges (psutil) and GPU gauges (NVML when ``pynvml`` imports and finds a GPU).
The hardware is read by :mod:`celeris.compute.telemetry`; this module only exposes it.

:class:`PrometheusMetrics` implements the engine's ``MetricsSink`` protocol. Each instance owns
its :class:`~prometheus_client.CollectorRegistry`, so several servers (or tests) in one process
never collide, and nothing lands in prometheus_client's global registry.

Series (all prefixed ``celeris_``)::

    requests_total{model,version,priority,outcome}   counter    outcome: ok, cached, timeout,
                                                                overloaded, failed, invalid, ...
    request_seconds{model,priority}                  histogram  0.1 ms .. 1 s buckets
    batch_size{model,version}                        histogram  rows per batch, 1 .. 4096
    batch_seconds{model,version}                     histogram  forward time of one batch
    queue_items{model,version}                       gauge      rows waiting in the batcher (gone
                                                                once the version's batcher stops)
    cache_events_total{tier,result}                  counter    result: hit, miss
    cache_errors_total{tier}                         counter
    errors_total{model,kind}                         counter
    cache_redis_slow_total                           counter    look-ups abandoned over budget
    feed_subscribers, feed_max_subscribers           gauges     signal feed (watch_feed)
    feed_published_total, feed_refused_total,        counters   refused: over max_subscribers
    feed_dropped_total
    process_cpu_percent, process_rss_bytes, process_threads, system_cpu_percent,
    system_memory_used_bytes, system_load{period}    gauges, sampled at scrape time
    gpu_utilization_percent{gpu}, gpu_memory_used_bytes{gpu}, gpu_memory_total_bytes{gpu},
    gpu_temperature_celsius{gpu}, gpu_power_watts{gpu}   gauges, only with NVML

The hot path (one request) costs two dictionary look-ups, a counter increment and a histogram
observation: label children are created once and kept, because ``metric.labels(...)`` validates
and locks on every call (measured ~1.5 us per request with the cache, see tests).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from celeris.compute.telemetry import GPUTelemetry, SystemSampler

# Seconds. Dense where a CPU forward of a small model lands (0.1-100 ms), sparse beyond.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class PrometheusMetrics:
    """A ``MetricsSink`` that records into Prometheus series (see the module docstring).

    Parameters
    ----------
    registry
        Where the series live; a fresh :class:`CollectorRegistry` by default.
    system
        Export process and system gauges (psutil), sampled when ``/metrics`` is scraped.
    gpu
        Export GPU gauges when NVML is available; silently absent otherwise.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, system: bool = True, gpu: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "celeris_requests",
            "Requests answered, by model, version, priority and outcome.",
            ("model", "version", "priority", "outcome"),
            registry=r,
        )
        self.request_seconds = Histogram(
            "celeris_request_seconds",
            "Request latency inside the server (queue + batch + forward), seconds.",
            ("model", "priority"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "celeris_batch_size",
            "Rows per executed batch.",
            ("model", "version"),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "celeris_batch_seconds",
            "Forward time of one batch, seconds.",
            ("model", "version"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_items = Gauge(
            "celeris_queue_items",
            "Rows waiting in a model version's batcher.",
            ("model", "version"),
            registry=r,
        )
        self.cache_events = Counter(
            "celeris_cache_events",
            "Cache look-ups by tier (memory, redis) and result (hit, miss).",
            ("tier", "result"),
            registry=r,
        )
        self.cache_errors = Counter(
            "celeris_cache_errors",
            "Cache tier failures (for Redis: connection errors, timeouts).",
            ("tier",),
            registry=r,
        )
        self.errors = Counter(
            "celeris_errors",
            "Errors by model and kind (invalid, overloaded, timeout, failed, ...).",
            ("model", "kind"),
            registry=r,
        )
        # Label children, created once: `.labels()` validates and takes a lock on every call.
        self._req: dict[tuple[str, str, str, str], Any] = {}
        self._lat: dict[tuple[str, str], Any] = {}
        self._bsize: dict[tuple[str, str], Any] = {}
        self._bsec: dict[tuple[str, str], Any] = {}
        self._queue: dict[tuple[str, str], Any] = {}
        self._cache: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()
        if system:
            r.register(SystemCollector())
        if gpu:
            collector = GPUCollector.create()
            if collector is not None:
                r.register(collector)

    # -- MetricsSink ------------------------------------------------------------------------

    def observe_request(
        self, model: str, version: str, priority: str, seconds: float, outcome: str
    ) -> None:
        """Count one answered request and record its latency."""
        key = (model, version, priority, outcome)
        counter = self._req.get(key)
        if counter is None:
            counter = self._child(self._req, key, self.requests)
        counter.inc()
        lat_key = (model, priority)
        hist = self._lat.get(lat_key)
        if hist is None:
            hist = self._child(self._lat, lat_key, self.request_seconds)
        hist.observe(seconds)

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        """Record one executed batch: its rows and its forward time."""
        key = (model, version)
        size_hist = self._bsize.get(key)
        if size_hist is None:
            size_hist = self._child(self._bsize, key, self.batch_size)
        size_hist.observe(size)
        sec_hist = self._bsec.get(key)
        if sec_hist is None:
            sec_hist = self._child(self._bsec, key, self.batch_seconds)
        sec_hist.observe(seconds)

    def set_queue(self, model: str, version: str, items: int) -> None:
        """Set the number of rows waiting in a model version's batcher."""
        key = (model, version)
        gauge = self._queue.get(key)
        if gauge is None:
            gauge = self._child(self._queue, key, self.queue_items)
        gauge.set(items)

    def cache_event(self, tier: str, hit: bool) -> None:
        """Count one cache look-up in ``tier`` (memory, redis)."""
        key = (tier, hit)
        counter = self._cache.get(key)
        if counter is None:
            label = (tier, "hit" if hit else "miss")
            with self._lock:
                counter = self._cache.setdefault(key, self.cache_events.labels(*label))
        counter.inc()

    def cache_error(self, tier: str) -> None:
        """Count one failure of a cache tier."""
        self.cache_errors.labels(tier).inc()

    def error(self, model: str, kind: str) -> None:
        """Count one error of ``kind`` for ``model``."""
        self.errors.labels(model, kind).inc()

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """Return every series in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def watch_cache(self, cache: Any) -> None:
        """Export ``cache.stats()`` (a ``TieredCache``) as hit-ratio and availability gauges."""
        self.registry.register(CacheCollector(cache))

    def watch_feed(self, publisher: Any) -> None:
        """Export ``publisher.stats()`` (a ``SignalPublisher``): subscribers, refusals, drops."""
        self.registry.register(FeedCollector(publisher))

    def forget_version(self, model: str, version: str) -> None:
        """Drop a retired version's queue gauge so it does not linger at its last value."""
        with self._lock:
            self._queue.pop((model, version), None)
            with contextlib.suppress(KeyError):
                self.queue_items.remove(model, version)

    def _child(self, cache: dict[Any, Any], key: tuple[str, ...], metric: Any) -> Any:
        with self._lock:
            child = cache.get(key)
            if child is None:
                child = cache[key] = metric.labels(*key)
            return child


class SystemCollector(Collector):
    """Process and machine gauges, sampled at scrape time (no background thread) by
    :class:`celeris.compute.telemetry.SystemSampler`.

    CPU percentages cover the time since the previous scrape (psutil's ``interval=None``), so
    the first scrape after start reads 0.
    """

    def __init__(self, sampler: SystemSampler | None = None) -> None:
        self._sampler = sampler if sampler is not None else SystemSampler()

    def collect(self) -> Iterator[Metric]:
        now = self._sampler.sample()
        yield _gauge(
            "celeris_process_cpu_percent",
            "Process CPU use since the last scrape (100 = one core).",
            now.process_cpu_percent,
        )
        yield _gauge(
            "celeris_process_rss_bytes", "Process resident memory, bytes.", now.process_rss_bytes
        )
        yield _gauge("celeris_process_threads", "Process threads.", now.process_threads)
        yield _gauge(
            "celeris_system_cpu_percent",
            "Machine CPU use since the last scrape (all cores = 100).",
            now.system_cpu_percent,
        )
        yield _gauge(
            "celeris_system_memory_used_bytes",
            "Machine memory in use, bytes.",
            now.memory_used_bytes,
        )
        yield _gauge(
            "celeris_system_memory_total_bytes", "Machine memory, bytes.", now.memory_total_bytes
        )
        load = GaugeMetricFamily(
            "celeris_system_load", "Load average over 1, 5 and 15 minutes.", labels=["period"]
        )
        for period, value in zip(("1m", "5m", "15m"), now.load_average, strict=True):
            load.add_metric([period], value)
        yield load


class CacheCollector(Collector):
    """Hit ratios, sizes and Redis availability of a ``TieredCache``, read at scrape time."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats()
        ratio = GaugeMetricFamily(
            "celeris_cache_hit_ratio", "Hits per look-up since start, by tier.", labels=["tier"]
        )
        up = GaugeMetricFamily(
            "celeris_cache_available",
            "1 while a cache tier answers, 0 during an outage.",
            labels=["tier"],
        )
        ratio.add_metric(["all"], float(stats.get("hit_rate", 0.0)))
        memory = stats.get("memory") or {}
        if "hit_rate" in memory:
            ratio.add_metric(["memory"], float(memory["hit_rate"]))
        up.add_metric(["memory"], 1.0)
        redis = stats.get("redis")
        if redis:
            ratio.add_metric(["redis"], float(redis.get("hit_rate", 0.0)))
            up.add_metric(["redis"], 1.0 if redis.get("available") else 0.0)
            yield _gauge(
                "celeris_cache_redis_outages",
                "Redis outages since start (each logged once at WARNING).",
                redis.get("outages", 0),
            )
            yield CounterMetricFamily(
                "celeris_cache_redis_slow",
                "Redis look-ups abandoned after their budget (each opens the circuit).",
                value=redis.get("slow", 0),
            )
        yield ratio
        yield up
        if "items" in memory:
            yield _gauge(
                "celeris_cache_memory_items", "Entries in the memory tier.", memory["items"]
            )


class FeedCollector(Collector):
    """Subscribers, refusals and drops of a ``SignalPublisher``, read at scrape time."""

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        stats = self._publisher.stats()
        yield _gauge(
            "celeris_feed_subscribers", "Signal feed subscribers connected.", stats["subscribers"]
        )
        yield _gauge(
            "celeris_feed_max_subscribers",
            "Most signal feed subscribers admitted at once.",
            stats["max_subscribers"],
        )
        for name, doc, key in (
            ("published", "Signal records published.", "published"),
            ("refused", "Subscribers refused over max_subscribers.", "refused"),
            ("dropped", "Records dropped for subscribers too slow to read them.", "dropped"),
        ):
            yield CounterMetricFamily(f"celeris_feed_{name}", doc, value=stats[key])


class GPUCollector(Collector):
    """NVIDIA GPU gauges from :class:`celeris.compute.telemetry.GPUTelemetry` (NVML).

    A value a GPU does not give (no power sensor, a read that failed) is left out for that GPU
    only; the scrape still answers.
    """

    def __init__(self, telemetry: GPUTelemetry) -> None:
        self._telemetry = telemetry

    @classmethod
    def create(cls) -> GPUCollector | None:
        """Return a collector when NVML imports and sees a GPU, else ``None`` (no error)."""
        telemetry = GPUTelemetry.create()
        return None if telemetry is None else cls(telemetry)

    def collect(self) -> Iterator[Metric]:
        families = [
            (GaugeMetricFamily(name, doc, labels=["gpu"]), field)
            for name, doc, field in _GPU_SERIES
        ]
        for reading in self._telemetry.read():
            label = [str(reading.index)]
            for family, field in families:
                value = getattr(reading, field)
                if value is not None:
                    family.add_metric(label, value)
        yield from (family for family, _ in families)


# (series, help, GPUReading field), in the order /metrics lists them
_GPU_SERIES = (
    ("celeris_gpu_utilization_percent", "GPU busy time, percent.", "utilization_percent"),
    ("celeris_gpu_memory_used_bytes", "GPU memory in use, bytes.", "memory_used_bytes"),
    ("celeris_gpu_memory_total_bytes", "GPU memory, bytes.", "memory_total_bytes"),
    ("celeris_gpu_temperature_celsius", "GPU temperature.", "temperature_celsius"),
    ("celeris_gpu_power_watts", "GPU power draw, watts.", "power_watts"),
)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))

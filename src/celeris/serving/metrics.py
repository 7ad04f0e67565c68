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
    gpu_temperature_celsius{gpu}, gpu_power_watts{gpu},
    gpu_slowdown_temperature_celsius{gpu}               gauges, only with NVML
    gpu_ecc_errors_total{gpu,type}               counter    memory errors since the driver
                                                            loaded; type: corrected, uncorrected
    ready                                        gauge      1 while /readyz answers 200
    model_version{model}, model_out_of_sync{model}   gauges     the served version; 1 while it
                                                            is not the registry's production
                                                            one and will not swap by itself
    registry_reachable                           gauge      0 while the registry cannot be read
                                                            (watch_readiness)
    outcomes_predictions, outcomes_joined        gauges     rows in the outcome store, and of
                                                            them with a realised outcome
    outcomes_pruned_total, outcomes_dropped_total, counters   (watch_outcomes)
    outcomes_failed_total
    drift_psi{model,version,feature}             gauge      PSI of the served inputs against
                                                            training (watch_drift)
    realised_error{model,version}, validation_error{model,version},
    realised_error_ratio{model,version}, realised_outcomes{model,version}   gauges (watch_drift)

The hot path (one request) costs two dictionary look-ups, a counter increment and a histogram
observation: label children are created once and kept, because ``metric.labels(...)`` validates
and locks on every call (measured ~1.5 us per request with the cache, see tests).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from celeris.errors import CelerisError

# Seconds. Dense where a CPU forward of a small model lands (0.1-100 ms), sparse beyond.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST

log = logging.getLogger("celeris.serving.drift")


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

    def watch_outcomes(self, store: Any, writer: Any = None) -> None:
        """Export an :class:`~celeris.serving.outcomes.OutcomeStore`'s row counts and, with
        its :class:`~celeris.serving.outcomes.PredictionWriter`, dropped and failed writes."""
        self.registry.register(OutcomeCollector(store, writer))

    def watch_drift(self, monitor: DriftCollector) -> None:
        """Export a :class:`DriftCollector`'s PSI and realised-error gauges."""
        self.registry.register(monitor)

    def watch_readiness(self, manager: Any) -> None:
        """Export what a :class:`~celeris.serving.manager.ModelManager`'s ``readiness()``
        says (``/readyz``) as gauges, so that alerts need no HTTP probe of their own."""
        self.registry.register(ReadinessCollector(manager))

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


class OutcomeCollector(Collector):
    """Rows of an outcome store and its writer's drops and failures, read at scrape time."""

    def __init__(self, store: Any, writer: Any = None) -> None:
        self._store = store
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        stats = self._store.stats()
        yield _gauge(
            "celeris_outcomes_predictions",
            "Predictions kept in the outcome store.",
            stats["predictions"],
        )
        yield _gauge(
            "celeris_outcomes_joined",
            "Predictions in the outcome store whose realised outcome came back.",
            stats["outcomes"],
        )
        yield CounterMetricFamily(
            "celeris_outcomes_pruned",
            "Oldest predictions deleted past the store's max_rows.",
            value=stats["pruned"],
        )
        if self._writer is not None:
            written = self._writer.stats()
            yield CounterMetricFamily(
                "celeris_outcomes_dropped",
                "Predictions not recorded: the writer's queue was full.",
                value=written["dropped"],
            )
            yield CounterMetricFamily(
                "celeris_outcomes_failed",
                "Predictions the outcome store refused (a conflicting key).",
                value=written["failed"],
            )


#: ``() -> [(model, version, checkpoint meta), ...]``: the model versions being served.
Served = Callable[[], Iterable[tuple[str, int, Mapping[str, Any]]]]


class DriftCollector(Collector):
    """Drift of each served model version, measured at scrape time from an outcome store.

    * ``celeris_drift_psi{model,version,feature}``: the population-stability index
      (:func:`celeris.models.drift.psi`) of each input feature over the newest bar of the last
      ``psi_rows`` recorded input windows, against the training reference in the checkpoint's
      feature spec (``meta["feature_spec"]["reference"]``; absent without one).
    * ``celeris_realised_error``: the mean realised MAE of the newest ``window`` joined
      outcomes; ``celeris_validation_error``: the checkpoint's test MAE
      (``meta["test_metrics"]``); ``celeris_realised_error_ratio``: the first over the second;
      ``celeris_realised_outcomes``: how many outcomes the mean covers.

    A warning is logged (logger ``celeris.serving.drift``) when a feature's PSI rises above
    :data:`~celeris.models.drift.PSI_SIGNIFICANT` (0.25) or the realised error exceeds
    ``error_factor`` times the validation error with at least ``min_samples`` outcomes;
    once when it starts, and an info line when it ends, not at every scrape.

    Parameters
    ----------
    store
        The :class:`~celeris.serving.outcomes.OutcomeStore` the predictions are recorded in.
    served
        Returns the ``(model, version, meta)`` of the versions to watch.
    error_factor, window, min_samples
        As :func:`celeris.models.drift.error_drift` takes them.
    psi_rows
        Recorded windows the PSI reads (the newest bar of each).
    """

    def __init__(
        self,
        store: Any,
        served: Served,
        *,
        error_factor: float = 1.5,
        window: int = 500,
        min_samples: int = 30,
        psi_rows: int = 1000,
    ) -> None:
        from celeris.checks import check_int, check_real

        self._store = store
        self._served = served
        self.error_factor = check_real("error_factor", error_factor, minimum=0, open_low=True)
        self.window = check_int("window", window, minimum=1)
        self.min_samples = check_int("min_samples", min_samples, minimum=1)
        self.psi_rows = check_int("psi_rows", psi_rows, minimum=1)
        self._alerting: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def measure(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Return ``{(model, version): {"psi": {feature: value}, "error": ErrorDrift}}`` and
        log the warnings (what :meth:`collect` exports)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        alerts: dict[tuple[str, ...], str] = {}
        for model, version, meta in self._served():
            try:
                out[(model, version)] = self._measure_one(model, version, meta, alerts)
            except CelerisError as exc:  # a malformed reference must not break the scrape
                alerts[(model, str(version), "!")] = f"drift: {model}@{version} not measured: {exc}"
        with self._lock:
            for key, message in alerts.items():
                if key not in self._alerting:
                    log.warning(message)
            for key in self._alerting - alerts.keys():
                log.info(
                    "drift: %s back within limits",
                    "@".join(key[:2]) + "".join(f" {k!r}" for k in key[2:]),
                )
            self._alerting = set(alerts)
        return out

    def _measure_one(
        self,
        model: str,
        version: int,
        meta: Mapping[str, Any],
        alerts: dict[tuple[str, ...], str],
    ) -> dict[str, Any]:
        from celeris.models.drift import PSI_SIGNIFICANT, error_drift, psi_by_feature
        from celeris.models.drift import validation_error as test_error

        label = f"{model}@{version}"
        psi: dict[str, float] = {}
        spec = meta.get("feature_spec") if isinstance(meta, Mapping) else None
        reference = spec.get("reference") if isinstance(spec, Mapping) else None
        features = list(
            (spec.get("features") if isinstance(spec, Mapping) else None)
            or meta.get("features")
            or ()
        )
        if reference and features:
            windows = self._store.recent_inputs(
                model, version=version, limit=self.psi_rows
            )  # [n, L, C]
            if len(windows) and windows.shape[2] == len(features):
                psi = psi_by_feature(reference, windows[:, -1, :], features)
        for feature, value in psi.items():
            if value > PSI_SIGNIFICANT:
                alerts[(model, str(version), feature)] = (
                    f"drift: {label} input {feature!r} PSI {value:.3f} > "
                    f"{PSI_SIGNIFICANT} against training (a significant shift)"
                )
        joined = self._store.joined(model, version=version, limit=self.window)
        error = error_drift(
            joined["mae"].to_numpy(),
            test_error(meta),
            window=self.window,
            factor=self.error_factor,
            min_samples=self.min_samples,
        )
        if error.exceeded:
            alerts[(model, str(version))] = (
                f"drift: {label} realised error {error.realised:.6g} is {error.ratio:.2f}x "
                f"its validation error {error.validation:.6g} over the last {error.n} "
                f"outcomes (limit {self.error_factor:g}x)"
            )
        return {"psi": psi, "error": error}

    def collect(self) -> Iterator[Metric]:
        psi = GaugeMetricFamily(
            "celeris_drift_psi",
            "Population-stability index of a served input feature against training.",
            labels=["model", "version", "feature"],
        )
        families = {
            name: GaugeMetricFamily(f"celeris_{name}", doc, labels=["model", "version"])
            for name, doc in (
                ("realised_error", "Mean realised MAE of the newest joined outcomes."),
                ("validation_error", "The model's test-split MAE from its checkpoint."),
                ("realised_error_ratio", "Realised error over validation error."),
                ("realised_outcomes", "Joined outcomes in the realised-error mean."),
            )
        }
        for (model, version), measured in self.measure().items():
            labels = [model, str(version)]
            for feature, value in measured["psi"].items():
                psi.add_metric([*labels, feature], value)
            error = measured["error"]
            families["realised_outcomes"].add_metric(labels, float(error.n))
            if error.n:
                families["realised_error"].add_metric(labels, error.realised)
            if error.validation is not None:
                families["validation_error"].add_metric(labels, error.validation)
            if math.isfinite(error.ratio):
                families["realised_error_ratio"].add_metric(labels, error.ratio)
        yield psi
        yield from families.values()


class ReadinessCollector(Collector):
    """``/readyz`` as gauges, read at scrape time from a ``ModelManager``'s ``readiness()``:
    ``celeris_ready``, ``celeris_model_version{model}``, ``celeris_model_out_of_sync{model}``
    (a hot swap refused here, or no production version in the registry: the "degraded" of
    ``/readyz``; a swap still under way reads 0) and ``celeris_registry_reachable``."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def _readiness(self) -> dict[str, Any]:
        # Scrapes run in a worker thread while the event loop may change the manager's dicts;
        # a read that saw one change mid-way is simply taken again.
        for _ in range(3):
            try:
                state: dict[str, Any] = self._manager.readiness()
                return state
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        state = self._manager.readiness()
        return state

    def collect(self) -> Iterator[Metric]:
        state = self._readiness()
        yield _gauge(
            "celeris_ready",
            "1 while /readyz answers 200: every model loaded, warm and in step with the registry.",
            1.0 if state["ready"] else 0.0,
        )
        version = GaugeMetricFamily(
            "celeris_model_version", "The version each model serves.", labels=["model"]
        )
        stuck = GaugeMetricFamily(
            "celeris_model_out_of_sync",
            "1 while a model serves another version than the registry's production one and "
            "will not swap to it by itself (refused here, or none in production).",
            labels=["model"],
        )
        out_of_sync = state.get("out_of_sync") or {}
        for model, served in sorted((state.get("models") or {}).items()):
            version.add_metric([model], float(served))
            mismatch = out_of_sync.get(model)
            stuck.add_metric([model], 1.0 if mismatch and not mismatch["pending"] else 0.0)
        yield version
        yield stuck
        registry = state.get("registry") or {}
        yield _gauge(
            "celeris_registry_reachable",
            "1 while the model registry answers, 0 while it cannot be read.",
            1.0 if registry.get("reachable", True) else 0.0,
        )


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
        ecc = CounterMetricFamily(
            "celeris_gpu_ecc_errors",
            "GPU memory ECC errors since the driver loaded, by type (corrected, uncorrected).",
            labels=["gpu", "type"],
        )
        for reading in self._telemetry.read():
            label = [str(reading.index)]
            for family, field in families:
                value = getattr(reading, field)
                if value is not None:
                    family.add_metric(label, value)
            for kind, count in (
                ("corrected", reading.ecc_corrected_errors),
                ("uncorrected", reading.ecc_uncorrected_errors),
            ):
                if count is not None:  # no ECC memory (or ECC off): no series
                    ecc.add_metric([*label, kind], count)
        yield from (family for family, _ in families)
        yield ecc


# (series, help, GPUReading field), in the order /metrics lists them
_GPU_SERIES = (
    ("celeris_gpu_utilization_percent", "GPU busy time, percent.", "utilization_percent"),
    ("celeris_gpu_memory_used_bytes", "GPU memory in use, bytes.", "memory_used_bytes"),
    ("celeris_gpu_memory_total_bytes", "GPU memory, bytes.", "memory_total_bytes"),
    ("celeris_gpu_temperature_celsius", "GPU temperature.", "temperature_celsius"),
    ("celeris_gpu_power_watts", "GPU power draw, watts.", "power_watts"),
    (
        "celeris_gpu_slowdown_temperature_celsius",
        "Temperature at which the GPU throttles its clocks.",
        "slowdown_celsius",
    ),
)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))

"""The composition root of a serving process: registry, caches, engine, manager, metrics,
signal feed and HTTP app, wired together. Only the CLI (``celeris serve``) imports it.

:func:`build` turns :class:`~celeris.serving.config.ServeSettings` into a :class:`Server`; the
application's lifespan loads the configured models (``NAME@production`` ...) in the background
once uvicorn is listening, so ``/healthz`` answers at once and ``/readyz`` turns 200 when every
model is loaded, verified against the registry's sha256 and warm. :func:`uvicorn_server` runs
it under uvicorn (uvloop, httptools) on one process.

Which version of each model serves, and every change of it, is
:class:`~celeris.serving.manager.ModelManager`'s (re-exported here with the other names this
module used to define).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from celeris.errors import ConfigError
from celeris.serving.config import ServeSettings, exposure_warning
from celeris.serving.errors import (
    Conflict,
    NotServing,
    ShadowValidationFailed,
    SymbolLimitReached,
)
from celeris.serving.manager import (
    ModelManager,
    ModelSpec,
    SymbolTable,
    freeze_heap,
    load_verified,
    synthetic_histories,
)

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from celeris.serving.metrics import PrometheusMetrics
    from celeris.serving.outcomes import ServedOutcomes
    from celeris.serving.registry import ModelRegistry

__all__ = [
    "Conflict",
    "ModelManager",
    "ModelSpec",
    "NotServing",
    "Server",
    "ShadowValidationFailed",
    "SymbolLimitReached",
    "SymbolTable",
    "bind",
    "build",
    "freeze_heap",
    "load_verified",
    "process_start_time",
    "served_versions",
    "synthetic_histories",
    "uvicorn_server",
]

log = logging.getLogger("celeris.serving")


# -- the process -------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    """Everything a serving process holds; ``app`` is what uvicorn runs."""

    settings: ServeSettings
    registry: ModelRegistry
    engine: Any
    cache: Any
    metrics: PrometheusMetrics
    publisher: Any
    manager: ModelManager
    app: FastAPI
    started_at: float
    outcomes: ServedOutcomes | None = None


def process_start_time() -> float:
    """Return when this process started (:func:`time.time` seconds, ~10 ms resolution).

    On Linux from ``/proc``: the process's start in clock ticks since boot against the
    uptime, both precise to a tick (psutil adds the boot time, which ``/proc/stat`` gives only
    to the whole second, and was measured ~0.7 s off). Elsewhere psutil, else now.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            # the command name (field 2) may hold spaces: count fields after its ')'
            fields = f.read().rsplit(b")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22: starttime
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return float(psutil.Process(os.getpid()).create_time())
    except Exception:  # psutil missing or unreadable: now is the best we know
        return time.time()


def build(
    settings: ServeSettings,
    *,
    on_failure: Callable[[BaseException], None] | None = None,
    on_ready: Callable[[ModelManager], None] | None = None,
    started_at: float | None = None,
    freeze_heap: bool = False,
) -> Server:
    """Assemble a serving process from ``settings`` (nothing is loaded until the app starts).

    Parameters
    ----------
    settings
        The serving settings (:func:`~celeris.serving.config.load_serve_settings`).
    on_failure
        Called with the exception when loading the configured models fails (the CLI stops the
        server and exits with the message).
    on_ready
        Called with the manager once every model is loaded and warm.
    started_at
        Process start (:func:`time.time`), for ``ready_after_s`` (default: from psutil).
    freeze_heap
        Once the models are loaded, freeze the start-up heap out of the garbage collector
        (:func:`freeze_heap`; process-wide, so off unless this process is the server).
    """
    from celeris.serving.cache import MemoryCache, RedisCache, TieredCache
    from celeris.serving.engine import Engine
    from celeris.serving.http import create_app
    from celeris.serving.metrics import PrometheusMetrics
    from celeris.serving.registry import ModelRegistry

    if not settings.models:
        raise ConfigError(
            "no model to serve: pass --model NAME@production (or CELERIS_SERVE_MODELS)"
        )
    if settings.redis and settings.cache_items == 0:
        raise ConfigError("the Redis cache tier needs the memory tier: set cache_items >= 1")
    settings.check_startup()
    exposed = exposure_warning(settings)
    if exposed is not None:
        log.warning(exposed)
    started = process_start_time() if started_at is None else started_at
    metrics = PrometheusMetrics()
    registry = ModelRegistry(settings.registry, settings.registry_url)
    cache = None
    if settings.cache_items:
        redis = (
            RedisCache(
                settings.redis,
                ttl_s=settings.cache_ttl_s,
                read_budget_s=settings.redis_read_budget_ms / 1000,
            )
            if settings.redis
            else None
        )
        cache = TieredCache(
            MemoryCache(settings.cache_items, settings.cache_ttl_s), redis, metrics=metrics
        )
        metrics.watch_cache(cache)
    engine = Engine(cache=cache, config=settings.batcher_config(), metrics=metrics)
    publisher = None
    if settings.socket is not None:
        from celeris.serving.feed import SignalPublisher

        publisher = SignalPublisher(settings.socket, max_subscribers=settings.feed_max_subscribers)
        metrics.watch_feed(publisher)
    manager = ModelManager(engine, registry, settings, metrics=metrics)
    metrics.watch_readiness(manager)  # /readyz as gauges, for alerts (deploy/prometheus)
    outcomes = _outcomes(settings, engine, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            await manager.start(settings.models, started_at=started, freeze=freeze_heap)
            if outcomes is not None:
                # in the step that made the manager ready: no request sees it ready before
                _replay_recorded_inputs(manager, outcomes)

        loading = asyncio.create_task(load())

        def loaded(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.error("loading the models failed: %s", exc)
                if on_failure is not None:
                    on_failure(exc)
            else:
                log.info("ready after %.2f s", manager.ready_after_s or 0.0)
                if on_ready is not None:
                    on_ready(manager)

        loading.add_done_callback(loaded)
        polling = (
            asyncio.create_task(manager.poll_forever(settings.registry_poll_s))
            if settings.registry_poll_s > 0
            else None
        )
        try:
            yield
        finally:
            manager.status = "stopping"
            for task in (loading, polling):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await engine.close()
            if outcomes is not None:
                outcomes.close()
            if cache is not None:
                cache.close()
            if publisher is not None:
                publisher.close()

    app = create_app(manager, publisher=publisher, lifespan=lifespan, outcomes=outcomes)
    return Server(
        settings, registry, engine, cache, metrics, publisher, manager, app, started, outcomes
    )


def _outcomes(settings: ServeSettings, engine: Any, metrics: Any) -> ServedOutcomes | None:
    """The outcome store of the process (None with ``outcomes=False``), watched on /metrics
    with the drift of every served version."""
    if not settings.outcomes:
        return None
    from celeris.serving.metrics import DriftCollector
    from celeris.serving.outcomes import OutcomeStore, ServedOutcomes

    path = settings.outcomes_path or settings.registry / "outcomes.sqlite"
    store = OutcomeStore(path, max_rows=settings.outcomes_max_rows)
    outcomes = ServedOutcomes(store)
    metrics.watch_outcomes(store, outcomes.writer)
    metrics.watch_drift(
        DriftCollector(
            store,
            served_versions(engine),
            error_factor=settings.drift_error_factor,
            window=settings.drift_window,
        )
    )
    return outcomes


def served_versions(engine: Any) -> Callable[[], list[tuple[str, int, Mapping[str, Any]]]]:
    """Return ``() -> [(model, version, checkpoint meta), ...]``: every version ``engine``
    serves, the challenger of a running A/B test included (what drift is measured for)."""

    def served() -> list[tuple[str, int, Mapping[str, Any]]]:
        out = []
        for model in engine.models():
            versions = [model["serving"]]
            if model["ab"] is not None:
                versions.append(model["ab"]["challenger"])
            for version in versions:
                if version is None or not str(version).isdigit():
                    continue
                meta = getattr(engine.predictor(model["name"], version), "meta", None)
                out.append((model["name"], int(version), meta or {}))
        return out

    return served


def _replay_recorded_inputs(manager: ModelManager, outcomes: ServedOutcomes) -> None:
    """Seed shadow validation with the newest inputs the store recorded (a restarted server
    validates candidates on live traffic at once, not on synthetic histories)."""
    rows = manager.settings.shadow_rows
    for name, spec in manager.specs.items():
        try:
            x = outcomes.store.recent_inputs(
                name, shape=(spec.input_size, spec.n_features), limit=rows
            )
        except Exception as exc:  # the store is an aid here: serving goes on without it
            log.warning("outcome store: recorded inputs of %s not read: %s", name, exc)
            continue
        if len(x):
            manager.record_input(name, x)


def bind(host: str, port: int) -> socket.socket:
    """Return a listening-ready TCP socket bound to ``host:port`` (port 0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def uvicorn_server(server: Server, *, access_log: bool = False) -> Any:
    """Return a ``uvicorn.Server`` for ``server.app`` (uvloop, httptools, no access log).

    The connection limits of the settings apply (:mod:`celeris.serving.protocol`): head size
    (431), head and body read timeouts (408 / disconnect), keep-alive, and at most
    ``max_connections`` connections or running requests (uvicorn answers 503 beyond).
    """
    import uvicorn

    from celeris.serving.protocol import guarded_protocol

    s = server.settings
    config = uvicorn.Config(
        server.app,
        loop="uvloop",
        http=guarded_protocol(
            max_header_bytes=s.max_header_bytes,
            header_timeout_s=s.header_timeout_s,
            body_timeout_s=s.body_timeout_s,
        ),
        lifespan="on",
        log_level=s.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=s.keepalive_s,
        limit_concurrency=s.max_connections,
    )
    return uvicorn.Server(config)

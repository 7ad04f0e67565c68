"""Celeris models as Ray Serve deployments: the reference batching baseline and scale-out.

Two deployments, both answering ``POST /v1/models/{name}/predict`` with the request and answer
bodies of ``celeris serve`` (JSON or msgpack, see :mod:`celeris.serving.http`; ``"version"`` is
the registry's version number), ``GET /v1/models`` (each served model's name, version and
shapes, as ``celeris serve`` lists them, so ``celeris bench --model`` works against either),
``GET /healthz`` and ``GET /readyz``:

:class:`BatchedPredictor`
    A Celeris :class:`~celeris.models.predictor.Predictor` behind Ray Serve's own dynamic
    batcher, ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)`` - what a Ray Serve
    user writes. ``max_ongoing_requests`` is 128: Ray's default of 5 admits at most 5 requests
    per replica at a time, which silently caps every batch at 5. This is the peer that
    ``benchmarks/bench_serving.py`` measures ``celeris serve`` against. Ray's batcher waits out
    its window whenever a batch is not full, and one failing request fails its whole batch.

:class:`EngineDeployment`
    The Celeris :class:`~celeris.serving.engine.Engine` itself inside a Ray Serve replica: the
    same priority-aware dynamic batcher, deadlines, back-pressure (429) and caches as ``celeris
    serve``, one engine per replica. Scale out with ``num_replicas`` (Ray Serve routes HTTP
    requests across replicas on every node) and share results across replicas with a Redis
    cache tier (``redis="redis://..."``). Admin routes, A/B tests and the signal feed stay with
    ``celeris serve``: roll a new version out by redeploying (``serve.run`` replaces replicas
    one by one).

Both load a registry version (``NAME@production``, ``NAME@7``) hash-verified, with the backend
``auto`` by default (the fastest one the artifact verified), exactly as ``celeris serve`` does,
and warm it before answering.

Running
    :func:`deploy` starts (or joins) Ray and Ray Serve and runs a deployment; :func:`shutdown`
    stops both; :func:`local_serve` does both around a ``with`` block. On a single machine,
    :func:`start_local_ray` keeps Ray on ``127.0.0.1`` without the dashboard and with usage
    statistics off. On a cluster, call ``ray.init(address="auto")`` first, then :func:`deploy`
    with ``host="0.0.0.0"``. From a shell (the registry defaults to ``celeris serve``'s,
    ``$CELERIS_SERVE_REGISTRY`` or ``$CELERIS_HOME/registry``)::

        celeris serve-ray --model btc@production --port 8001 [--deployment engine --replicas 2]

Files
    Ray 2.60 turns token authentication on for a local cluster and writes its token to
    ``~/.ray/auth_token`` unless one is given. :func:`start_local_ray` gives it one under
    ``$CELERIS_HOME/ray/auth_token`` (``RAY_AUTH_TOKEN_PATH``; yours wins when set), so nothing
    is written to the home directory; Ray's session files stay in its temporary directory.
    onnxruntime 1.32 writes a telemetry device id under ``~/.cache/Microsoft`` when it is
    imported; replicas (and a local Ray started here) run with ``ORT_DISABLE_TELEMETRY=1``
    unless it is set.

Ray Serve needs ``pip install "ray[serve]"``; importing this module imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from celeris.checks import check_int, check_real
from celeris.errors import CelerisError, ConfigError, DataError
from celeris.serving.manager import model_spec

__all__ = [
    "BatchedPredictor",
    "EngineDeployment",
    "RayServeApp",
    "deploy",
    "local_serve",
    "shutdown",
    "start_local_ray",
]

log = logging.getLogger(__name__)

# What Ray Serve's documentation shows and the benchmark prescribes.
RAY_MAX_BATCH_SIZE = 32
RAY_BATCH_WAIT_S = 0.005
RAY_MAX_ONGOING = 128
DEPLOYMENTS = ("batched", "engine")

_PREDICT = re.compile(r"/v1/models/([^/]+)/predict/?$")


def _no_onnxruntime_telemetry() -> None:
    """Keep onnxruntime from writing its telemetry id under ``~/.cache`` (read at import)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _load(
    registry: str | Path, ref: str, backend: str, threads: int, max_batch: int
) -> tuple[Any, Any]:
    """Load ``ref`` hash-verified (as ``celeris serve`` does) and warm it; return
    ``(record, predictor)`` (the record names the version number a stage resolved to)."""
    _no_onnxruntime_telemetry()  # before the predictor imports onnxruntime in this replica
    from celeris.serving.manager import synthetic_histories
    from celeris.serving.registry import ModelRegistry

    record, predictor = ModelRegistry(registry).load(
        ref, backend=backend, threads=threads, max_batch=max(max_batch, 64)
    )
    x = synthetic_histories(predictor, max_batch, seed=1)
    for _ in range(3):
        predictor.predict(x[:1])
    predictor.predict(x)
    return record, predictor


async def _parse(request: Request, specs: dict[str, Any], max_body: int) -> tuple[Any, Any, Any]:
    """Return ``(spec, histories [n, L, C], body)`` of a predict request (raises Problem)."""
    from celeris.serving.http import Problem, decode_body, histories, read_body

    match = _PREDICT.search(request.url.path)
    if request.method != "POST" or match is None:
        raise Problem(404, "not_found", f"no route {request.method} {request.url.path}")
    name = match.group(1)
    spec = specs.get(name)
    if spec is None:
        raise Problem(404, "not_found", f"unknown model {name!r}; served: {', '.join(specs)}")
    doc = decode_body(await read_body(request, max_body), request.headers.get("content-type"))
    if "inputs" not in doc:
        raise Problem(422, "invalid", 'the body needs "inputs"')
    return spec, histories(doc["inputs"], spec), doc


def _status_route(request: Request, specs: dict[str, Any]) -> Response | None:
    """Answer ``GET /healthz``, ``/readyz`` and ``/v1/models``; ``None`` for other routes."""
    from celeris.serving.http import encode, reply_format

    if request.method != "GET":
        return None
    path = request.url.path.rstrip("/")
    if path.endswith(("/healthz", "/readyz")):
        return encode({"status": "ok", "ready": True}, "json")
    if path.endswith("/v1/models"):
        models = [spec.to_dict() for _, spec in sorted(specs.items())]
        return encode({"models": models}, reply_format(request))
    return None


@serve.deployment(max_ongoing_requests=RAY_MAX_ONGOING)
class BatchedPredictor:
    """A predictor behind ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)``.

    Parameters
    ----------
    registry
        Registry directory (readable by every replica).
    ref
        ``NAME@production``, ``NAME@VERSION``... served under ``NAME``.
    backend, threads
        Predictor backend and intra-op threads.
    max_batch_size, batch_wait_timeout_s
        Ray Serve's batching: requests per batch, and how long a non-full batch waits.
    max_body_bytes
        Largest request body (413 beyond).
    """

    def __init__(
        self,
        registry: str,
        ref: str,
        *,
        backend: str = "auto",
        threads: int = 1,
        max_batch_size: int = RAY_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = RAY_BATCH_WAIT_S,
        max_body_bytes: int = 16 << 20,
    ) -> None:
        record, self.predictor = _load(registry, ref, backend, threads, max_batch_size)
        self.specs = {record.name: model_spec(record.name, record.version, self.predictor)}
        self.max_body = max_body_bytes
        self.predict_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=RAY_MAX_BATCH_SIZE, batch_wait_timeout_s=RAY_BATCH_WAIT_S)
    async def predict_batch(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Forecast a batch of requests' histories in one model call."""
        sizes = [len(x) for x in xs]
        out = self.predictor.predict(np.concatenate(xs))  # [sum n_i, L, C] -> [sum n_i, H]
        return np.split(out, np.cumsum(sizes)[:-1])

    async def __call__(self, request: Request) -> Response:
        """Answer ``POST /v1/models/{name}/predict`` like ``celeris serve``."""
        from celeris.serving.http import Problem, encode, problem_response, reply_format

        status = _status_route(request, self.specs)
        if status is not None:
            return status
        fmt = reply_format(request)
        try:
            spec, x, _ = await _parse(request, self.specs, self.max_body)
            values = await self.predict_batch(x)
        except Problem as problem:
            return problem_response(problem, fmt)
        except (DataError, ConfigError) as exc:
            return problem_response(Problem(422, "invalid", str(exc)), fmt)
        answer = {"model": spec.name, "version": spec.version, "arm": None, "outputs": values}
        return encode(answer, fmt)


@serve.deployment(max_ongoing_requests=1024)
class EngineDeployment:
    """The Celeris engine (dynamic batcher, priorities, deadlines, caches) in a replica.

    Parameters
    ----------
    registry
        Registry directory (readable by every replica).
    refs
        Models to serve, ``NAME@production``, ``NAME@VERSION``...
    backend, threads
        Predictor backend and intra-op threads.
    batcher
        :class:`~celeris.serving.batcher.BatcherConfig` fields (``max_batch_size``,
        ``max_wait_ms``, ``max_queue``...); default ``BatcherConfig()``.
    cache_items, cache_ttl_s
        In-process cache per replica (0: no cache).
    redis
        Redis URL of a cache tier shared by every replica.
    max_body_bytes, max_items
        Request limits (413 beyond).
    """

    def __init__(
        self,
        registry: str,
        refs: Sequence[str],
        *,
        backend: str = "auto",
        threads: int = 1,
        batcher: dict[str, Any] | None = None,
        cache_items: int = 0,
        cache_ttl_s: float = 60.0,
        redis: str | None = None,
        max_body_bytes: int = 16 << 20,
        max_items: int = 4096,
    ) -> None:
        from celeris.serving.batcher import BatcherConfig

        if isinstance(refs, str):
            refs = [refs]
        self.config = BatcherConfig(**(batcher or {}))
        loaded = [
            _load(registry, ref, backend, threads, self.config.max_batch_size) for ref in refs
        ]
        self.predictors = {record.name: predictor for record, predictor in loaded}
        self.specs = {
            record.name: model_spec(record.name, record.version, predictor)
            for record, predictor in loaded
        }
        # the version number a stage resolved to, labelled as celeris serve labels it
        self.versions = {record.name: str(record.version) for record, _ in loaded}
        self.cache_items = cache_items
        self.cache_ttl_s = cache_ttl_s
        self.redis = redis
        self.max_body = max_body_bytes
        self.max_items = max_items
        self._engine: Any = None
        self._starting: asyncio.Lock | None = None

    async def _ready(self) -> Any:
        """Return the engine, creating it on the replica's event loop at the first request."""
        if self._engine is not None:
            return self._engine
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._engine is None:
                from celeris.serving.cache import MemoryCache, RedisCache, TieredCache
                from celeris.serving.engine import Engine

                cache = None
                if self.cache_items:
                    tier = RedisCache(self.redis, ttl_s=self.cache_ttl_s) if self.redis else None
                    cache = TieredCache(MemoryCache(self.cache_items, self.cache_ttl_s), tier)
                engine = Engine(cache=cache, config=self.config)
                for name, predictor in self.predictors.items():
                    await engine.add_version(name, self.versions[name], predictor)
                self._engine = engine
        return self._engine

    async def __call__(self, request: Request) -> Response:
        """Answer ``POST /v1/models/{name}/predict`` like ``celeris serve``."""
        from celeris.serving.http import (
            Problem,
            encode,
            parse_options,
            problem_of,
            problem_response,
        )
        from celeris.serving.http import reply_format as fmt_of

        status = _status_route(request, self.specs)
        if status is not None:
            return status
        fmt = fmt_of(request)
        try:
            spec, x, doc = await _parse(request, self.specs, self.max_body)
            if len(x) > self.max_items:
                raise Problem(413, "too_large", f"{len(x)} histories exceed {self.max_items}")
            priority, timeout, key = parse_options(doc, _Limits)  # type: ignore[arg-type]
            engine = await self._ready()
            try:
                result = await engine.predict(
                    spec.name, x, priority=priority, timeout_ms=timeout, key=key
                )
            except CelerisError as exc:
                raise problem_of(exc) from None
        except Problem as problem:
            return problem_response(problem, fmt)
        return encode(
            {
                "model": result.model,
                "version": int(result.version),
                "arm": result.arm,
                "outputs": result.values,
                "cached": result.cached,
            },
            fmt,
        )

    async def stats(self) -> dict[str, Any]:
        """Return the engine's models and cache statistics (for a deployment handle)."""
        return (await self._ready()).stats()


class _Limits:
    """The one setting :func:`celeris.serving.http.parse_options` reads."""

    max_timeout_ms = 60_000.0


# -- running ---------------------------------------------------------------------------------


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a local Ray instance on 127.0.0.1 (no dashboard, no usage statistics).

    Does nothing when Ray is already initialised (for example connected to a cluster).
    """
    import ray

    if ray.is_initialized():
        return
    # Ray would otherwise try to report usage statistics over the network.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _no_onnxruntime_telemetry()  # inherited by the raylet and every worker
    _auth_token_under_home()
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        log_to_driver=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )


def _auth_token_under_home() -> Path | None:
    """Point Ray's token authentication at ``$CELERIS_HOME/ray/auth_token`` (created once,
    owner-only), unless a token or token file is given already; return the file used."""
    import secrets

    from celeris.data.store import celeris_home

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = celeris_home() / "ray" / "auth_token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return path


@dataclasses.dataclass(frozen=True)
class RayServeApp:
    """A running deployment: where it answers, and how long it took to become ready."""

    name: str
    deployment: str
    model: str
    host: str
    port: int
    route_prefix: str
    ready_s: float

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` followed by the route prefix (none for ``/``)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}{self.route_prefix.rstrip('/')}"

    def predict_url(self, model: str | None = None) -> str:
        """``http://HOST:PORT[/prefix]/v1/models/NAME/predict`` (default: the deployed model)."""
        return f"{self.url}/v1/models/{model or self.model}/predict"


def deploy(
    registry: str | Path,
    model: str,
    *,
    deployment: str = "batched",
    host: str = "127.0.0.1",
    port: int = 8000,
    num_replicas: int = 1,
    max_ongoing_requests: int | None = None,
    backend: str = "auto",
    threads: int = 1,
    max_batch_size: int = RAY_MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = RAY_BATCH_WAIT_S,
    engine_options: dict[str, Any] | None = None,
    num_cpus: int | None = None,
    replica_cpus: float = 1.0,
    app_name: str = "celeris",
    route_prefix: str = "/",
) -> RayServeApp:
    """Run a Celeris model on Ray Serve; return once it answers over HTTP.

    Parameters
    ----------
    registry
        Registry directory (must be readable by every replica).
    model
        ``NAME@production``, ``NAME@VERSION``...; served at ``/v1/models/NAME/predict``.
    deployment
        ``"batched"`` (:class:`BatchedPredictor`, Ray Serve's batcher) or ``"engine"``
        (:class:`EngineDeployment`, the Celeris engine per replica).
    host, port
        Where Ray Serve's HTTP proxy listens (loopback by default).
    num_replicas
        Replicas of the deployment (each loads the model and has its own batcher).
    max_ongoing_requests
        Requests a replica accepts at once (default 128 for ``batched``, 1024 for ``engine``).
    backend, threads
        Predictor backend and intra-op threads per replica.
    max_batch_size, batch_wait_timeout_s
        ``@serve.batch`` settings of the ``batched`` deployment.
    engine_options
        Keyword arguments of :class:`EngineDeployment` (``batcher``, ``cache_items``,
        ``redis``...).
    num_cpus
        CPUs of a local Ray started here (default: all).
    replica_cpus
        CPUs reserved per replica (Ray's scheduling, not a limit).
    app_name, route_prefix
        Ray Serve application name and the path it answers under (several applications on
        one Serve instance need different prefixes).

    Raises
    ------
    CelerisTypeError, ConfigError
        An argument of the wrong type or out of range (:mod:`celeris.checks`), found before
        Ray starts.
    """
    if deployment not in DEPLOYMENTS:
        from celeris.errors import check_choice

        check_choice("deployment", deployment, DEPLOYMENTS)
    num_replicas = check_int("num_replicas", num_replicas, minimum=1)
    port = check_int("port", port, minimum=1, maximum=65535)
    threads = check_int("threads", threads, minimum=1)
    max_batch_size = check_int("max_batch_size", max_batch_size, minimum=1)
    batch_wait_timeout_s = check_real("batch_wait_timeout_s", batch_wait_timeout_s, minimum=0)
    replica_cpus = check_real("replica_cpus", replica_cpus, minimum=0)
    if max_ongoing_requests is not None:
        max_ongoing_requests = check_int("max_ongoing_requests", max_ongoing_requests, minimum=1)
    if num_cpus is not None:
        num_cpus = check_int("num_cpus", num_cpus, minimum=1)
    name, _, _ = model.partition("@")
    if not name:
        raise ConfigError(f"model must be NAME@VERSION or NAME@STAGE, got {model!r}")
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ConfigError(f"route_prefix must start with '/', got {route_prefix!r}")
    t0 = time.perf_counter()
    start_local_ray(num_cpus)
    serve.start(http_options={"host": host, "port": port})
    options: dict[str, Any] = {
        "num_replicas": num_replicas,
        "ray_actor_options": {"num_cpus": replica_cpus},
    }
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    if deployment == "batched":
        app = BatchedPredictor.options(**options).bind(  # type: ignore[attr-defined]
            str(registry),
            model,
            backend=backend,
            threads=threads,
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s,
        )
    else:
        app = EngineDeployment.options(**options).bind(  # type: ignore[attr-defined]
            str(registry), [model], backend=backend, threads=threads, **(engine_options or {})
        )
    serve.run(app, name=app_name, route_prefix=route_prefix)
    served = RayServeApp(app_name, deployment, name, host, port, route_prefix, 0.0)
    _wait_http(f"{served.url}/healthz", timeout_s=60.0)
    return dataclasses.replace(served, ready_s=time.perf_counter() - t0)


def _wait_http(url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200 (Ray Serve's proxy starts after ``serve.run``)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise CelerisError(f"Ray Serve did not answer at {url} within {timeout_s:g} s: {last}")


def shutdown() -> None:
    """Stop Ray Serve and the Ray instance this process started (or joined)."""
    import ray

    if ray.is_initialized():
        with contextlib.suppress(Exception):  # Serve may not have been started
            serve.shutdown()
        ray.shutdown()


@contextlib.contextmanager
def local_serve(registry: str | Path, model: str, **kwargs: Any) -> Iterator[RayServeApp]:
    """Deploy on a local Ray (see :func:`deploy`) for the ``with`` block, then shut it down."""
    try:
        yield deploy(registry, model, **kwargs)
    finally:
        shutdown()


if __name__ == "__main__":  # pragma: no cover - kept for one release
    # The command moved to the CLI (`celeris serve-ray`); this entry point forwards to it.
    import sys

    print(
        "python -m celeris.serving.ray_serve is deprecated and will be removed in the next "
        "release; use: celeris serve-ray",
        file=sys.stderr,
        flush=True,
    )
    from celeris.cli.main import app as _cli

    _cli(["serve-ray", *sys.argv[1:]], prog_name="celeris")

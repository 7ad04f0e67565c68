"""The serving engine: model versions behind dynamic batchers, caches, A/B routing, hot swaps.

An :class:`Engine` holds, per model name, the loaded versions (each a predictor with an
``input_size``, ``horizon``, ``n_features`` and a ``predict([B, L, C]) -> [B, horizon]``), the
version that serves, and an optional A/B test. Each active version has its own
:class:`~celeris.serving.batcher.DynamicBatcher` (and so its own worker thread): requests for
one version are batched together, across assets within a request and across concurrent
requests.

A request (:meth:`Engine.predict`) is validated and trimmed to the model's window, looked up
in the cache row by row (key: model, version, window), and only the missing rows go to the
batcher; the computed rows are cached. The result says which version computed it.

Hot swap
    :meth:`Engine.swap` starts the new version's batcher, then moves the serving pointer in
    one assignment. Routing a request and queueing it in a batcher happen in the same step of
    the event loop (no ``await`` between them), so every request is either queued on the old
    version before the swap, and finishes there, or routed to the new one after it; the old
    batcher then drains and stops. No request fails because of a swap.

A/B tests
    :meth:`Engine.start_ab` routes a request with a ``key`` to the challenger with
    probability ``split`` (:func:`celeris.serving.rollout.arm_for`, deterministic by key) and
    records each arm's latency, success and outcome value (the request's mean forecast) in an
    :class:`~celeris.serving.rollout.ABStats`. Requests without a key go to the champion and
    are not counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

from celeris.checks import check_fraction, check_real
from celeris.errors import CelerisTypeError, ConfigError, DataError, ModelNotFound, did_you_mean
from celeris.serving.batcher import (
    BatcherConfig,
    DynamicBatcher,
    MetricsSink,
    Priority,
    guarded,
)
from celeris.serving.cache import TieredCache, cache_key
from celeris.serving.errors import ABNotRunning, BatcherClosed

if TYPE_CHECKING:
    from celeris.serving.rollout import ABStats

__all__ = ["ABNotRunning", "Engine", "ModelNotFound", "PredictResult"]


@dataclasses.dataclass
class PredictResult:
    """What one :meth:`Engine.predict` returns.

    Attributes
    ----------
    values
        Forecasts ``[n, horizon]`` in original units, one row per history.
    model, version
        The model and the version that computed (or had cached) these values.
    arm
        ``"champion"`` or ``"challenger"`` while an A/B test routed this request, else ``None``.
    cached
        ``[n]`` bool: which rows came from the cache.
    """

    values: np.ndarray
    model: str
    version: str
    arm: str | None
    cached: np.ndarray


@dataclasses.dataclass
class _Version:
    version: str
    predictor: Any
    batcher: DynamicBatcher | None = None
    # Serialises calls into the predictor (it is not thread-safe): while an old batcher of this
    # version drains, a new one may already run, each with its own worker thread.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    added_at: float = dataclasses.field(default_factory=time.time)


@dataclasses.dataclass
class _AB:
    challenger: str
    split: float
    salt: str
    stats: ABStats
    started_at: float


@dataclasses.dataclass
class _Model:
    name: str
    versions: dict[str, _Version] = dataclasses.field(default_factory=dict)
    serving: str | None = None
    ab: _AB | None = None


def _windows(histories: Any, predictor: Any) -> np.ndarray:
    """Return ``histories`` as C-contiguous float32 windows ``[n, input_size, n_features]``.

    Accepts what :meth:`celeris.models.predictor.Predictor.predict` accepts: ``[L]``,
    ``[L, C]`` (one multi-feature history), ``[B, L]`` (single-feature histories) or
    ``[B, L, C]``; longer histories are cut to their last ``input_size`` bars.
    """
    try:
        arr = np.asarray(histories, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise DataError(f"histories must be a numeric array of equal-length rows: {exc}") from None
    n_features = int(predictor.n_features)
    input_size = int(predictor.input_size)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1, 1)  # [L] -> [1, L, 1]
    elif arr.ndim == 2:
        # [L, C] -> [1, L, C] for a multi-feature model; [B, L] -> [B, L, 1] otherwise.
        arr = arr.reshape(1, *arr.shape) if n_features > 1 else arr.reshape(*arr.shape, 1)
    if arr.ndim != 3:
        raise DataError(f"histories must be [L], [L, C], [B, L] or [B, L, C], got {arr.ndim}-D")
    n, length, c = arr.shape
    if n == 0:
        raise DataError("no histories given")
    if c != n_features:
        raise DataError(f"expected {n_features} feature(s) per bar, got {c}")
    if length < input_size:
        raise DataError(f"history too short: {length} bars, the model needs the last {input_size}")
    arr = np.ascontiguousarray(arr[:, length - input_size :, :])
    if not np.isfinite(arr).all():
        i, t, k = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"history {i} has a non-finite value at bar {t - input_size} (feature {k})")
    return arr


def _ab_view(model: _Model) -> dict[str, Any] | None:
    ab = model.ab
    if ab is None:
        return None
    return {
        "champion": model.serving,
        "challenger": ab.challenger,
        "split": ab.split,
        "salt": ab.salt,
        "started_at": ab.started_at,
    }


def _outcome_value(values: np.ndarray) -> float | None:
    """Return the A/B outcome value of a request: its mean forecast (None if not finite)."""
    value = float(values.mean())
    return value if math.isfinite(value) else None


class Engine:
    """Serve model versions through dynamic batchers, with caching, A/B tests and hot swaps.

    Use it from one asyncio event loop; every method that starts a batcher needs it running.

    Parameters
    ----------
    cache
        Forecast cache (memory, optionally Redis); ``None`` for none.
    config
        Batching policy of every version's batcher.
    metrics
        Receives request, batch, queue and error events (also handed to the batchers).
    """

    def __init__(
        self,
        *,
        cache: TieredCache | None = None,
        config: BatcherConfig | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        config = BatcherConfig() if config is None else config
        if not isinstance(config, BatcherConfig):
            raise CelerisTypeError(f"config must be a BatcherConfig, got {type(config).__name__}")
        if cache is not None and not isinstance(cache, TieredCache):
            raise CelerisTypeError(f"cache must be a TieredCache, got {type(cache).__name__}")
        self.cache = cache
        self.config = config
        self.metrics: MetricsSink = guarded(metrics)
        self._models: dict[str, _Model] = {}
        self._default_timeout_s = config.default_timeout_ms / 1e3
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # ----------------------------------------------------------------- versions

    async def add_version(
        self, name: str, version: str, predictor: Any, *, serve: bool = True
    ) -> None:
        """Load ``predictor`` as ``name@version``; with ``serve``, make it the serving version.

        When another version was serving, this is a :meth:`swap`. Raises
        :class:`~celeris.errors.ConfigError` if the version is already loaded or the predictor
        lacks ``predict``, ``input_size``, ``horizon`` or ``n_features``.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"model name must be a non-empty string, got {name!r}")
        version = str(version)
        for attr in ("predict", "input_size", "horizon", "n_features"):
            if not hasattr(predictor, attr):
                raise ConfigError(f"predictor for {name}@{version} has no {attr!r}")
        model = self._models.setdefault(name, _Model(name))
        if version in model.versions:
            raise ConfigError(f"{name}@{version} is already loaded")
        model.versions[version] = _Version(version, predictor)
        if serve:
            await self.swap(name, version)

    async def swap(self, name: str, version: str) -> None:
        """Make ``version`` serve ``name`` atomically; drain and stop the old version's batcher.

        Requests already queued on the old version finish there; requests routed after this
        call starts go to ``version``. Returns once the old batcher has stopped (it keeps
        running if the old version is still an A/B arm).
        """
        self._check_open()
        model = self._model(name)
        version = str(version)
        v = self._version(model, version)
        if model.ab is not None and model.ab.challenger == version:
            raise ConfigError(
                f"{name}@{version} is the challenger of the running A/B test; stop it first"
            )
        self._activate(model, v)
        old, model.serving = model.serving, version
        if old is not None and old != version:
            await self._retire(model, old)

    async def unload(self, name: str, version: str) -> None:
        """Forget a version that neither serves nor runs in an A/B test (frees its model)."""
        model = self._model(name)
        version = str(version)
        self._version(model, version)
        if self._active(model, version):
            raise ConfigError(f"{name}@{version} is serving or in an A/B test; cannot unload it")
        await self._retire(model, version)
        model.versions.pop(version, None)

    def _activate(self, model: _Model, v: _Version) -> DynamicBatcher:
        """Return ``v``'s running batcher, starting one if needed (synchronous, in the loop)."""
        b = v.batcher
        if b is None or not b.running:
            predict = v.predictor.predict
            lock = v.lock

            def run(x: np.ndarray) -> np.ndarray:
                with lock:
                    return np.asarray(predict(x))

            b = DynamicBatcher(
                run, self.config, name=model.name, version=v.version, metrics=self.metrics
            )
            b.start_nowait()
            v.batcher = b
        return b

    @staticmethod
    def _active(model: _Model, version: str) -> bool:
        return model.serving == version or (model.ab is not None and model.ab.challenger == version)

    async def _retire(self, model: _Model, version: str) -> None:
        """Drain and stop ``version``'s batcher unless it is active again."""
        v = model.versions.get(version)
        if v is None or v.batcher is None or self._active(model, version):
            return
        b = v.batcher
        # stop() closes the batcher before its first await: no request can slip in after the
        # _active check above.
        await b.stop(drain=True)
        if v.batcher is b:
            v.batcher = None
            # Its queue gauge would otherwise stay on /metrics at its last value for as long
            # as the process runs.
            self.metrics.forget_version(model.name, version)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------------- A/B tests

    def start_ab(self, name: str, challenger: str, split: float, salt: str = "") -> None:
        """Route keyed requests to ``challenger`` with probability ``split`` (call in the loop)."""
        from celeris.serving.rollout import ABStats

        self._check_open()
        model = self._model(name)
        challenger = str(challenger)
        v = self._version(model, challenger)
        if model.serving is None:
            raise ModelNotFound(f"model {name!r} has no serving version to be the champion")
        if challenger == model.serving:
            raise ConfigError(f"{name}@{challenger} already serves; pick another challenger")
        if model.ab is not None:
            raise ConfigError(
                f"an A/B test of {name}@{model.ab.challenger} is running; stop it first"
            )
        split = check_fraction("split", split)
        if not isinstance(salt, str):
            raise CelerisTypeError(f"salt must be a string, got {type(salt).__name__}")
        self._activate(model, v)
        model.ab = _AB(challenger, split, salt, ABStats(), time.time())

    def stop_ab(self, name: str) -> ABStats:
        """End the A/B test of ``name``; return its statistics (the champion keeps serving).

        The challenger's batcher drains and stops in the background.
        """
        model = self._model(name)
        ab = model.ab
        if ab is None:
            raise ABNotRunning(f"no A/B test runs for model {name!r}")
        model.ab = None
        self._spawn(self._retire(model, ab.challenger))
        return ab.stats

    def ab_state(self, name: str) -> dict[str, Any] | None:
        """Return the running A/B test of ``name`` (``champion``, ``challenger``, ``split``,
        ``salt``, ``started_at``), or None when none runs. The engine is the one place that
        knows: the model manager and ``GET /v1/models`` read it here."""
        return _ab_view(self._model(name))

    def ab_stats(self, name: str) -> ABStats:
        """Return the running A/B test's statistics (live object)."""
        ab = self._model(name).ab
        if ab is None:
            raise ABNotRunning(f"no A/B test runs for model {name!r}")
        return ab.stats

    # ----------------------------------------------------------------- predict

    async def predict(
        self,
        name: str,
        histories: Any,
        *,
        priority: Priority | str | int = Priority.NORMAL,
        timeout_ms: float | None = None,
        key: str | None = None,
        use_cache: bool = True,
    ) -> PredictResult:
        """Forecast ``[n, horizon]`` for ``histories`` with the version serving ``name``.

        Parameters
        ----------
        name
            Model name.
        histories
            ``[n, L, C]`` (or ``[L]``, ``[L, C]``, ``[n, L]``): one window per asset; rows are
            batched with each other and with concurrent requests.
        priority
            :class:`~celeris.serving.batcher.Priority` or its name.
        timeout_ms
            Deadline from now; default the batcher's ``default_timeout_ms``.
        key
            A/B routing key (a client, account or strategy id); without one the champion
            serves.
        use_cache
            Look up and store rows in the engine's cache.

        Raises
        ------
        ModelNotFound, DataError, Overloaded, DeadlineExceeded, RequestFailed
        """
        t0 = time.monotonic()
        if type(priority) is not Priority:
            priority = Priority.parse(priority)
        if timeout_ms is None:
            deadline = t0 + self._default_timeout_s
        elif (type(timeout_ms) is float or type(timeout_ms) is int) and 0 < timeout_ms < math.inf:
            deadline = t0 + timeout_ms / 1e3
        else:
            # Off the hot path: the full check names the mistake (or accepts a numpy real).
            deadline = t0 + check_real("timeout_ms", timeout_ms, minimum=0, open_low=True) / 1e3
        self._check_open()
        model = self._model(name)
        for _ in range(4):  # re-route only if a batcher closed under us (never in practice)
            version, arm, stats = self._route(model, key)
            v = model.versions[version]
            x = _windows(histories, v.predictor)  # [n, input_size, n_features]
            n = len(x)
            cached = np.zeros(n, dtype=bool)
            keys: list[bytes] = []
            hits: list[np.ndarray | None] = []
            cache = self.cache if use_cache else None
            if cache is not None:
                keys = [cache_key(name, version, row) for row in x]
                hits = cache.get_many(keys)
                cached[:] = [h is not None for h in hits]
            if cached.all():
                values = np.stack(hits)  # type: ignore[arg-type]
                seconds = time.monotonic() - t0
                self.metrics.observe_request(name, version, priority.label, seconds, "cached")
                if stats is not None and arm is not None:
                    stats.record(arm, seconds, True, _outcome_value(values))
                return PredictResult(values, name, version, arm, cached)
            batcher = v.batcher
            if batcher is None or not batcher.running:
                await asyncio.sleep(0)
                continue
            missing = np.flatnonzero(~cached)
            todo = x if len(missing) == n else x[missing]
            try:
                # Routing above and queueing here run in one step of the loop: a swap cannot
                # come between them.
                out = await batcher.submit(todo, priority=priority, deadline=deadline)
            except BatcherClosed:
                await asyncio.sleep(0)
                continue
            except BaseException:
                if stats is not None and arm is not None:
                    stats.record(arm, time.monotonic() - t0, False)
                raise
            if len(missing) == n:
                values = out
            else:
                values = np.empty((n, *out.shape[1:]), dtype=out.dtype)
                values[missing] = out
                for i in np.flatnonzero(cached):
                    values[i] = hits[i]
            if cache is not None:
                cache.put_many([keys[i] for i in missing], list(out))
            if stats is not None and arm is not None:
                stats.record(arm, time.monotonic() - t0, True, _outcome_value(values))
            return PredictResult(values, name, version, arm, cached)
        raise BatcherClosed(f"model {name!r}: no running batcher to serve the request")

    def _route(self, model: _Model, key: str | None) -> tuple[str, str | None, ABStats | None]:
        """Return (version, A/B arm or None, the A/B statistics or None) for a request."""
        serving = model.serving
        if serving is None:
            raise ModelNotFound(f"model {model.name!r} has no serving version")
        ab = model.ab
        if ab is None or key is None:
            return serving, None, None
        from celeris.serving.rollout import arm_for

        arm = arm_for(key, ab.split, ab.salt)
        return (ab.challenger if arm == "challenger" else serving), arm, ab.stats

    # ----------------------------------------------------------------- introspection

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"no model named {name!r} is loaded{did_you_mean(str(name), self._models)}"
            )
        return model

    def _version(self, model: _Model, version: str) -> _Version:
        v = model.versions.get(version)
        if v is None:
            loaded = ", ".join(model.versions) or "none"
            raise ModelNotFound(f"{model.name}@{version} is not loaded (loaded: {loaded})")
        return v

    def _check_open(self) -> None:
        if self._closed:
            raise BatcherClosed("the engine is closed")

    def predictor(self, name: str, version: str | None = None) -> Any:
        """Return the predictor of ``name@version`` (default: the serving version)."""
        model = self._model(name)
        if version is None:
            if model.serving is None:
                raise ModelNotFound(f"model {name!r} has no serving version")
            version = model.serving
        return self._version(model, str(version)).predictor

    def models(self) -> list[dict[str, Any]]:
        """Describe every model: serving version, loaded versions, A/B state and shapes."""
        out = []
        for model in self._models.values():
            serving = model.versions.get(model.serving) if model.serving is not None else None
            pred = serving.predictor if serving is not None else None
            out.append(
                {
                    "name": model.name,
                    "serving": model.serving,
                    "versions": list(model.versions),
                    "ab": _ab_view(model),
                    "input_size": None if pred is None else int(pred.input_size),
                    "horizon": None if pred is None else int(pred.horizon),
                    "n_features": None if pred is None else int(pred.n_features),
                    "batchers": {
                        v.version: v.batcher.stats()
                        for v in model.versions.values()
                        if v.batcher is not None
                    },
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        """Return the models (see :meth:`models`) and the cache statistics."""
        return {
            "models": self.models(),
            "cache": None if self.cache is None else self.cache.stats(),
        }

    async def close(self) -> None:
        """Drain and stop every batcher, finish background work and close the cache."""
        self._closed = True
        for model in self._models.values():
            model.ab = None
            for v in model.versions.values():
                if v.batcher is not None:
                    await v.batcher.stop(drain=True)
                    v.batcher = None
        while self._background:
            await asyncio.gather(*list(self._background))
        if self.cache is not None:
            self.cache.close()

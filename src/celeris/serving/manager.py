"""Which version of each served model answers, and every change of it.

:class:`ModelManager` owns which version of each model serves: loading (in a thread, never on
the event loop), warming, shadow validation before a promotion or an A/B test, atomic hot swaps
through the engine, rollbacks, and following the registry: a process serving ``NAME@production``
checks the registry every ``registry_poll_s`` seconds and, when another process (for example
``celeris models promote``) changed the production version, shadow-validates it here too and
hot-swaps it in; a version that fails is logged once and not served (the process keeps the
version it has), and ``/readyz`` says so: ``degraded`` (503) with the served and the registry's
production version side by side, as does ``GET /v1/models``. A registry that cannot be read is
logged once per outage; the loaded versions keep serving. Changes of the served version are
serialised by one lock, so an admin promotion and the poller never interleave.

It raises domain errors (:mod:`celeris.serving.errors`), never HTTP answers; the A/B test
itself (routing, statistics) lives in the engine, which the manager asks. The symbol ids of the
signal feed (:class:`SymbolTable`) and the request shape of each served model
(:class:`ModelSpec`) live here too: the HTTP layer reads them on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from celeris.checks import check_int
from celeris.errors import CelerisError, ConfigError, DataError, ModelNotFound, did_you_mean
from celeris.serving.config import SYMBOL_RE, SYMBOL_RULE, ServeSettings
from celeris.serving.errors import (
    Conflict,
    ModelLoading,
    NotServing,
    ShadowValidationFailed,
    SymbolLimitReached,
)

if TYPE_CHECKING:  # pragma: no cover
    from celeris.models.features import FeatureSpec
    from celeris.serving.metrics import PrometheusMetrics
    from celeris.serving.registry import ModelRecord, ModelRegistry
    from celeris.serving.rollout import ShadowReport

__all__ = [
    "ModelManager",
    "ModelSpec",
    "SymbolTable",
    "freeze_heap",
    "load_verified",
    "model_spec",
    "synthetic_bars",
    "synthetic_histories",
]

log = logging.getLogger("celeris.serving")

_SYMBOL_ID_MAX = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What requests for a served model must look like, and what it answers."""

    name: str
    version: int
    input_size: int
    n_features: int
    horizon: int
    target_kind: str = "level"
    features: tuple[str, ...] = ()
    backend: str = ""
    #: What turns raw bars into this model's inputs (None: the checkpoint records no
    #: features, so requests must send finished windows).
    feature_spec: FeatureSpec | None = None

    @property
    def bars_needed(self) -> int | None:
        """Fewest raw bars per symbol that give one input window (None without a spec)."""
        spec = self.feature_spec
        return None if spec is None else spec.lookback + self.input_size

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the feature spec without its training reference)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "feature_spec"
        }
        out["features"] = list(self.features)
        spec = self.feature_spec
        out["feature_spec"] = (
            None
            if spec is None
            else {
                "version": spec.version,
                "features": list(spec.features),
                "lookback": spec.lookback,
            }
        )
        out["bars_needed"] = self.bars_needed
        return out


class SymbolTable:
    """Ids of symbols on the signal feed: configured symbols first (id = position), then new
    symbols in order of first sight, at most ``limit`` in all. ``GET /v1/symbols`` publishes
    the mapping.

    An id, once handed out, names its symbol for the life of the process: a consumer of the
    feed may have stored it, so ids are never evicted or reused. New symbols past ``limit``
    are refused instead (:class:`SymbolLimitReached`), which bounds the table (each symbol is at
    most 64 characters, :data:`~celeris.serving.config.SYMBOL_RE`); configure the symbols you
    trade with ``CELERIS_SERVE_SYMBOLS`` and size ``CELERIS_SERVE_MAX_SYMBOLS`` to them.
    """

    def __init__(self, symbols: Sequence[str] = (), limit: int = _SYMBOL_ID_MAX + 1) -> None:
        self._ids: dict[str, int] = {}
        self.limit = min(check_int("limit", limit, minimum=1), _SYMBOL_ID_MAX + 1)
        for s in symbols:
            _check_symbol(s)
            self._ids.setdefault(s, len(self._ids))
        if len(self._ids) > self.limit:
            raise ConfigError(
                f"{len(self._ids)} configured symbols exceed the limit of {self.limit} "
                "(CELERIS_SERVE_MAX_SYMBOLS)"
            )

    def id(self, symbol: str) -> int:
        """Return the id of ``symbol``, assigning the next one on first sight."""
        return self.ids([symbol])[0]

    def ids(self, symbols: Sequence[str]) -> list[int]:
        """Return the ids of ``symbols``, assigning new ones in order; all or none.

        Raises
        ------
        SymbolLimitReached
            The new symbols would take the table past its limit (nothing is assigned).
        DataError
            A new symbol is not a valid symbol name.
        """
        known = self._ids
        found = [known.get(s) for s in symbols]
        if None not in found:
            return found  # type: ignore[return-value]  # the common case: all known
        new = list(dict.fromkeys(s for s, i in zip(symbols, found, strict=True) if i is None))
        for s in new:
            _check_symbol(s)
        if len(known) + len(new) > self.limit:
            shown = ", ".join(repr(s) for s in new[:3]) + (", ..." if len(new) > 3 else "")
            raise SymbolLimitReached(
                f"the signal feed has handed out {len(known):,} of its {self.limit:,} symbol ids "
                f"(CELERIS_SERVE_MAX_SYMBOLS) and ids are never reused; {len(new)} new "
                f"symbol(s) ({shown}) refused. Use configured symbols (GET /v1/symbols)"
            )
        for s in new:
            known[s] = len(known)
        return [known[s] for s in symbols]

    def mapping(self) -> dict[str, int]:
        """Return ``{symbol: id}``."""
        return dict(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _check_symbol(symbol: object) -> None:
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise DataError(f"symbol {str(symbol)[:80]!r} is not {SYMBOL_RULE}")


def model_spec(name: str, version: int | str, predictor: Any) -> ModelSpec:
    """Return the :class:`ModelSpec` of ``predictor`` served as ``name`` at ``version``: its
    shapes and backend, and its target kind and features from the checkpoint's metadata (a
    version that is not a number, such as a stage, reads 0)."""
    from celeris.models.features import recorded_spec

    meta = getattr(predictor, "meta", {}) or {}
    spec = recorded_spec(meta, int(predictor.n_features))
    return ModelSpec(
        name=name,
        version=int(version) if str(version).isdigit() else 0,
        input_size=int(predictor.input_size),
        n_features=int(predictor.n_features),
        horizon=int(predictor.horizon),
        target_kind=str(meta.get("target_kind", "level")),
        features=spec.features if spec is not None else (),
        backend=str(getattr(predictor, "backend", "")),
        feature_spec=spec,
    )


def synthetic_bars(spec: FeatureSpec, input_size: int, seed: int = 0) -> np.ndarray:
    """Return one plausible bar history ``[1, lookback + input_size, 5]`` (random walk around
    100, positive volume): what warming the feature kernel for a model runs on."""
    rng = np.random.default_rng(seed)
    n = spec.lookback + input_size
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.003, n))
    bars = np.stack(
        [close, close * (1 + spread), close * (1 - spread), close, 1.0 + rng.random(n)], axis=1
    )
    return bars[None]  # [T, 5] -> [1, T, 5]


def synthetic_histories(predictor: Any, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` plausible histories ``[n, L, C]`` for warming or validating ``predictor``.

    Around the scaler's centre and scale when the checkpoint has a global scaler, else random
    walks around 100 (per-window scalers normalise whatever level they see).
    """
    rng = np.random.default_rng(seed)
    shape = (n, int(predictor.input_size), int(predictor.n_features))
    center = getattr(predictor, "_center", None)
    scale = getattr(predictor, "_scale", None)
    if center is not None and scale is not None:
        x = rng.standard_normal(shape) * np.asarray(scale) + np.asarray(center)
    else:
        x = 100.0 + rng.standard_normal(shape).cumsum(axis=1) * 0.5
    return x.astype(np.float32)


def _v(version: Any) -> Any:
    # The engine labels versions as strings; the registry's are integers.
    return int(version) if isinstance(version, str) and version.isdigit() else version


def load_verified(
    registry: ModelRegistry, ref: str, *, backend: str, threads: int | None, max_batch: int
) -> tuple[ModelRecord, Any]:
    """Load ``ref`` from ``registry``: the artifact is verified, copied to a private directory,
    the copy verified again and loaded (the bytes that run are bytes that were verified).

    An ONNX backend whose file is in the artifact (``celeris models register`` stores it) loads
    without importing torch (:meth:`celeris.models.predictor.Predictor.load`), which is most of
    a cold start.
    """
    return registry.load(ref, backend=backend, threads=threads, max_batch=max_batch)


class ModelManager:
    """Which version of each model serves, and every change of it (see the module docstring).

    Parameters
    ----------
    engine
        The batching engine the versions are added to and swapped in.
    registry
        Where versions are loaded from (sha256-verified) and stages are changed.
    settings
        Backend, threads, batch size (for warming), shadow-validation thresholds, polling.
    metrics
        Receives ``error(model, kind)`` for failed loads and refused candidates.
    """

    def __init__(
        self,
        engine: Any,
        registry: ModelRegistry,
        settings: ServeSettings,
        *,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.symbols = SymbolTable(settings.symbols, settings.max_symbols)
        self.specs: dict[str, ModelSpec] = {}
        self.serving: dict[str, ModelRecord] = {}
        self._follow: set[str] = set()  # names served as NAME@production: follow the registry
        self._recent: dict[str, deque[np.ndarray]] = {}
        self._previous: dict[str, int] = {}  # the version that served before, kept loaded
        self._lock: asyncio.Lock | None = None
        self._failed_reloads: set[tuple[str, int]] = set()
        # What the registry says is production for each followed name (None: no production
        # version), as of the last look; why a differing production version is not served;
        # and the last registry failure (None while it answers).
        self._registry_production: dict[str, int | None] = {}
        self._not_swapped: dict[str, str] = {}
        self._registry_error: str | None = None
        self.status = "starting"
        self.error: str | None = None
        self.ready_after_s: float | None = None
        self.frozen_objects = 0  # start-up objects moved out of the cyclic GC (freeze_heap)
        self.expected: tuple[str, ...] = ()

    # -- lookups used on every request (no awaits, no locks) ---------------------------------

    def spec(self, name: str) -> ModelSpec:
        """Return the served model ``name``'s spec.

        Raises
        ------
        ModelLoading
            ``name`` is configured but not loaded yet (HTTP 503).
        NotServing
            ``name`` is not served here (HTTP 404, with a did-you-mean hint).
        """
        spec = self.specs.get(name)
        if spec is not None:
            return spec
        if self.status in ("starting", "loading") and any(
            r.partition("@")[0] == name for r in self.expected
        ):
            raise ModelLoading(f"model {name} is still loading; retry shortly")
        served = sorted(self.specs)
        listing = f"; served: {', '.join(served)}" if served else "; no model is served yet"
        raise NotServing(f"unknown model {name!r}{did_you_mean(name, served)}{listing}")

    def serves(self, name: str) -> bool:
        """Return whether ``name`` is served."""
        return name in self.specs

    def record_input(self, name: str, x: np.ndarray) -> None:
        """Keep the newest rows of served traffic: the validation batch of shadow validation."""
        rows = self.settings.shadow_rows
        recent = self._recent.get(name)
        if recent is None:
            recent = self._recent[name] = deque(maxlen=rows)
        recent.append(x[-rows:].copy())

    def validation_batch(self, name: str, candidate: Any) -> tuple[np.ndarray, str]:
        """Return up to ``shadow_rows`` recent inputs of ``name`` fitting ``candidate`` (or
        synthetic histories when there is no traffic yet or the shapes differ), and a label
        saying which."""
        rows = self.settings.shadow_rows
        want = (int(candidate.input_size), int(candidate.n_features))
        parts: list[np.ndarray] = []
        have = 0
        for x in reversed(self._recent.get(name, ())):
            if x.shape[1:] != want:
                break
            parts.append(x)
            have += len(x)
            if have >= rows:
                break
        if parts:
            return np.concatenate(parts[::-1])[-rows:], f"{min(have, rows)} recent requests' rows"
        return synthetic_histories(candidate, rows), f"{rows} synthetic histories (no traffic yet)"

    def out_of_sync(self) -> dict[str, dict[str, Any]]:
        """Return the followed models whose served version is not the registry's production
        version: ``{name: {"serving", "registry_production", "pending", "reason"}}`` (empty
        when all agree). ``pending`` is true while the new version has not been tried yet (a
        hot swap is on its way), false once it was refused or when the registry has none."""
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self._follow):
            if name not in self._registry_production or name not in self.serving:
                continue
            production = self._registry_production[name]
            serving = self.serving[name].version
            if production == serving:
                continue
            refused = self._not_swapped.get(name)
            pending = refused is None and production is not None
            reason = refused or (
                f"the registry has no production version of {name}"
                if production is None
                else f"{name}@{production} is production in the registry; swapping it in"
            )
            out[name] = {
                "serving": serving,
                "registry_production": production,
                "pending": pending,
                "reason": reason,
            }
        return out

    def readiness(self) -> dict[str, Any]:
        """Return what ``/readyz`` answers: ``ready``, ``status`` (``degraded``, not ready,
        when a model serves another version than the registry's production one and will not
        swap to it by itself: the version was refused here, or the registry has none), the
        served versions, the registry's production versions, what is out of sync and why, and
        the registry's reachability. A swap under way is reported but stays ready."""
        mismatch = self.out_of_sync()
        stuck = any(not m["pending"] for m in mismatch.values())
        status = "degraded" if self.status == "ready" and stuck else self.status
        return {
            "ready": status == "ready",
            "status": status,
            "models": {n: r.version for n, r in self.serving.items()},
            "registry_production": dict(sorted(self._registry_production.items())),
            "out_of_sync": mismatch,
            "registry": {"reachable": self._registry_error is None, "error": self._registry_error},
            "expected": list(self.expected),
            "error": self.error,
            "ready_after_s": self.ready_after_s,
        }

    def adopt(self) -> None:
        """Serve the models the engine already holds (``create_app`` around a ready engine).

        Adopted models answer predictions; admin changes need registry records, so they are
        refused for them (404) until a version is loaded through the registry.
        """
        for m in self.engine.models():
            if m["serving"] is not None and m["name"] not in self.specs:
                predictor = self.engine.predictor(m["name"])
                self.specs[m["name"]] = model_spec(m["name"], m["serving"], predictor)
        if self.specs:
            self.status = "ready"

    # -- loading ---------------------------------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        """The lock serialising changes of served versions (created on the running loop)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _load_sync(self, ref: str) -> tuple[ModelRecord, Any]:
        """Load ``ref`` from the registry (hash-verified) and warm it; runs in a thread."""
        s = self.settings
        record, predictor = load_verified(
            self.registry,
            ref,
            backend=s.backend,
            threads=s.threads,
            max_batch=max(s.max_batch_size, s.shadow_rows),
        )
        # A model whose features this Celeris cannot compute is refused here, before it serves.
        from celeris.models.features import recorded_spec

        try:
            spec = recorded_spec(predictor.meta, int(predictor.n_features))
        except CelerisError as exc:
            raise type(exc)(f"cannot serve {record.ref}: {exc}") from None
        if spec is not None:  # compile (or load) the feature kernel before the first request
            spec.last_windows(synthetic_bars(spec, int(predictor.input_size)), predictor.input_size)
        # First calls allocate (ONNX Runtime arenas, torch kernels): pay that before traffic.
        x = synthetic_histories(predictor, s.max_batch_size, seed=1)
        for _ in range(3):
            predictor.predict(x[:1])
        predictor.predict(x)
        return record, predictor

    async def start(
        self, refs: Sequence[str], *, started_at: float | None = None, freeze: bool = False
    ) -> None:
        """Load and serve ``refs`` (``NAME@production``, ``NAME@3``...), then report ready.

        ``started_at`` (a :func:`time.time`) is when the process started, for ``ready_after_s``.
        ``freeze``: call :func:`freeze_heap` once everything is loaded, before reporting ready.
        """
        self.expected = tuple(refs)
        self.status = "loading"
        try:
            names = [r.partition("@")[0] for r in refs]
            if len(set(names)) != len(names):
                raise ConfigError(f"each model can be served once; got {', '.join(refs)}")
            async with self.lock:
                for ref in refs:
                    record = await self._add(ref, serve=True)
                    name, _, selector = ref.partition("@")
                    if selector in ("", "production"):
                        self._follow.add(name)
                        self._registry_production[name] = record.version
                    log.info("serving %s (%s, sha256 %s)", record.ref, ref, record.sha256[:12])
        except BaseException as exc:
            self.status = "failed"
            self.error = (
                str(exc) if isinstance(exc, CelerisError) else f"{type(exc).__name__}: {exc}"
            )
            raise
        if freeze:
            self.frozen_objects = freeze_heap()
        self.status = "ready"
        if started_at is not None:
            self.ready_after_s = round(time.time() - started_at, 3)

    async def _add(self, ref: str, *, serve: bool) -> ModelRecord:
        record, predictor = await asyncio.to_thread(self._load_sync, ref)
        return await self._install(record, predictor, serve=serve)

    def _loaded(self, name: str) -> set[str]:
        for m in self.engine.models():
            if m["name"] == name:
                return {str(v) for v in m["versions"]}
        return set()

    async def _install(self, record: ModelRecord, predictor: Any, *, serve: bool) -> ModelRecord:
        """Add a freshly loaded version to the engine (replacing an idle copy of it)."""
        version = str(record.version)
        if version in self._loaded(record.name):
            await self.engine.unload(record.name, version)  # idle: neither serving nor in A/B
        await self.engine.add_version(record.name, version, predictor, serve=serve)
        if serve:
            self._served(record, predictor)
        return record

    def _served(self, record: ModelRecord, predictor: Any) -> None:
        previous = self.serving.get(record.name)
        if previous is not None and previous.version != record.version:
            self._previous[record.name] = previous.version
        self.serving[record.name] = record
        self.specs[record.name] = model_spec(record.name, record.version, predictor)

    async def _swap_to(self, record: ModelRecord, predictor: Any | None = None) -> None:
        """Hot-swap ``record`` in: the given predictor, the copy still loaded, or a fresh load."""
        name, version = record.name, str(record.version)
        if predictor is None and version in self._loaded(name):
            predictor = self.engine.predictor(name, version)  # kept since it last served
            await self.engine.swap(name, version)
        else:
            if predictor is None:
                record, predictor = await asyncio.to_thread(self._load_sync, record.ref)
            await self._install(record, predictor, serve=False)
            await self.engine.swap(name, version)
        self._served(record, predictor)
        await self._prune(name)

    async def _prune(self, name: str) -> None:
        """Unload versions that neither serve, nor are the previous one (kept for an instant
        rollback), nor run in an A/B test."""
        keep = {str(self.serving[name].version)}
        if name in self._previous:
            keep.add(str(self._previous[name]))
        ab = self.engine.ab_state(name)
        if ab is not None:
            keep.add(ab["challenger"])
        for version in self._loaded(name) - keep:
            with contextlib.suppress(CelerisError):
                await self.engine.unload(name, version)

    # -- changes of the served version --------------------------------------------------------

    def _require(self, name: str) -> ModelRecord:
        record = self.serving.get(name)
        if record is None:
            served = sorted(self.serving)
            raise NotServing(
                f"model {name!r} is not served by this process{did_you_mean(name, served)}"
                + (f"; served: {', '.join(served)}" if served else "")
            )
        return record

    async def _candidate(
        self, name: str, version: int | None
    ) -> tuple[ModelRecord, Any, ShadowReport, str]:
        """Load ``name@version`` and shadow-validate it against the serving version."""
        current = self._require(name)
        ref = f"{name}@{version}" if version is not None else f"{name}@staging"
        record = await asyncio.to_thread(self.registry.get, ref)
        if record.version == current.version:
            raise Conflict(f"{record.ref} is already the serving version")
        return await self._validated(record)

    async def _validated(self, record: ModelRecord) -> tuple[ModelRecord, Any, ShadowReport, str]:
        """Load ``record`` and shadow-validate it against the version serving its name.

        Raises :class:`ShadowValidationFailed` (with the report) when a check fails.
        """
        from celeris.serving.rollout import Check, ShadowReport, shadow_validate

        name = record.name
        current = self._require(name)
        record, candidate = await asyncio.to_thread(self._load_sync, record.ref)
        batch, source = self.validation_batch(name, candidate)
        spec = self.specs[name]
        same_io = (candidate.input_size, candidate.n_features) == (spec.input_size, spec.n_features)
        serving_out = None
        if self.settings.shadow_max_rel_diff is not None and same_io:
            result = await self.engine.predict(name, batch, priority="low", use_cache=False)
            serving_out = np.asarray(result.values)
        s = self.settings
        report = await asyncio.to_thread(
            shadow_validate,
            candidate,
            batch,
            serving=serving_out,
            max_latency_ms=s.shadow_max_latency_ms,
            max_rel_diff=s.shadow_max_rel_diff,
        )
        # Clients send the serving version's shape: a candidate expecting another would break them.
        io = Check(
            "input_shape",
            same_io,
            f"candidate takes [n, {candidate.input_size}, {candidate.n_features}], clients send "
            f"[n, {spec.input_size}, {spec.n_features}]",
        )
        report = ShadowReport(passed=report.passed and same_io, checks=[*report.checks, io])
        if not report.passed:
            if self.metrics is not None:
                self.metrics.error(name, "shadow_failed")
            failed = ", ".join(report.failed)
            raise ShadowValidationFailed(
                f"{record.ref} failed shadow validation on {source} ({failed}); still serving "
                f"{current.ref}",
                report,
            )
        return record, candidate, report, source

    async def promote(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Shadow-validate ``name@version`` (default: newest staging), hot-swap it in, and make
        it production in the registry; return what happened."""
        async with self.lock:
            previous = self._require(name)
            record, candidate, report, source = await self._candidate(name, version)
            await self._swap_to(record, candidate)
            try:
                promoted = await asyncio.to_thread(self.registry.promote, name, record.version)
            except BaseException:
                # Keep the registry and the process consistent: serve the old version again.
                await self._swap_to(previous)
                raise
            self.serving[name] = promoted
            self._synced(name, promoted.version)
            log.info("promoted %s (was %s)", promoted.ref, previous.ref)
            previous = await asyncio.to_thread(self.registry.get, previous.ref)
            return {
                "serving": promoted.to_dict(),
                "previous": previous.to_dict(),
                "shadow": {**report.to_dict(), "validated_on": source},
            }

    async def rollback(self, name: str) -> dict[str, Any]:
        """Return production to the previous version (registry) and hot-swap it in."""
        async with self.lock:
            previous = self._require(name)
            record = await asyncio.to_thread(self.registry.rollback, name)
            await self._swap_to(record)
            self._synced(name, record.version)
            log.info("rolled back %s to %s", previous.ref, record.ref)
            previous = await asyncio.to_thread(self.registry.get, previous.ref)
            return {"serving": record.to_dict(), "previous": previous.to_dict()}

    async def start_ab(
        self, name: str, version: int, split: float, salt: str = ""
    ) -> dict[str, Any]:
        """Shadow-validate ``name@version`` and route ``split`` of request keys to it."""
        async with self.lock:
            running = self._ab_state(name)
            if running is not None:
                raise Conflict(
                    f"an A/B test of {name} is running (challenger version "
                    f"{running['challenger']}); stop it first"
                )
            self._require(name)
            record, candidate, report, source = await self._candidate(name, version)
            await self._install(record, candidate, serve=False)
            self.engine.start_ab(name, str(record.version), split, salt)
            return {
                "ab": self._ab_state(name),
                "shadow": {**report.to_dict(), "validated_on": source},
            }

    def _ab_state(self, name: str) -> dict[str, Any] | None:
        """The engine's A/B state of ``name`` (the one place it is kept), versions as the
        registry's integers; None when no test runs or the engine lacks the model."""
        try:
            state = self.engine.ab_state(name)
        except ModelNotFound:
            return None
        if state is None:
            return None
        return {**state, "champion": _v(state["champion"]), "challenger": _v(state["challenger"])}

    def ab_status(self, name: str) -> dict[str, Any]:
        """Return the running A/B test of ``name`` and its per-arm statistics."""
        self._require(name)
        state = self._ab_state(name)
        if state is None:
            raise Conflict(f"no A/B test of {name} is running")
        stats = self.engine.ab_stats(name)
        return {"ab": state, "arms": stats.summary() if stats is not None else None}

    async def stop_ab(self, name: str, metric: str = "latency") -> dict[str, Any]:
        """Stop the A/B test of ``name``; return its Welch t-test evaluation on ``metric``."""
        from celeris.serving.rollout import evaluate_ab

        async with self.lock:
            self._require(name)
            state = self._ab_state(name)
            if state is None:
                raise Conflict(f"no A/B test of {name} is running")
            stats = self.engine.stop_ab(name)
            await self._prune(name)
        report = evaluate_ab(stats, metric=metric)
        return {"ab": state, "arms": stats.summary(), "report": report.to_dict()}

    async def register(
        self, name: str, checkpoint: str, *, metrics: dict[str, Any] | None = None
    ) -> ModelRecord:
        """Register a checkpoint directory as a new staging version (with the ONNX export the
        served backend needs: fp32 for ``auto``, which a ``celeris train`` checkpoint already
        holds with its int8 export and ``exports.json``; none for ``torch``)."""
        exports = {"auto": ("onnx",), "onnx": ("onnx",), "onnx-int8": ("onnx-int8",)}.get(
            self.settings.backend, ()
        )
        return await asyncio.to_thread(
            self.registry.register, name, checkpoint, metrics=metrics, exports=exports
        )

    # -- following the registry --------------------------------------------------------------

    def _synced(self, name: str, version: int) -> None:
        """Record that ``name@version`` is both served and the registry's production."""
        if name in self._follow:
            self._registry_production[name] = version
        self._not_swapped.pop(name, None)

    def _registry_failed(self, exc: BaseException) -> None:
        message = str(exc)
        if self._registry_error is None:  # once per outage, not once per poll
            log.warning(
                "registry unreachable: %s; serving the loaded versions, checking again every "
                "%.1f s",
                message,
                self.settings.registry_poll_s,
            )
        self._registry_error = message

    def _registry_answered(self) -> None:
        if self._registry_error is not None:
            log.info("registry reachable again")
            self._registry_error = None

    async def _production_of(self, name: str) -> ModelRecord | None:
        """The registry's production record of ``name`` (None: none); raises when the
        registry cannot be read."""
        try:
            record = await asyncio.to_thread(self.registry.get, f"{name}@production")
        except ModelNotFound:
            record = None
        self._registry_answered()
        before = self._registry_production.get(name, -1)
        self._registry_production[name] = None if record is None else record.version
        if record is None and before is not None:
            log.warning(
                "registry: %s has no production version now; still serving %s",
                name,
                self.serving[name].ref,
            )
        return record

    async def poll_once(self) -> list[str]:
        """Hot-swap every followed model whose production version changed; return the refs.

        A registry that cannot be read is logged once per outage (the loaded versions keep
        serving); a production version that fails validation here is logged once per version
        and reported by :meth:`readiness` as out of sync.
        """
        swapped = []
        for name in sorted(self._follow):
            try:
                record = await self._production_of(name)
            except CelerisError as exc:
                self._registry_failed(exc)
                break  # the same database for every name: try again next poll
            if record is None or record.version == self.serving[name].version:
                if record is not None:
                    self._not_swapped.pop(name, None)
                continue
            async with self.lock:
                try:
                    record = await self._production_of(name)
                except CelerisError as exc:
                    self._registry_failed(exc)
                    break
                if record is None or record.version == self.serving[name].version:
                    continue
                key = (name, record.version)
                if key in self._failed_reloads:
                    continue  # refused once already: wait for another production version
                try:
                    # Promoted elsewhere (maybe with --skip-validation): validate here too.
                    record, candidate, _, _ = await self._validated(record)
                    await self._swap_to(record, candidate)
                except CelerisError as exc:
                    if self.metrics is not None:
                        self.metrics.error(name, "reload")
                    self._failed_reloads.add(key)  # logged once per version, not every poll
                    self._not_swapped[name] = f"{record.ref} was refused here: {exc}"
                    log.error("registry: not swapping to %s: %s", record.ref, exc)
                    continue
                self._synced(name, record.version)
                log.info("registry: %s is production now; swapped it in", record.ref)
                swapped.append(record.ref)
        return swapped

    async def poll_forever(self, interval_s: float) -> None:
        """Call :meth:`poll_once` every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if self.status == "ready":
                await self.poll_once()

    async def describe(self) -> list[dict[str, Any]]:
        """Return each served model: spec, serving record, registry versions (with which one
        the registry calls production, and whether this process serves it), engine state.

        Raises :class:`~celeris.serving.registry.RegistryUnavailable` when the registry
        cannot be read (``GET /v1/models`` answers 503).
        """
        engine_view = {m.get("name"): m for m in self.engine.models()}
        mismatch = self.out_of_sync()
        out = []
        for name, record in sorted(self.serving.items()):
            versions = await asyncio.to_thread(self.registry.list, name)
            production = next((r.version for r in versions if r.stage == "production"), None)
            follows = name in self._follow
            in_sync = not follows or production == record.version
            reason = None
            if not in_sync:
                reason = mismatch.get(name, {}).get("reason") or (
                    f"the registry's production version is {production}; not swapped in yet"
                )
            out.append(
                {
                    **self.specs[name].to_dict(),
                    "serving": record.to_dict(),
                    "follows_production": follows,
                    "registry_production": production,
                    "in_sync": in_sync,
                    "out_of_sync_reason": reason,
                    "ab": self._ab_state(name),
                    "engine": engine_view.get(name),
                    "versions": [
                        {"version": r.version, "stage": r.stage, "created_at": r.created_at}
                        for r in versions
                    ],
                }
            )
        return out


def freeze_heap() -> int:
    """Collect once, then move every live object out of the cyclic garbage collector.

    A serving process holds ~200,000 GC-tracked objects after importing torch, onnxruntime and
    FastAPI and loading its models; each full (generation 2) collection walks all of them,
    ~80 ms on a 2-vCPU EPYC, a stall that lands on whichever requests are in flight. These
    objects live as long as the process, so :func:`gc.freeze` parks them where collections do
    not look (CPython's documented use of it). Measured with ``bench_serving.py --quick`` on the
    same machine: p99 at concurrency 32 went from 123 to 49 ms (p50 43 -> 41 ms).

    Process-wide: ``celeris serve`` calls it (through :func:`build`'s ``freeze_heap``), a
    library user embedding the app decides for their own process. Returns the number of
    objects now frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

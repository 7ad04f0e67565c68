"""An asyncio dynamic batcher: concurrent requests coalesced into batches run in a worker thread.

One :class:`DynamicBatcher` serves one model version. Callers ``await submit(items)`` from the
event loop; a single asyncio task (the collector) takes rows from four priority queues, builds
batches of up to ``max_batch_size`` rows and hands them to one dedicated worker thread, which
calls ``fn(batch)`` and posts the whole batch's results back to the loop with one
``call_soon_threadsafe``. That is the only thread hop per batch in each direction.

When a batch goes out
    * The worker is idle: at once, with whatever is queued. An idle batcher never waits out
      its window, so one request alone costs a queue hop and a thread wake-up (tens of
      microseconds), not the 5 ms window.
    * The worker is busy: requests accumulate (natural batching: the longer a forward pass,
      the bigger the next batch). The next batch is formed ahead of time, while the current
      one runs, as soon as it is full (``max_batch_size`` rows) or the oldest waiting
      request has waited its priority's ``max_wait_ms``; the worker starts it the moment it
      is free, without waiting for a busy event loop. The window therefore bounds how long a
      request waits for batch-mates, never how long it waits for the worker.

Priorities and ageing
    ``Priority.CRITICAL`` (0) .. ``Priority.LOW`` (3). A request's effective priority is its
    base level lifted by one per ``ageing_ms`` waited (down to 0), and batches are filled in
    (effective priority, arrival time) order, so a LOW request waiting ``3 * ageing_ms`` ranks
    with CRITICAL and, being older, goes before newer ones: low priority cannot starve.

Deadlines, back-pressure, isolation
    Every request has a deadline (``default_timeout_ms`` unless given). A request whose
    deadline passes before the worker starts its batch is answered with
    :class:`DeadlineExceeded` as soon as the deadline passes, and never computed; one whose
    batch has started is computed and answered. When ``max_queue`` rows are
    waiting, ``submit`` raises :class:`Overloaded` at once with a ``retry_after_s`` estimated
    from the recent batch throughput. If ``fn`` raises on a batch, the batch is bisected by
    request and retried, so only the bad request fails (:class:`RequestFailed`); on
    ``MemoryError`` or ``torch.cuda.OutOfMemoryError`` the rows are split in halves and
    retried. ``fn`` must return one output row per input row.

All times come from :func:`time.monotonic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import IntEnum
from queue import SimpleQueue
from typing import Annotated, Any, ClassVar, Protocol

import numpy as np
from pydantic import field_validator, model_validator

from celeris._settings import FrozenConfig, integer, number
from celeris.checks import check_real
from celeris.errors import CelerisError, CelerisTypeError, ConfigError, DataError, did_you_mean
from celeris.serving.errors import BatcherClosed, DeadlineExceeded, Overloaded, RequestFailed

__all__ = [
    "BatcherClosed",
    "BatcherConfig",
    "DeadlineExceeded",
    "DynamicBatcher",
    "MetricsSink",
    "NullMetrics",
    "Overloaded",
    "Priority",
    "RequestFailed",
    "guarded",
]

log = logging.getLogger(__name__)


class Priority(IntEnum):
    """Request priority; lower values are served first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        """Return the priority named by ``value`` ("critical", "HIGH", 2, Priority.LOW...).

        An unknown name or an int outside 0..3 is a :class:`ConfigError`; anything else (a
        float, a bool, ``None``) a :class:`CelerisTypeError`.
        """
        if isinstance(value, Priority):
            return value
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            try:
                return cls(int(value))
            except ValueError:
                raise ConfigError(f"priority must be 0..3, got {value}") from None
        if isinstance(value, str):
            name = value.strip().upper()
            if name in cls.__members__:
                return cls[name]
            if name.isdigit():
                return cls.parse(int(name))
            names = [m.lower() for m in cls.__members__]
            raise ConfigError(
                f"unknown priority {value!r}{did_you_mean(value.strip().lower(), names)}; "
                f"choose one of {', '.join(names)}"
            )
        raise CelerisTypeError(
            f"priority must be a name or an int 0..3, got {type(value).__name__} {value!r}"
        )

    @property
    def label(self) -> str:
        """Return the lower-case name used in metrics and JSON ("critical", ...)."""
        return self.name.lower()


_N_PRIORITIES = len(Priority)
_LABELS = tuple(p.label for p in Priority)


class MetricsSink(Protocol):
    """Where the serving engine reports what it does (see ``celeris.serving.metrics``).

    ``observe_request`` is called once per request that reaches a batcher (time queued plus
    computed, outcome ``ok``, ``timeout``, ``overloaded``, ``failed``, ``cancelled`` or
    ``closed``), and by the engine once per request answered entirely from cache (outcome
    ``cached``). Every method is called from the event loop thread.
    """

    def observe_request(
        self, model: str, version: str, priority: str, seconds: float, outcome: str
    ) -> None:
        """Record one finished request."""

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        """Record one batch of ``size`` rows that took ``seconds`` in the worker."""

    def set_queue(self, model: str, version: str, items: int) -> None:
        """Record the number of rows waiting in a batcher."""

    def cache_event(self, tier: str, hit: bool) -> None:
        """Record one cache look-up in ``tier`` ("memory", "redis")."""

    def cache_error(self, tier: str) -> None:
        """Record one failure of a cache tier."""

    def error(self, model: str, kind: str) -> None:
        """Record one error of ``kind`` ("timeout", "overloaded", "failed", "oom_split"...)."""

    def forget_version(self, model: str, version: str) -> None:
        """Drop the per-version gauges of a version whose batcher stopped (a hot swap retired
        it), so they do not linger at their last value."""


class NullMetrics:
    """A :class:`MetricsSink` that records nothing (the default)."""

    def observe_request(
        self, model: str, version: str, priority: str, seconds: float, outcome: str
    ) -> None:
        pass

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        pass

    def set_queue(self, model: str, version: str, items: int) -> None:
        pass

    def cache_event(self, tier: str, hit: bool) -> None:
        pass

    def cache_error(self, tier: str) -> None:
        pass

    def error(self, model: str, kind: str) -> None:
        pass

    def forget_version(self, model: str, version: str) -> None:
        pass


class _GuardedMetrics:
    """A :class:`MetricsSink` wrapper that logs (once per method) instead of raising.

    Metrics must never fail or stall a request: a sink that raises would otherwise abort the
    delivery of a batch's results half-way.
    """

    def __init__(self, inner: MetricsSink) -> None:
        self.inner = inner
        self._warned: set[str] = set()

    def _failed(self, method: str) -> None:
        if method not in self._warned:
            self._warned.add(method)
            log.exception("metrics sink %s.%s raised; ignored", type(self.inner).__name__, method)

    def observe_request(
        self, model: str, version: str, priority: str, seconds: float, outcome: str
    ) -> None:
        try:
            self.inner.observe_request(model, version, priority, seconds, outcome)
        except Exception:
            self._failed("observe_request")

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        try:
            self.inner.observe_batch(model, version, size, seconds)
        except Exception:
            self._failed("observe_batch")

    def set_queue(self, model: str, version: str, items: int) -> None:
        try:
            self.inner.set_queue(model, version, items)
        except Exception:
            self._failed("set_queue")

    def cache_event(self, tier: str, hit: bool) -> None:
        try:
            self.inner.cache_event(tier, hit)
        except Exception:
            self._failed("cache_event")

    def cache_error(self, tier: str) -> None:
        try:
            self.inner.cache_error(tier)
        except Exception:
            self._failed("cache_error")

    def error(self, model: str, kind: str) -> None:
        try:
            self.inner.error(model, kind)
        except Exception:
            self._failed("error")

    def forget_version(self, model: str, version: str) -> None:
        forget = getattr(self.inner, "forget_version", None)  # optional for older sinks
        if forget is None:
            return
        try:
            forget(model, version)
        except Exception:
            self._failed("forget_version")


def guarded(metrics: MetricsSink | None) -> MetricsSink:
    """Return ``metrics`` made safe to call on the hot path (a no-op sink for ``None``)."""
    if metrics is None:
        return NullMetrics()
    if isinstance(metrics, NullMetrics | _GuardedMetrics):
        return metrics
    return _GuardedMetrics(metrics)


class BatcherConfig(FrozenConfig, kw_only=False):
    """Batching policy of one :class:`DynamicBatcher` (frozen; see :class:`FrozenConfig`).

    Built once when a batcher starts and only read afterwards: the batcher copies what it
    needs into plain attributes, so nothing per request touches or validates a config.

    Parameters
    ----------
    max_batch_size
        Most rows per call of the model.
    max_wait_ms
        Per priority (critical, high, normal, low): how long a request may wait for batch-mates
        while the worker is busy before the next batch is formed with it.
    max_queue
        Most rows waiting (not yet handed to the worker); beyond it ``submit`` raises
        :class:`Overloaded`.
    ageing_ms
        Waiting this long lifts a request one priority level.
    default_timeout_ms
        Deadline of a request submitted without one.

    Raises
    ------
    ConfigError
        An unknown field (with a "did you mean" hint) or a value out of range.
    CelerisTypeError
        A value of the wrong type (a ``bool`` or a float for an integer, a string for a number).
    """

    config_label: ClassVar[str] = "batcher"

    max_batch_size: Annotated[int, integer(ge=1)] = 64
    max_wait_ms: tuple[float, float, float, float] = (1.0, 2.0, 5.0, 20.0)
    max_queue: Annotated[int, integer(ge=1)] = 2048
    ageing_ms: Annotated[float, number(gt=0, finite=True)] = 10.0
    default_timeout_ms: Annotated[float, number(gt=0, finite=True)] = 1000.0

    @field_validator("max_wait_ms", mode="before")
    @classmethod
    def _check_waits(cls, waits: Any) -> tuple[float, ...]:
        if isinstance(waits, str | bytes) or not isinstance(waits, Sequence | np.ndarray):
            raise CelerisTypeError(
                f"max_wait_ms must be 4 numbers (critical, high, normal, low), got {waits!r}"
            )
        if len(waits) != _N_PRIORITIES:
            raise ConfigError(
                f"max_wait_ms needs one value per priority (critical, high, normal, low), "
                f"got {len(waits)}"
            )
        return tuple(
            check_real(f"max_wait_ms for {label}", w, minimum=0)
            for label, w in zip(_LABELS, waits, strict=True)
        )

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatcherConfig:
        if self.max_queue < self.max_batch_size:
            raise ConfigError(
                f"max_queue ({self.max_queue}) must be >= max_batch_size ({self.max_batch_size})"
            )
        return self

    def due_after_s(self) -> tuple[float, ...]:
        """Return, per base priority, the wait (s) after which a request's window has expired.

        A request's window is ``max_wait_ms`` of its *effective* priority, which rises one
        level per ``ageing_ms``; it has expired at the first wait ``w`` with
        ``w >= max_wait[effective(w)]``.
        """
        ageing = self.ageing_ms / 1e3
        out = []
        for base in range(_N_PRIORITIES):
            for lifted in range(base + 1):
                lo = lifted * ageing
                hi = (lifted + 1) * ageing if lifted < base else math.inf
                w = max(lo, self.max_wait_ms[base - lifted] / 1e3)
                if w < hi:
                    out.append(w)
                    break
        return tuple(out)


# Request states.
_PENDING, _DISPATCHED, _DONE = 0, 1, 2


class _Request:
    """One submitted request: its rows, progress through batches and its future."""

    __slots__ = (
        "batch",
        "batches",
        "deadline",
        "future",
        "items",
        "n",
        "priority",
        "result",
        "rows_done",
        "state",
        "t0",
        "taken",
    )

    def __init__(
        self,
        items: np.ndarray,
        priority: int,
        t0: float,
        deadline: float,
        future: asyncio.Future[np.ndarray],
    ) -> None:
        self.items: np.ndarray | None = items
        self.n = len(items)
        self.priority = priority
        self.t0 = t0
        self.deadline = deadline
        self.future: asyncio.Future[np.ndarray] | None = future
        self.taken = 0  # rows handed to the worker so far
        self.rows_done = 0  # rows whose outputs came back
        self.result: np.ndarray | None = None  # assembled output when split across batches
        self.state = _PENDING
        self.batch: _Batch | None = None  # the latest batch holding rows of this request
        self.batches = 0  # how many batches hold its rows


# A segment: (request, first row, end row, those rows). The rows are sliced in the loop thread,
# so the worker reads only immutable fields of a request (its deadline).
_Segment = tuple[_Request, int, int, np.ndarray]
# Per-segment outcome computed in the worker: outputs for its rows, or the exception.
_Outcome = np.ndarray | BaseException


class _Batch:
    """Segments handed to the worker; ``started`` is set by the worker when it takes them."""

    __slots__ = ("segments", "started")

    def __init__(self, segments: list[_Segment]) -> None:
        self.segments = segments
        self.started = False


def _is_oom(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError without importing torch (it subclasses RuntimeError).
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class _OutputMismatch(CelerisError):
    """``fn`` returned a different number of output rows than input rows."""


class DynamicBatcher:
    """Coalesce concurrent ``submit`` calls into batches for ``fn`` run in a worker thread.

    Parameters
    ----------
    fn
        Maps a batch ``[B, ...]`` to outputs ``[B, ...]`` (one row per input row). Runs only in
        this batcher's worker thread, one call at a time, so it need not be thread-safe.
    config
        Batching policy (:class:`BatcherConfig`).
    name, version
        Labels for metrics, logs and errors (model name and version).
    metrics
        Where batch sizes, queue lengths, request outcomes and errors are reported.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        config: BatcherConfig | None = None,
        *,
        name: str = "",
        version: str = "",
        metrics: MetricsSink | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be callable, got {type(fn).__name__}")
        config = BatcherConfig() if config is None else config
        if not isinstance(config, BatcherConfig):
            raise ConfigError(f"config must be a BatcherConfig, got {type(config).__name__}")
        self.fn = fn
        self.config = config
        self.name = name
        self.version = version
        self.metrics: MetricsSink = guarded(metrics)
        self._label = f"{name}@{version}" if version else (name or "batcher")
        self._max_batch = config.max_batch_size
        self._max_queue = config.max_queue
        self._ageing_s = config.ageing_ms / 1e3
        self._timeout_s = config.default_timeout_ms / 1e3
        self._due_after = config.due_after_s()
        # Read per request from plain attributes: a pydantic model's attribute costs ~40 ns
        # (its class defines __getattr__, so CPython cannot specialise the load), a plain
        # attribute ~10 ns (measured here, Python 3.11).
        self._low_wait_s = config.max_wait_ms[-1] / 1e3
        self._queues: tuple[deque[_Request], ...] = tuple(deque() for _ in Priority)
        self._deadlines: list[tuple[float, int, _Request]] = []  # min-heap
        self._seq = 0
        self._queued_rows = 0
        self._inflight = 0  # batches handed to the worker and not yet answered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._work: SimpleQueue[_Batch | None] = SimpleQueue()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_at = math.inf  # when the collector will wake on its own
        self._closed = False
        self._worker_done: asyncio.Future[None] | None = None
        # Statistics.
        self._batch_s_ewma = 0.0  # seconds per batch
        self._rate_ewma = 0.0  # rows per second while computing
        self._counts = {
            "requests": 0,
            "ok": 0,
            "timeout": 0,
            "overloaded": 0,
            "failed": 0,
            "cancelled": 0,
            "closed": 0,
            "batches": 0,
            "rows": 0,
            "oom_splits": 0,
            "bisections": 0,
        }
        self._max_batch_seen = 0
        self._oom_reported = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the collector task and the worker thread on the running event loop."""
        self.start_nowait()

    def start_nowait(self) -> None:
        """Start like :meth:`start`, from synchronous code running inside the event loop."""
        if self._closed:
            raise BatcherClosed(f"batcher {self._label} was stopped; create a new one")
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._worker_done = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._worker, name=f"celeris-batcher-{self._label}", daemon=True
        )
        self._thread.start()
        self._task = self._loop.create_task(self._collect(), name=f"batcher-{self._label}")

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting requests; finish (``drain``) or refuse the queued ones; stop the worker.

        With ``drain=True`` every queued request is still computed (or times out); with
        ``drain=False`` queued requests fail with :class:`BatcherClosed`. A batch already in
        the worker always finishes.
        """
        self._closed = True
        if self._task is None:
            return
        if not drain:
            for q in self._queues:
                while q:
                    req = q.popleft()
                    if req.state == _PENDING:
                        self._queued_rows -= req.n - req.taken
                        self._fail(req, BatcherClosed(f"batcher {self._label} stopped"), "closed")
        self._wake()
        await self._task
        self._work.put(None)
        assert self._worker_done is not None
        await self._worker_done
        if self._thread is not None:
            self._thread.join()
        self.metrics.set_queue(self.name, self.version, 0)

    @property
    def running(self) -> bool:
        """Return whether the batcher accepts requests."""
        return self._task is not None and not self._closed

    @property
    def queue_items(self) -> int:
        """Return the number of rows waiting (not yet handed to the worker)."""
        return self._queued_rows

    @property
    def idle(self) -> bool:
        """Return whether nothing is queued or computing."""
        return self._queued_rows == 0 and self._inflight == 0

    def stats(self) -> dict[str, Any]:
        """Return counters (requests by outcome, batches, rows), queue length and throughput."""
        c = self._counts
        return {
            "name": self.name,
            "version": self.version,
            "running": self.running,
            "queue_items": self._queued_rows,
            "inflight_batches": self._inflight,
            **c,
            "mean_batch_size": c["rows"] / c["batches"] if c["batches"] else 0.0,
            "max_batch_size_seen": self._max_batch_seen,
            "batch_seconds_ewma": self._batch_s_ewma,
            "rows_per_second_ewma": self._rate_ewma,
        }

    # ----------------------------------------------------------------- submit

    async def submit(
        self,
        items: np.ndarray,
        *,
        priority: Priority | str | int = Priority.NORMAL,
        deadline: float | None = None,
    ) -> np.ndarray:
        """Queue ``items`` ``[n, ...]`` and return their outputs ``[n, ...]`` in order.

        ``deadline`` is a :func:`time.monotonic` time; without one the request gets
        ``default_timeout_ms``. Raises :class:`Overloaded` at once when the queue is full,
        :class:`DeadlineExceeded` when the deadline passes before the rows are computed,
        :class:`RequestFailed` when ``fn`` fails on these rows, :class:`BatcherClosed` after
        :meth:`stop`.
        """
        if type(priority) is not Priority:
            priority = Priority.parse(priority)
        if self._closed or self._task is None:
            raise BatcherClosed(
                f"batcher {self._label} is {'stopped' if self._closed else 'not started'}"
            )
        n = len(items) if isinstance(items, np.ndarray) and items.ndim else 0
        if n == 0:
            raise DataError(
                f"items must be an array of at least one row [n, ...], got "
                f"{getattr(items, 'shape', type(items).__name__)}"
            )
        if n > self._max_queue:
            raise DataError(
                f"request of {n} rows exceeds the queue capacity of {self._max_queue} rows"
            )
        now = time.monotonic()
        if self._queued_rows + n > self._max_queue:
            retry = self.retry_after_s(n)
            self._counts["requests"] += 1
            self._counts["overloaded"] += 1
            self.metrics.error(self.name, "overloaded")
            self.metrics.observe_request(self.name, self.version, priority.label, 0.0, "overloaded")
            raise Overloaded(
                f"{self._label}: queue full ({self._queued_rows} of {self._max_queue} rows "
                f"waiting); retry in {retry:.3f} s",
                retry,
            )
        if deadline is None:
            deadline = now + self._timeout_s
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        req = _Request(items, priority, now, deadline, fut)
        self._queues[priority].append(req)
        self._queued_rows += n
        self._seq += 1
        heapq.heappush(self._deadlines, (deadline, self._seq, req))
        self._counts["requests"] += 1
        self.metrics.set_queue(self.name, self.version, self._queued_rows)
        # Wake the collector only when this request changes what it would do next.
        if (
            self._inflight == 0
            or self._queued_rows >= self._max_batch
            or now + self._due_after[priority] < self._wake_at
            or deadline < self._wake_at
        ):
            self._wake()
        try:
            return await fut
        except asyncio.CancelledError:
            if req.state == _PENDING:  # not computed yet: drop its remaining rows
                self._queued_rows -= req.n - req.taken
                req.state = _DONE
                req.items = None
                req.result = None
                req.batch = None
                req.future = None
                self._counts["cancelled"] += 1
                self.metrics.observe_request(
                    self.name, self.version, priority.label, time.monotonic() - now, "cancelled"
                )
            raise

    def retry_after_s(self, rows: int = 1) -> float:
        """Estimate when ``rows`` more rows would fit in the queue, from recent throughput."""
        excess = max(1, self._queued_rows + rows - self._max_queue)
        batch_s = self._batch_s_ewma or self._low_wait_s
        rate = self._rate_ewma or self._max_batch / batch_s
        return float(min(60.0, max(batch_s, excess / rate)))

    # ----------------------------------------------------------------- collector (event loop)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _collect(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            now = time.monotonic()
            try:
                self._expire(now)
                if self._queued_rows and self._inflight < 2:
                    ready = now if self._inflight == 0 else self._ready_at(now)
                    if ready <= now:
                        self._dispatch(now)
                        continue
                else:
                    ready = math.inf
            except Exception as exc:  # a bug (or a raising metrics sink): never hang callers
                log.exception(
                    "batcher %s: collector error; failing the queued requests", self._label
                )
                self._abandon_queue(exc)
                ready = math.inf
            if self._closed and self._queued_rows == 0 and self._inflight == 0:
                return
            heap = self._deadlines
            # Deadlines of requests already computing or answered need no wake-up.
            while heap and not self._expirable(heap[0][2]):
                heapq.heappop(heap)
            wake = min(ready, heap[0][0]) if heap else ready
            self._wake_at = wake
            waiter = loop.create_future()
            self._waiter = waiter
            handle = loop.call_later(wake - now, self._wake) if wake < math.inf else None
            await waiter
            self._waiter = None
            self._wake_at = math.inf
            if handle is not None:
                handle.cancel()

    def _ready_at(self, now: float) -> float:
        """Return when the next batch should be formed while the worker is busy."""
        if self._queued_rows >= self._max_batch:
            return now
        ready = math.inf
        for p, q in enumerate(self._queues):
            while q and q[0].state != _PENDING:
                q.popleft()
            if q:
                ready = min(ready, q[0].t0 + self._due_after[p])
        return ready

    @staticmethod
    def _expirable(req: _Request) -> bool:
        """Return whether the collector may still answer ``req`` with DeadlineExceeded.

        True while it is queued, or handed over whole in one batch the worker has not started
        (the worker skips requests past their deadline when it starts a batch, so answering
        early cannot race with computing).
        """
        if req.state == _PENDING:
            return True
        return (
            req.state == _DISPATCHED
            and req.batches == 1
            and req.batch is not None
            and not req.batch.started
        )

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            req = heapq.heappop(heap)[2]
            if self._expirable(req):
                if req.state == _PENDING:
                    self._queued_rows -= req.n - req.taken
                self._fail(
                    req,
                    DeadlineExceeded(
                        f"{self._label}: deadline passed after {(now - req.t0) * 1e3:.1f} ms "
                        f"in the queue; not computed"
                    ),
                    "timeout",
                )

    def _dispatch(self, now: float) -> None:
        """Take up to ``max_batch_size`` rows by (effective priority, arrival) to the worker."""
        cap = self._max_batch
        queues = self._queues
        ageing = self._ageing_s
        segments: list[_Segment] = []
        rows = 0
        while rows < cap:
            best: _Request | None = None
            best_key: tuple[int, float] = (_N_PRIORITIES, math.inf)
            best_p = 0
            for p in range(_N_PRIORITIES):
                q = queues[p]
                while q:
                    head = q[0]
                    if head.state != _PENDING:
                        q.popleft()
                    elif head.deadline <= now:
                        q.popleft()
                        self._queued_rows -= head.n - head.taken
                        self._fail(
                            head,
                            DeadlineExceeded(f"{self._label}: deadline passed in the queue"),
                            "timeout",
                        )
                    else:
                        break
                if not q:
                    continue
                head = q[0]
                lifted = int((now - head.t0) / ageing)
                key = (p - lifted if lifted < p else 0, head.t0)
                if key < best_key:
                    best, best_key, best_p = head, key, p
            if best is None:
                break
            start = best.taken
            take = min(best.n - start, cap - rows)
            items = best.items
            assert items is not None
            segments.append((best, start, start + take, items[start : start + take]))
            best.taken = start + take
            rows += take
            if best.taken == best.n:
                queues[best_p].popleft()
                best.state = _DISPATCHED
                best.items = None  # the segments hold the rows until the batch is done
        if not segments:
            return
        batch = _Batch(segments)
        for req, *_ in segments:
            req.batch = batch
            req.batches += 1
        self._queued_rows -= rows
        self._inflight += 1
        self.metrics.set_queue(self.name, self.version, self._queued_rows)
        self._work.put(batch)

    def _fail(self, req: _Request, exc: BaseException, outcome: str) -> None:
        req.state = _DONE
        req.items = None
        req.result = None
        req.batch = None
        fut, req.future = req.future, None
        if fut is not None and not fut.done():  # answer first: metrics must not hold it up
            fut.set_exception(exc)
        self._counts[outcome] += 1
        self.metrics.error(self.name, outcome)
        self.metrics.observe_request(
            self.name, self.version, _LABELS[req.priority], time.monotonic() - req.t0, outcome
        )

    def _abandon_queue(self, exc: BaseException) -> None:
        """Fail every queued request with ``exc`` (collector errors only)."""
        err = self._request_failed(exc)
        for q in self._queues:
            while q:
                req = q.popleft()
                if req.state == _PENDING:
                    self._answer_error(req, err)
        self._queued_rows = 0

    @staticmethod
    def _answer_error(req: _Request, err: BaseException) -> None:
        req.state = _DONE
        req.items = req.result = req.batch = None
        fut, req.future = req.future, None
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def _on_batch(self, batch: _Batch, outcomes: list[_Outcome], seconds: float) -> None:
        """Deliver a finished batch's outcomes to its requests (event loop thread)."""
        self._inflight -= 1
        try:
            self._deliver(batch, outcomes, seconds)
        except Exception as exc:  # a bug (or a raising metrics sink): never hang callers
            log.exception("batcher %s: error delivering a batch", self._label)
            err = self._request_failed(exc)
            for req, *_ in batch.segments:
                if req.state != _DONE:
                    self._answer_error(req, err)
        if self._queued_rows or self._closed:
            self._wake()

    def _deliver(self, batch: _Batch, outcomes: list[_Outcome], seconds: float) -> None:
        segments = batch.segments
        rows = sum(b - a for _, a, b, _ in segments)
        c = self._counts
        c["batches"] += 1
        c["rows"] += rows
        self._max_batch_seen = max(self._max_batch_seen, rows)
        if seconds > 0:
            # EWMA over roughly the last 10 batches: the throughput behind retry_after_s.
            self._batch_s_ewma = (
                seconds if not self._batch_s_ewma else 0.9 * self._batch_s_ewma + 0.1 * seconds
            )
            rate = rows / seconds
            self._rate_ewma = rate if not self._rate_ewma else 0.9 * self._rate_ewma + 0.1 * rate
        self.metrics.observe_batch(self.name, self.version, rows, seconds)
        splits = c["oom_splits"]  # counted by the worker
        for _ in range(splits - self._oom_reported):
            self.metrics.error(self.name, "oom_split")
        self._oom_reported = splits
        now = time.monotonic()
        for (req, a, b, _), out in zip(segments, outcomes, strict=True):
            if req.state == _DONE:  # failed by another segment, cancelled or closed
                continue
            if isinstance(out, DeadlineExceeded):
                self._fail(req, out, "timeout")
                continue
            if isinstance(out, BaseException):
                self._fail(req, self._request_failed(out), "failed")
                continue
            if a == 0 and b == req.n:
                value = out
            else:
                try:
                    if req.result is None:
                        req.result = np.empty((req.n, *out.shape[1:]), dtype=out.dtype)
                    req.result[a:b] = out
                except (ValueError, TypeError) as exc:
                    self._fail(req, self._request_failed(exc), "failed")
                    continue
                req.rows_done += b - a
                if req.rows_done < req.n:
                    continue
                value = req.result
            req.state = _DONE
            req.items = None
            req.result = None
            req.batch = None
            fut, req.future = req.future, None
            # The caller may have been cancelled after its rows went to the worker.
            outcome = "ok" if fut is not None and not fut.done() else "cancelled"
            if fut is not None and outcome == "ok":
                fut.set_result(value)
            c[outcome] += 1
            self.metrics.observe_request(
                self.name, self.version, _LABELS[req.priority], now - req.t0, outcome
            )

    def _request_failed(self, exc: BaseException) -> RequestFailed:
        if isinstance(exc, RequestFailed):
            return exc
        err = RequestFailed(f"{self._label}: {type(exc).__name__}: {exc}", exc)
        err.__cause__ = exc
        return err

    # ----------------------------------------------------------------- worker thread

    def _worker(self) -> None:
        loop = self._loop
        assert loop is not None
        work = self._work
        while True:
            batch = work.get()
            if batch is None:
                break
            batch.started = True
            t0 = time.perf_counter()
            now = time.monotonic()
            segments = batch.segments
            # A request whose deadline passed while its batch waited for the worker is not
            # computed (the collector may have answered it already).
            live = [s for s in segments if s[0].deadline > now]
            try:
                computed = self._compute(live) if live else []
            except BaseException as exc:  # never let the worker die with requests waiting
                log.exception("batcher %s: worker error", self._label)
                computed = [exc] * len(live)
            if len(live) == len(segments):
                outcomes = computed
            else:
                by_segment = dict(zip(map(id, live), computed, strict=True))
                late = DeadlineExceeded(
                    f"{self._label}: deadline passed before the batch started; not computed"
                )
                outcomes = [by_segment.get(id(s), late) for s in segments]
            seconds = time.perf_counter() - t0
            try:
                loop.call_soon_threadsafe(self._on_batch, batch, outcomes, seconds)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(self._set_worker_done)

    def _set_worker_done(self) -> None:
        if self._worker_done is not None and not self._worker_done.done():
            self._worker_done.set_result(None)

    def _compute(self, segments: list[_Segment]) -> list[_Outcome]:
        """Run ``fn`` on the segments' rows; isolate failures to the requests that cause them."""
        try:
            # [n_i, ...] per segment -> [sum n_i, ...]
            x = segments[0][3] if len(segments) == 1 else np.concatenate([s[3] for s in segments])
            y = self._call(x)
        except Exception as exc:
            if len(segments) == 1:
                return [exc]
            # Bisect by request: a bad request fails alone, its batch-mates are retried.
            self._counts["bisections"] += 1
            mid = len(segments) // 2
            return self._compute(segments[:mid]) + self._compute(segments[mid:])
        outcomes: list[_Outcome] = []
        offset = 0
        for _, a, b, _ in segments:
            outcomes.append(y[offset : offset + b - a])
            offset += b - a
        return outcomes

    def _call(self, x: np.ndarray) -> np.ndarray:
        """Return ``fn(x)`` checked for length; halve the rows on out-of-memory and retry."""
        try:
            y = self.fn(x)
        except Exception as exc:
            if not _is_oom(exc) or len(x) <= 1:
                raise
            self._counts["oom_splits"] += 1
            log.warning(
                "batcher %s: out of memory on %d rows; splitting in halves", self._label, len(x)
            )
            half = len(x) // 2
            return np.concatenate([self._call(x[:half]), self._call(x[half:])])
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            got = "a scalar" if y.ndim == 0 else f"{len(y)} output rows"
            raise _OutputMismatch(f"fn returned {got} for {len(x)} input rows")
        return y

"""DynamicBatcher: coalescing, priorities, ageing, deadlines, back-pressure, failure isolation."""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from celeris import ConfigError, DataError
from celeris.errors import CelerisTypeError
from celeris.serving.batcher import (
    BatcherClosed,
    BatcherConfig,
    DeadlineExceeded,
    DynamicBatcher,
    Overloaded,
    Priority,
    RequestFailed,
)

BAD = -1.0  # a row holding this value makes the fake model raise
# Windows far longer than any test: requests behind a held worker stay queued (no batch is
# formed ahead of time), however slow the machine.
LONG_WINDOWS = BatcherConfig(max_wait_ms=(1000.0, 1000.0, 1000.0, 1000.0))


class FakeModel:
    """A model function ``x -> 2 x`` that logs every batch and can hold the worker.

    While ``hold`` is set, a call blocks until :meth:`release` (so tests can pile requests up
    behind a busy worker). ``delay_s`` adds a sleep per call; ``bad_above`` raises
    ``MemoryError`` for batches larger than that; a row containing ``BAD`` raises ValueError.
    """

    def __init__(self, *, delay_s: float = 0.0, bad_above: int | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.delay_s = delay_s
        self.bad_above = bad_above
        self.oom: type[BaseException] = MemoryError
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self._gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.copy())
        self.entered.set()
        self._gate.wait(timeout=10)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.bad_above is not None and len(x) > self.bad_above:
            raise self.oom(f"out of memory on {len(x)} rows")
        if (x == BAD).any():
            raise ValueError("bad row")
        return x * 2.0

    def rows_seen(self) -> np.ndarray:
        return np.concatenate(self.calls) if self.calls else np.empty((0,))


def run(coro_fn: Callable[[], Any]) -> Any:
    """Run an async test body on a fresh event loop."""
    return asyncio.run(coro_fn())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``cond`` on the event loop until true (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def wait_entered(model: FakeModel) -> None:
    """Wait (without blocking the loop) until the worker is inside the model."""
    await wait_until(model.entered.is_set)


def rows(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue": 8, "max_batch_size": 16}, "max_queue"),
        ({"max_wait_ms": (1.0, 2.0, 5.0)}, "one value per priority"),
        ({"max_wait_ms": (1.0, -2.0, 5.0, 20.0)}, "high"),
        ({"max_wait_ms": (1.0, 2.0, math.nan, 20.0)}, "normal"),
        ({"ageing_ms": 0.0}, "ageing_ms"),
        ({"default_timeout_ms": math.inf}, "default_timeout_ms"),
    ],
)
def test_config_bad_values_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BatcherConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 2.5}, "max_batch_size"),
        ({"max_batch_size": True}, "max_batch_size must be an int >= 1, got bool True"),
        ({"max_queue": "64"}, "max_queue"),
        ({"ageing_ms": False}, "ageing_ms"),
        ({"max_wait_ms": "fast"}, "4 numbers"),
        ({"max_wait_ms": (1.0, True, 5.0, 20.0)}, "high"),
    ],
)
def test_config_wrong_types_raise_celeris_type_error(kwargs, match):
    # One exception type per mistake: a wrong type is a CelerisTypeError (it was a ConfigError
    # for a float batch size and a string of waits, and a bool passed as the integer 1).
    with pytest.raises(CelerisTypeError, match=match):
        BatcherConfig(**kwargs)


def test_config_unknown_field_raises_config_error_with_hint():
    with pytest.raises(
        ConfigError,
        match=r"unknown batcher setting 'max_batch' \(did you mean 'max_batch_size'\?\)",
    ):
        BatcherConfig(max_batch=8)  # type: ignore[call-arg]


def test_config_numpy_integers_and_positional_fields_accepted():
    config = BatcherConfig(np.int64(8), (1, 2, 5, 20), np.int32(64))
    assert config.max_batch_size == 8 and type(config.max_batch_size) is int
    assert config.max_queue == 64 and config == BatcherConfig(max_batch_size=8, max_queue=64)
    assert hash(config) == hash(BatcherConfig(max_batch_size=8, max_queue=64))
    assert pickle.loads(pickle.dumps(config)) == config
    assert repr(config).startswith("BatcherConfig(max_batch_size=8, max_wait_ms=(1.0, 2.0")


def test_config_defaults_have_nonzero_waits_and_freeze():
    config = BatcherConfig(max_wait_ms=[1, 2, 5, 20])
    assert config.max_wait_ms == (1.0, 2.0, 5.0, 20.0)
    assert all(w > 0 for w in BatcherConfig().max_wait_ms)
    with pytest.raises(AttributeError):
        config.max_batch_size = 3  # type: ignore[misc]


def test_config_window_expiry_accounts_for_ageing():
    # LOW's own 20 ms window is cut short by ageing: after 10 ms it ranks as NORMAL, whose
    # 5 ms window has long passed, so it is due at 10 ms.
    due = BatcherConfig(max_wait_ms=(1.0, 2.0, 5.0, 20.0), ageing_ms=10.0).due_after_s()
    assert due == pytest.approx((0.001, 0.002, 0.005, 0.010))
    slow_ageing = BatcherConfig(ageing_ms=1e6).due_after_s()
    assert slow_ageing == pytest.approx((0.001, 0.002, 0.005, 0.020))


def test_priority_parse_accepts_names_numbers_and_hints():
    assert Priority.parse("critical") is Priority.CRITICAL
    assert Priority.parse(" LOW ") is Priority.LOW
    assert Priority.parse(1) is Priority.HIGH
    assert Priority.parse("2") is Priority.NORMAL
    assert Priority.parse(np.int64(3)) is Priority.LOW  # numpy ints count as ints
    assert Priority.HIGH.label == "high"
    with pytest.raises(ConfigError, match="did you mean 'critical'"):
        Priority.parse("critcal")
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        Priority.parse(7)


@pytest.mark.parametrize("value", [1.0, True, None])
def test_priority_parse_wrong_type_raises_celeris_type_error(value):
    # One exception type per mistake: a priority of the wrong type was a ConfigError.
    with pytest.raises(CelerisTypeError, match=r"^priority must be a name or an int 0\.\.3, got "):
        Priority.parse(value)


@pytest.mark.parametrize(
    ("waits", "error", "message"),
    [
        ((1.0, "2", 5.0, 20.0), CelerisTypeError, r"max_wait_ms for high must be a real number"),
        ((1.0, 2.0, 5.0, -1), ConfigError, r"^max_wait_ms for low must be >= 0, got -1$"),
        ((math.inf, 2.0, 5.0, 20.0), ConfigError, r"^max_wait_ms for critical must be finite"),
    ],
)
def test_config_bad_wait_names_the_priority(waits, error, message):
    with pytest.raises(error, match=message):
        BatcherConfig(max_wait_ms=waits)


def test_batcher_rejects_bad_construction_and_requests():
    with pytest.raises(ConfigError, match="callable"):
        DynamicBatcher(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="BatcherConfig"):
        DynamicBatcher(FakeModel(), {"max_batch_size": 4})  # type: ignore[arg-type]

    async def body() -> None:
        b = DynamicBatcher(FakeModel(), BatcherConfig(max_batch_size=4, max_queue=8))
        with pytest.raises(BatcherClosed, match="not started"):
            await b.submit(rows([1.0]))
        await b.start()
        with pytest.raises(DataError, match="at least one row"):
            await b.submit(np.empty((0, 1), np.float32))
        with pytest.raises(DataError, match="queue capacity"):
            await b.submit(np.ones((9, 1), np.float32))
        await b.stop()

    run(body)


# ---------------------------------------------------------------------------- batching


def test_batcher_concurrent_requests_coalesce_into_full_batches(recording_metrics):
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(
            model,
            BatcherConfig(max_batch_size=16),
            name="m",
            version="1",
            metrics=recording_metrics,
        )
        await b.start()
        model.hold()
        first = asyncio.ensure_future(b.submit(rows([1000.0])))
        await wait_entered(model)  # the worker is busy with the first request
        values = [float(i) for i in range(40)]
        pending = [asyncio.ensure_future(b.submit(rows([v]))) for v in values]
        await wait_until(lambda: b.queue_items == 40 - 16)  # one full batch formed ahead
        model.release()
        results = await asyncio.gather(*pending)
        assert (await first)[0, 0] == 2000.0
        for v, out in zip(values, results, strict=True):
            assert out.shape == (1, 1) and out[0, 0] == 2 * v
        await b.stop()

    run(body)
    # The lone request went at once; the 40 that piled up behind it went as 16 + 16 + 8.
    assert recording_metrics.batch_sizes() == [1, 16, 16, 8]
    assert recording_metrics.outcomes() == {"ok": 41}
    assert all(m == "m" and v == "1" for m, v, *_ in recording_metrics.batches)


def test_batcher_idle_request_does_not_wait_out_its_window():
    model = FakeModel()
    # A 500 ms window for every priority: an idle batcher must still answer at once.
    config = BatcherConfig(max_wait_ms=(500.0, 500.0, 500.0, 500.0))

    async def body() -> list[float]:
        b = DynamicBatcher(model, config)
        await b.start()
        latencies = []
        for i in range(20):
            t0 = time.perf_counter()
            await b.submit(rows([float(i)]), priority=Priority.LOW)
            latencies.append(time.perf_counter() - t0)
        await b.stop()
        return latencies

    latencies = run(body)
    assert float(np.median(latencies)) < 0.02  # typically ~0.05 ms; far below 500 ms


def test_batcher_request_larger_than_a_batch_is_split_and_reassembled(recording_metrics):
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(model, BatcherConfig(max_batch_size=16), metrics=recording_metrics)
        await b.start()
        big = np.arange(50, dtype=np.float32).reshape(50, 1)
        small = rows([0.5, 1.5])
        out_big, out_small = await asyncio.gather(b.submit(big), b.submit(small))
        np.testing.assert_array_equal(out_big, big * 2)
        np.testing.assert_array_equal(out_small, small * 2)
        await b.stop()

    run(body)
    sizes = recording_metrics.batch_sizes()
    assert sum(sizes) == 52 and max(sizes) == 16


# ---------------------------------------------------------------------------- priorities


def test_batcher_priority_critical_served_before_low_while_worker_busy():
    model = FakeModel()
    # One row per batch and no ageing within the test, so the order is the priority order.
    config = BatcherConfig(max_batch_size=1, max_queue=16, ageing_ms=1e6)

    async def body() -> None:
        b = DynamicBatcher(model, config)
        await b.start()
        model.hold()
        busy = [asyncio.ensure_future(b.submit(rows([100.0])))]
        await wait_entered(model)
        busy.append(asyncio.ensure_future(b.submit(rows([101.0]))))  # formed ahead, in the worker
        await wait_until(lambda: b.queue_items == 0)
        order = [(Priority.LOW, 3.0), (Priority.NORMAL, 2.0), (Priority.HIGH, 1.0)]
        order.append((Priority.CRITICAL, 0.0))
        waiting = []
        for prio, v in order:  # queued LOW first, CRITICAL last
            waiting.append(asyncio.ensure_future(b.submit(rows([v]), priority=prio)))
            await asyncio.sleep(0.002)
        model.release()
        await asyncio.gather(*busy, *waiting)
        await b.stop()

    run(body)
    assert model.rows_seen()[:, 0].tolist() == [100.0, 101.0, 0.0, 1.0, 2.0, 3.0]


def test_batcher_ageing_serves_low_despite_a_stream_of_high():
    def served_before_low(ageing_ms: float) -> tuple[int, bool]:
        model = FakeModel(delay_s=0.002)
        config = BatcherConfig(max_batch_size=1, max_queue=64, ageing_ms=ageing_ms)

        async def body() -> tuple[int, bool]:
            b = DynamicBatcher(model, config)
            await b.start()
            stop = asyncio.Event()

            async def flood() -> None:  # keeps ~6 HIGH requests queued at all times
                while not stop.is_set():
                    await b.submit(rows([1.0]), priority=Priority.HIGH)

            flooders = [asyncio.ensure_future(flood()) for _ in range(6)]
            await asyncio.sleep(0.02)
            low = asyncio.ensure_future(b.submit(rows([7.0]), priority=Priority.LOW))
            done, _ = await asyncio.wait({low}, timeout=0.4)  # ~200 HIGH batches' worth
            stop.set()
            await asyncio.gather(*flooders)
            await low
            await b.stop()
            seen = model.rows_seen()[:, 0].tolist()
            return seen.index(7.0) - seen.index(1.0), bool(done)

        return run(body)

    before, in_time = served_before_low(ageing_ms=5.0)
    assert in_time
    # LOW ranks with HIGH after 2 x 5 ms and wins on age: only the few HIGH batches of
    # ~15 ms (2 ms each, plus loop overhead) go first.
    assert before < 40
    # Control: without ageing LOW waits for the flood to stop (the test can fail).
    _, in_time_without_ageing = served_before_low(ageing_ms=1e6)
    assert not in_time_without_ageing


# ---------------------------------------------------------------------------- deadlines


def test_batcher_expired_request_is_answered_with_timeout_and_never_computed(recording_metrics):
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(model, BatcherConfig(), metrics=recording_metrics)
        await b.start()
        model.hold()
        busy = asyncio.ensure_future(b.submit(rows([1.0])))
        await wait_entered(model)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="not computed"):
            # The worker stays held: the collector must answer the deadline by itself.
            await b.submit(rows([555.0]), deadline=time.monotonic() + 0.03)
        waited = time.monotonic() - t0
        assert 0.025 <= waited < 0.5
        with pytest.raises(DeadlineExceeded):
            await b.submit(rows([666.0]), deadline=time.monotonic() - 0.001)
        model.release()
        await busy
        assert (await b.submit(rows([2.0])))[0, 0] == 4.0
        assert b.stats()["timeout"] == 2
        await b.stop()

    run(body)
    seen = model.rows_seen()[:, 0]
    assert 555.0 not in seen and 666.0 not in seen
    assert recording_metrics.outcomes() == {"ok": 2, "timeout": 2}
    assert recording_metrics.errors.count(("", "timeout")) == 2


def test_batcher_default_timeout_applies_without_deadline():
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(model, BatcherConfig(default_timeout_ms=30.0))
        await b.start()
        model.hold()
        busy = asyncio.ensure_future(b.submit(rows([1.0])))  # computed: in the worker already
        await wait_entered(model)
        with pytest.raises(DeadlineExceeded):
            await b.submit(rows([2.0]))
        model.release()
        assert (await busy)[0, 0] == 2.0
        await b.stop()

    run(body)


# ---------------------------------------------------------------------------- back-pressure


def test_batcher_burst_of_five_times_capacity_sheds_excess_with_retry_after():
    model = FakeModel(delay_s=0.002)
    config = BatcherConfig(max_batch_size=16, max_queue=64)

    async def body() -> tuple[list[Any], dict[str, Any]]:
        b = DynamicBatcher(model, config)
        await b.start()
        for _ in range(5):  # a little throughput history for retry_after_s
            await b.submit(np.ones((16, 1), np.float32))
        burst = [b.submit(rows([float(i)])) for i in range(5 * 64)]
        results = await asyncio.gather(*burst, return_exceptions=True)
        after = await b.submit(rows([3.0]))  # still serving after the burst
        assert after[0, 0] == 6.0
        stats = b.stats()
        await b.stop()
        return results, stats

    results, stats = run(body)
    overloaded = [r for r in results if isinstance(r, Overloaded)]
    ok = [(i, r) for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    assert len(ok) + len(overloaded) == 320  # nothing else went wrong
    # All 320 arrive in one step of the loop: exactly the queue's 64 rows are admitted.
    assert len(ok) == 64 and len(overloaded) == 256
    assert all(r[0, 0] == 2.0 * i for i, r in ok)
    retry = [e.retry_after_s for e in overloaded]
    assert all(0 < r < 60 for r in retry)
    # Four batches of 16 must drain before there is room: retry-after ~ that drain time.
    assert min(retry) >= 0.001
    assert stats["overloaded"] == 256 and stats["ok"] == 64 + 5 + 1


# ---------------------------------------------------------------------------- isolation


def test_batcher_bad_request_fails_alone_and_batch_mates_succeed(recording_metrics):
    model = FakeModel()

    async def body() -> list[Any]:
        b = DynamicBatcher(model, BatcherConfig(), metrics=recording_metrics)
        await b.start()
        model.hold()
        busy = asyncio.ensure_future(b.submit(rows([0.0])))
        await wait_entered(model)
        values = [[1.0, 2.0], [3.0], [4.0, BAD, 5.0], [6.0], [7.0, 8.0], [9.0]]
        pending = [b.submit(rows(v)) for v in values]
        gathered = asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0.01)
        model.release()
        results = await gathered
        await busy
        await b.stop()
        return results

    results = run(body)
    failed = results[2]
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.cause, ValueError) and "bad row" in str(failed)
    for v, out in zip([[1.0, 2.0], [3.0], None, [6.0], [7.0, 8.0], [9.0]], results, strict=True):
        if v is not None:
            np.testing.assert_array_equal(out, rows(v) * 2)
    # The first attempt held every request together; bisection retried around the bad one.
    assert len(model.calls[1]) == 10
    assert recording_metrics.outcomes() == {"ok": 6, "failed": 1}


@pytest.mark.parametrize("oom", ["MemoryError", "torch.cuda.OutOfMemoryError"])
def test_batcher_out_of_memory_splits_batch_and_all_succeed(oom, recording_metrics):
    model = FakeModel(bad_above=4)
    if oom != "MemoryError":
        import torch

        model.oom = torch.cuda.OutOfMemoryError

    async def body() -> dict[str, Any]:
        b = DynamicBatcher(model, BatcherConfig(max_batch_size=32), metrics=recording_metrics)
        await b.start()
        big = np.arange(20, dtype=np.float32).reshape(20, 1)
        outs = await asyncio.gather(b.submit(big), b.submit(rows([100.0])))
        np.testing.assert_array_equal(outs[0], big * 2)
        assert outs[1][0, 0] == 200.0
        stats = b.stats()
        await b.stop()
        return stats

    stats = run(body)
    assert stats["oom_splits"] > 0 and stats["failed"] == 0
    assert ("", "oom_split") in recording_metrics.errors
    assert max(len(c) for c in model.calls if len(c) <= 4) <= 4


def test_batcher_single_row_out_of_memory_fails_only_that_request():
    model = FakeModel(bad_above=0)  # even one row is too much

    async def body() -> None:
        b = DynamicBatcher(model, BatcherConfig())
        await b.start()
        with pytest.raises(RequestFailed, match="out of memory") as info:
            await b.submit(rows([1.0, 2.0]))
        assert isinstance(info.value.cause, MemoryError)
        await b.stop()

    run(body)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda x: x[:-1], r"returned 1 output rows for 2 input rows"),
        (lambda x: np.float32(1.0), "returned a scalar"),
    ],
)
def test_batcher_output_length_mismatch_fails_the_requests(fn, match):
    async def body() -> None:
        b = DynamicBatcher(fn, BatcherConfig())
        await b.start()
        with pytest.raises(RequestFailed, match=match):
            await b.submit(rows([1.0, 2.0]))
        await b.stop()

    run(body)


# ---------------------------------------------------------------------------- lifecycle


def test_batcher_cancelled_request_is_dropped_from_the_queue():
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(model, LONG_WINDOWS)
        await b.start()
        model.hold()
        busy = asyncio.ensure_future(b.submit(rows([1.0])))
        await wait_entered(model)
        doomed = asyncio.ensure_future(b.submit(rows([777.0, 778.0])))
        await wait_until(lambda: b.queue_items == 2)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        assert b.queue_items == 0
        model.release()
        await busy
        assert b.stats()["cancelled"] == 1
        await b.stop()

    run(body)
    assert 777.0 not in model.rows_seen()[:, 0]


def test_batcher_stop_drains_queue_then_refuses_new_requests():
    model = FakeModel(delay_s=0.002)

    async def body() -> None:
        b = DynamicBatcher(model, BatcherConfig(max_batch_size=4))
        await b.start()
        pending = asyncio.gather(*[b.submit(rows([float(i)])) for i in range(12)])
        await asyncio.sleep(0)
        await b.stop(drain=True)
        outs = await pending
        assert [o[0, 0] for o in outs] == [2.0 * i for i in range(12)]
        assert not b.running and b.idle
        with pytest.raises(BatcherClosed, match="stopped"):
            await b.submit(rows([1.0]))
        with pytest.raises(BatcherClosed):
            await b.start()

    run(body)


def test_batcher_stop_without_drain_fails_queued_requests():
    model = FakeModel()

    async def body() -> None:
        b = DynamicBatcher(model, LONG_WINDOWS)
        await b.start()
        model.hold()
        busy = asyncio.ensure_future(b.submit(rows([1.0])))
        await wait_entered(model)
        queued = asyncio.ensure_future(b.submit(rows([2.0])))
        await wait_until(lambda: b.queue_items == 1)
        stopping = asyncio.ensure_future(b.stop(drain=False))
        with pytest.raises(BatcherClosed):
            await queued
        model.release()
        await stopping
        assert (await busy)[0, 0] == 2.0  # the batch in the worker still finished

    run(body)
    assert 2.0 not in model.rows_seen()[:, 0]


def test_batcher_raising_metrics_sink_never_fails_requests(caplog):
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any) -> None:
                raise RuntimeError(f"{name} is broken")

            return fail

    model = FakeModel()

    async def body() -> list[np.ndarray]:
        b = DynamicBatcher(model, BatcherConfig(max_batch_size=4), metrics=Broken())  # type: ignore[arg-type]
        await b.start()
        outs = await asyncio.gather(*[b.submit(rows([float(i)])) for i in range(10)])
        await b.stop()
        return outs

    outs = run(body)
    assert [o[0, 0] for o in outs] == [2.0 * i for i in range(10)]
    logged = [r.getMessage() for r in caplog.records if "metrics sink" in r.getMessage()]
    assert len(logged) == len(set(logged)) >= 3  # once per method, not once per call

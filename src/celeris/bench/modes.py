"""The four ways to run the load generator from synchronous code.

:func:`latency`  one connection, one request at a time (concurrency 1): the latency an idle
                 server gives a single client.
:func:`load`     a fixed number of connections in a closed loop (each sends again as soon as it
                 is answered), or, given ``rate``, an open loop at a fixed arrival rate whose
                 latencies are free of coordinated omission (:mod:`celeris.bench.loops`).
:func:`stress`   :func:`load` at growing concurrency until a step breaches the SLA; reports
                 the last step that passed.
:func:`compare`  the same load against two targets (two servers, or two models of one
                 server), side by side with ratios ``a / b``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from celeris.bench.config import DEFAULT_STEPS, MAX_CONCURRENCY, LoadConfig, int_in
from celeris.bench.results import CompareResult, RunResult, StressResult
from celeris.bench.runner import run_async, run_sync
from celeris.bench.sla import SLA, SLAVerdict
from celeris.bench.targets import Target
from celeris.errors import ConfigError


def latency(
    target: Target,
    *,
    max_requests: int = 1000,
    duration_s: float = 10.0,
    warmup_requests: int | None = 20,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
) -> RunResult:
    """Measure one request at a time on one connection (concurrency 1)."""
    config = LoadConfig(1, max_requests, duration_s, warmup_requests, timeout_s)
    return run_sync(lambda: run_async(target, config, server_pid=server_pid, mode="latency"))


def load(
    target: Target,
    *,
    concurrency: int = 32,
    max_requests: int = 100_000,
    duration_s: float = 10.0,
    warmup_requests: int | None = None,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
    rate: float | None = None,
) -> RunResult:
    """Measure ``concurrency`` connections in a closed loop, or an open loop at ``rate``.

    With ``rate`` (requests per second) request ``i`` is due at ``i / rate`` seconds, goes out
    on one of the ``concurrency`` connections that is free, and its latency is counted from
    when it was due; ``ceil(duration_s * rate)`` requests are due (at most ``max_requests``).
    The result's ``behind_schedule`` counts sends that went out late.
    """
    config = LoadConfig(
        concurrency, max_requests, duration_s, warmup_requests, timeout_s, rate=rate
    )
    return run_sync(lambda: run_async(target, config, server_pid=server_pid, mode="load"))


def stress(
    target: Target,
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    sla: SLA | None = None,
    max_requests: int = 100_000,
    duration_s: float = 5.0,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
    on_step: Callable[[RunResult, SLAVerdict], None] | None = None,
) -> StressResult:
    """Run :func:`load` at each concurrency of ``steps`` (increasing) until the SLA breaks.

    Each step is bounded by ``max_requests`` and ``duration_s``; the run stops after the first
    step that breaches ``sla`` (default :class:`SLA`). ``on_step`` sees each step as it ends.
    """
    sla = SLA() if sla is None else sla
    steps = tuple(steps)
    if not steps:
        raise ConfigError("give at least one concurrency step")
    for s in steps:
        int_in("stress step", s, 1, MAX_CONCURRENCY)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"stress steps must increase, got {list(steps)}")

    async def go() -> StressResult:
        out: list[tuple[RunResult, SLAVerdict]] = []
        for c in steps:
            config = LoadConfig(c, max_requests, duration_s, None, timeout_s)
            result = await run_async(target, config, server_pid=server_pid, mode="stress")
            verdict = sla.check(result)
            out.append((result, verdict))
            if on_step is not None:
                on_step(result, verdict)
            if not verdict.passed:
                break
        return StressResult(out, sla)

    return run_sync(go)


def compare(
    a: Target,
    b: Target,
    config: LoadConfig,
    *,
    server_pids: tuple[int | None, int | None] = (None, None),
) -> CompareResult:
    """Run the same ``config`` against ``a`` then ``b``; ratios are ``a / b``."""
    if a.label == b.label:
        a = a.model_copy(update={"label": f"A: {a.label}"})
        b = b.model_copy(update={"label": f"B: {b.label}"})

    async def go() -> CompareResult:
        ra = await run_async(a, config, server_pid=server_pids[0], mode="compare")
        rb = await run_async(b, config, server_pid=server_pids[1], mode="compare")
        return CompareResult(ra, rb)

    return run_sync(go)

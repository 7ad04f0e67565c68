"""One measured run against a target: warm-up, the measured requests, server CPU and cache.

What is measured
    Latency, for the requests answered with a 2xx status: closed loop, from writing a request
    to having read its whole response; open loop, from the time the request was due (see
    :mod:`celeris.bench.loops`). Throughput counts those successful answers per second of wall
    time (from the first measured request to the last answer). Anything else is an error,
    counted by HTTP status (``"429"``, ``"503"``...) or by transport failure (``"timeout"``,
    ``"connection"``, ``"protocol"``; open loop also ``"unsent"``). Given the server's process
    id, the server's CPU time over the run (the process and all its descendants) gives requests
    per server CPU-second; processes that exit during the run are not counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from celeris.bench.cache_stats import cache_delta, read_cache_counters
from celeris.bench.client import Client
from celeris.bench.config import LoadConfig
from celeris.bench.loopback import check_loopback
from celeris.bench.loops import Tally, closed_loop, open_loop
from celeris.bench.results import RunResult
from celeris.bench.server_cpu import ProcessTreeCPU
from celeris.bench.targets import Target
from celeris.errors import ConfigError

T = TypeVar("T")


async def run_async(
    target: Target,
    config: LoadConfig,
    *,
    server_pid: int | None = None,
    mode: str = "load",
) -> RunResult:
    """Run ``config`` against ``target`` in the running event loop; return what it measured.

    ``config.rate`` picks the loop: ``None`` closed, a rate open. See the module docstring
    for what is measured. Use :func:`~celeris.bench.modes.latency`, ``load``, ``stress`` or
    ``compare`` from synchronous code.
    """
    if not isinstance(target, Target):
        raise ConfigError(f"target must be a Target, got {type(target).__name__}")
    if not isinstance(config, LoadConfig):
        raise ConfigError(f"config must be a LoadConfig, got {type(config).__name__}")
    host, port, _ = check_loopback(target.url)
    left = target.unique_left
    if left is not None and left < config.warmup + config.max_requests:
        raise ConfigError(
            f"this target can make {left:,} more unique requests, fewer than the "
            f"{config.warmup + config.max_requests:,} asked (warm-up included); lower "
            "max_requests or cycle fixed bodies (distinct=N)"
        )
    next_request = target.request_source()
    cpu = ProcessTreeCPU(server_pid) if server_pid is not None else None
    clients = [Client(host, port, config.timeout_s) for _ in range(config.concurrency)]
    try:
        # Warm-up: open the connections and warm the server; nothing recorded.
        warm_left = config.warmup

        async def warm(client: Client) -> None:
            nonlocal warm_left
            while warm_left > 0:
                warm_left -= 1
                try:
                    await client.send(next_request())
                except Exception:
                    client.close()

        await asyncio.gather(*(warm(c) for c in clients))
        metrics_url = target.metrics_url
        cache_before = (
            await read_cache_counters(metrics_url, config.timeout_s)
            if metrics_url is not None
            else None
        )

        tally = Tally()
        perf = time.perf_counter
        cpu_before = cpu.snapshot() if cpu is not None else None
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t_start = perf()
        if config.rate is None:
            await closed_loop(
                clients, next_request, tally, max_requests=config.max_requests,
                t_stop=t_start + config.duration_s,
            )  # fmt: skip
        else:
            await open_loop(
                clients, next_request, tally, rate=config.rate,
                max_requests=config.max_requests, t_start=t_start, duration_s=config.duration_s,
            )  # fmt: skip
        wall = perf() - t_start
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = (
            ProcessTreeCPU.delta(cpu_before, cpu.snapshot())
            if cpu is not None and cpu_before is not None
            else None
        )
        cache = (
            cache_delta(cache_before, await read_cache_counters(metrics_url, config.timeout_s))
            if metrics_url is not None and cache_before is not None
            else None
        )
    finally:
        for c in clients:
            c.close()
        await asyncio.sleep(0)  # let the transports close
    client_cpu = (
        usage_after.ru_utime + usage_after.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    )
    return RunResult(
        label=target.label,
        url=target.url,
        mode=mode,
        concurrency=config.concurrency,
        sent=tally.issued,
        ok=tally.ok,
        errors=tally.errors,
        wall_s=wall,
        latencies_s=np.asarray(tally.latencies, dtype=np.float64),
        server_cpu_s=server_cpu,
        client_cpu_s=float(client_cpu),
        warmup=config.warmup,
        started_at=started_at,
        cache=cache,
        rate=config.rate,
        behind_schedule=tally.behind_schedule if config.rate is not None else None,
        max_send_lag_s=tally.max_send_lag_s if config.rate is not None else None,
    )


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError("called from a running event loop; await celeris.bench.run_async instead")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(make())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())

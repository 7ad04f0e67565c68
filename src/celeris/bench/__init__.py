"""Load generation for loopback servers (closed and open loop), SLA checks and reports.

Tools, not runtime: nothing in the serving path imports this package; the ``celeris bench``
commands and the benchmarks do.

Every run is bounded twice: at most ``max_requests`` measured requests and at most
``duration_s`` seconds of sending (a request in flight at the time cap is still awaited, for at
most ``timeout_s``). Only loopback targets are accepted (``127.0.0.0/8``, ``::1``,
``localhost`` resolving to loopback): the tool cannot be pointed at somebody else's server.

Modules, one idea each:

- :mod:`~celeris.bench.loopback`: the loopback check of every URL.
- :mod:`~celeris.bench.targets`, :mod:`~celeris.bench.bodies`: what to send, and request
  bodies for a Celeris model that never repeat (so the server's cache does not answer).
- :mod:`~celeris.bench.client`: the HTTP/1.1 client (hand-written: httpx would measure itself).
- :mod:`~celeris.bench.loops`: closed loop, and open loop at a fixed arrival rate (latency
  from each request's due time, free of coordinated omission).
- :mod:`~celeris.bench.runner`: one measured run (warm-up, server CPU, cache counters).
- :mod:`~celeris.bench.modes`: :func:`latency`, :func:`load`, :func:`stress`, :func:`compare`.
- :mod:`~celeris.bench.sla`, :mod:`~celeris.bench.results`, :mod:`~celeris.bench.reports`,
  :mod:`~celeris.bench.plots`: targets, results, tables and JSON, latency plots.
- :mod:`~celeris.bench.server_cpu`, :mod:`~celeris.bench.cache_stats`: the server's CPU time
  and response-cache counters over a run.
"""

from __future__ import annotations

from celeris.bench.bodies import model_shape, predict_bodies, predict_target
from celeris.bench.cache_stats import CacheStats, parse_cache_counters
from celeris.bench.config import (
    DEFAULT_STEPS,
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_RATE,
    MAX_REQUESTS,
    LoadConfig,
    LoadgenError,
)
from celeris.bench.loopback import check_loopback
from celeris.bench.modes import compare, latency, load, stress
from celeris.bench.plots import plot_latency
from celeris.bench.reports import render_compare, render_stress, render_table, report_dict
from celeris.bench.results import CompareResult, RunResult, StressResult
from celeris.bench.runner import run_async
from celeris.bench.server_cpu import ProcessTreeCPU
from celeris.bench.sla import SLA, SLACheck, SLAVerdict
from celeris.bench.targets import Stamps, Target

__all__ = [
    "DEFAULT_STEPS",
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_REQUESTS",
    "SLA",
    "CacheStats",
    "CompareResult",
    "LoadConfig",
    "LoadgenError",
    "ProcessTreeCPU",
    "RunResult",
    "SLACheck",
    "SLAVerdict",
    "Stamps",
    "StressResult",
    "Target",
    "check_loopback",
    "compare",
    "latency",
    "load",
    "model_shape",
    "parse_cache_counters",
    "plot_latency",
    "predict_bodies",
    "predict_target",
    "render_compare",
    "render_stress",
    "render_table",
    "report_dict",
    "run_async",
    "stress",
]

"""The latency, stress and compare modes against a real uvicorn server."""

from __future__ import annotations

import pytest

import celeris.bench as bench
from celeris.bench import SLA, LoadConfig, Target
from celeris.errors import ConfigError
from tests.bench.conftest import LoopbackServer


def test_latency_mode_one_connection_sequential(srv: LoopbackServer) -> None:
    r = bench.latency(Target(f"{srv.url}/slow?ms=5"), max_requests=20, warmup_requests=0)
    assert r.mode == "latency" and r.concurrency == 1 and r.ok == 20
    # sequential: the run lasts at least the sum of the server's sleeps
    assert r.wall_s >= 20 * 0.005
    assert r.wall_s >= r.latencies_s.sum() * 0.99


def test_stress_stops_at_first_breach_reports_last_passing(srv: LoopbackServer) -> None:
    # The serial route answers one request at a time in 25 ms: 2 connections wait ~50 ms.
    sla = SLA(p50_ms=40, p95_ms=None, p99_ms=None, min_throughput=None, max_error_rate=0.0)
    seen: list[int] = []
    result = bench.stress(
        Target(f"{srv.url}/serial?ms=25"),
        steps=(1, 2, 4),
        sla=sla,
        max_requests=12,
        duration_s=5,
        on_step=lambda r, v: seen.append(r.concurrency),
    )
    assert seen == [1, 2]  # stopped after the breach: the 4-connection step never ran
    assert result.last_passing is not None and result.last_passing.concurrency == 1
    assert result.breached_at is not None and result.breached_at.concurrency == 2
    doc = result.to_dict()
    assert doc["last_passing_concurrency"] == 1 and doc["breached_at_concurrency"] == 2
    assert doc["steps"][1]["sla"]["passed"] is False


def test_stress_steps_validated() -> None:
    for steps in ((), (4, 2), (1, 1), (0, 1)):
        with pytest.raises(ConfigError):
            bench.stress(Target("http://127.0.0.1:1/"), steps=steps)


def test_compare_real_targets_fast_over_slow(srv: LoopbackServer) -> None:
    fast, slow = Target(f"{srv.url}/ok"), Target(f"{srv.url}/slow?ms=10")
    result = bench.compare(fast, slow, LoadConfig(concurrency=2, max_requests=40))
    assert result.a.ok == result.b.ok == 40
    assert result.a.label.endswith("/ok") and result.b.label.endswith("ms=10")
    assert result.ratios["p50"] is not None and result.ratios["p50"] < 0.5
    assert result.ratios["throughput"] is not None and result.ratios["throughput"] > 2
    same = bench.compare(fast, fast, LoadConfig(max_requests=5))
    assert same.a.label.startswith("A: ") and same.b.label.startswith("B: ")

"""The closed and open loops against a real uvicorn server: counts, caps, coordinated omission."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import celeris.bench as bench
from celeris.bench import SLA, Target
from celeris.bench.loops import SCHEDULE_SLACK_S
from tests.bench.conftest import LoopbackServer


def test_load_every_request_counted_and_received(srv: LoopbackServer) -> None:
    target = Target(f"{srv.url}/ok", bodies=(b'{"a": 1}', b'{"a": 2}'))
    r = bench.load(target, concurrency=4, max_requests=200, duration_s=30)
    assert (r.sent, r.ok, r.failed, r.errors) == (200, 200, 0, {})
    assert r.latencies_s.shape == (200,) and (r.latencies_s > 0).all()
    assert r.warmup == 4 and srv.counts["ok"] == 200 + 4
    assert r.throughput == pytest.approx(200 / r.wall_s)
    assert r.error_rate == 0.0 and r.server_cpu_s is None and r.requests_per_cpu_s is None


def test_load_request_cap_stops_exactly_at_cap(srv: LoopbackServer) -> None:
    r = bench.load(Target(f"{srv.url}/ok"), concurrency=5, max_requests=37, duration_s=60)
    assert r.sent == r.ok == 37
    assert srv.counts["ok"] == 37 + 5  # nothing beyond the cap
    assert r.wall_s < 10


def test_load_time_cap_stops_sending(srv: LoopbackServer) -> None:
    target = Target(f"{srv.url}/slow?ms=20")
    t0 = time.perf_counter()
    r = bench.load(target, concurrency=2, max_requests=100_000, duration_s=0.3, warmup_requests=0)
    elapsed = time.perf_counter() - t0
    assert 0 < r.sent < 100 and r.ok == r.sent
    assert 0.3 <= r.wall_s < 0.3 + 1.0 and elapsed < 3.0
    assert srv.counts["slow"] == r.sent


def test_load_errors_counted_by_status_and_excluded_from_latency(srv: LoopbackServer) -> None:
    r = bench.load(Target(f"{srv.url}/flaky"), concurrency=1, max_requests=40, warmup_requests=0)
    assert r.sent == 40 and r.errors == {"503": 10} and r.ok == 30
    assert r.error_rate == pytest.approx(0.25) and r.latencies_s.size == 30


def test_load_refused_connections_counted_bounded() -> None:
    from tests.serving.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/nothing"
    r = bench.load(Target(url), concurrency=2, max_requests=50, duration_s=5, warmup_requests=0)
    assert r.ok == 0 and r.sent == 50 and r.errors == {"connection": 50}
    assert math.isnan(r.percentiles_ms()["p50"])
    assert not SLA().check(r).passed


# -- open loop: a fixed arrival schedule -------------------------------------------------------


def test_open_loop_fixed_rate_sends_exactly_the_schedule(srv: LoopbackServer) -> None:
    # 200 req/s for 0.5 s: requests due at 0, 5, ..., 495 ms -> exactly 100, whatever the cap
    r = bench.load(
        Target(f"{srv.url}/ok"), concurrency=4, rate=200, duration_s=0.5, max_requests=10_000
    )
    assert (r.sent, r.ok, r.errors) == (100, 100, {})
    assert srv.counts["ok"] == 100 + 4  # + one warm-up request per connection
    # the last request was due 495 ms after the first (millisecond timers may wake it early)
    assert r.wall_s >= 0.495 - SCHEDULE_SLACK_S
    assert r.rate == 200 and r.behind_schedule is not None and r.max_send_lag_s is not None
    doc = r.to_dict()["open_loop"]
    assert doc["rate_rps"] == 200 and doc["behind_schedule"] == r.behind_schedule
    capped = bench.load(Target(f"{srv.url}/ok"), rate=200, duration_s=0.5, max_requests=7)
    assert capped.sent == capped.ok == 7


def test_open_loop_server_stall_inflates_latency_closed_loop_hides_it(srv: LoopbackServer) -> None:
    """Coordinated omission, by hand.

    The server blocks its event loop for 200 ms at its 21st request (starting at time ``s``).
    Closed loop (one connection): the client waits with it, so the stall is one slow sample.
    Open loop (100 req/s, 4 connections): requests keep falling due every 10 ms during the
    stall and none can be answered before ``s + 200 ms``, so each request due in
    ``[s, s + 109 ms]`` - 10 or 11 of them - waits at least 90 ms (one written on time is timed
    from its writing, at most 1 ms after it was due), plus the stalled one itself (>= 200 ms):
    at least 10 even if the first of them went out early enough to be served before. Three free
    connections take the next three requests; the later ones due in the stall find every
    connection busy and go out late (about 16; at least 10).
    """
    url = f"{srv.url}/stall_once?at=21&ms=200"
    closed = bench.load(Target(url), concurrency=1, max_requests=100, warmup_requests=0)
    srv.counts.clear()
    opened = bench.load(
        Target(url), concurrency=4, rate=100, max_requests=100, duration_s=5, warmup_requests=0
    )
    assert closed.ok == opened.ok == 100 and closed.errors == opened.errors == {}
    closed_ms, open_ms = closed.latencies_s * 1e3, opened.latencies_s * 1e3
    seen = f"closed {np.sort(closed_ms)[-5:]}, open {np.sort(open_ms)[-15:]}, {opened}"
    assert (closed_ms >= 200).sum() == 1, seen  # the stalled request, and it alone
    assert (closed_ms >= 90).sum() <= 3, seen  # (room for two hiccups of a loaded machine)
    assert (open_ms >= 200).sum() >= 1 and (open_ms >= 90).sum() >= 10, seen
    assert np.percentile(open_ms, 95) >= 90 > np.percentile(closed_ms, 95), seen
    assert opened.behind_schedule is not None and opened.behind_schedule >= 10, seen
    assert opened.max_send_lag_s is not None and opened.max_send_lag_s >= 0.1, seen
    assert closed.rate is None and closed.behind_schedule is None


def test_open_loop_requests_never_sent_counted_as_unsent_errors(srv: LoopbackServer) -> None:
    # 20 requests due over 0.2 s, one connection, each answer takes 400 ms: the first holds
    # the connection past the end of sending, so the other 19 were due but never sent
    r = bench.load(
        Target(f"{srv.url}/slow?ms=400"), concurrency=1, rate=100, duration_s=0.2,
        warmup_requests=0,
    )  # fmt: skip
    assert (r.sent, r.ok, r.errors) == (1, 1, {"unsent": 19})
    assert r.error_rate == pytest.approx(19 / 20) and r.latencies_s[0] >= 0.4
    assert srv.counts["slow"] == 1
    assert not SLA(p50_ms=None, p95_ms=None, p99_ms=None, min_throughput=None).check(r).passed

"""The load generator against a real uvicorn server on loopback, and its SLA and report logic.

The server (``_app``) counts the requests it receives per route, so the tests can check that
the generator sent exactly what it reports (measured + warm-up) and nothing after its caps.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import uvicorn

from celeris.errors import ConfigError
from celeris.serving import loadgen as lg
from celeris.serving.loadgen import SLA, CompareResult, LoadConfig, RunResult, Target

# -- the server ------------------------------------------------------------------------------


def _app(counts: Counter[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    serial_lock: list[asyncio.Lock] = []
    flaky_n = [0]

    async def ok(request: Request) -> Response:
        counts["ok"] += 1
        await request.body()
        return Response(b'{"ok": true}', media_type="application/json")

    async def slow(request: Request) -> Response:
        counts["slow"] += 1
        await asyncio.sleep(float(request.query_params.get("ms", "20")) / 1e3)
        return Response(b"{}", media_type="application/json")

    async def serial(request: Request) -> Response:
        # One request at a time: latency grows with concurrency (for stress tests).
        counts["serial"] += 1
        if not serial_lock:
            serial_lock.append(asyncio.Lock())
        async with serial_lock[0]:
            await asyncio.sleep(float(request.query_params.get("ms", "25")) / 1e3)
        return Response(b"{}", media_type="application/json")

    async def flaky(request: Request) -> Response:
        counts["flaky"] += 1
        flaky_n[0] += 1
        status = 503 if flaky_n[0] % 4 == 0 else 200
        return Response(b"{}", status_code=status, media_type="application/json")

    async def chunked(request: Request) -> StreamingResponse:
        counts["chunked"] += 1

        async def parts() -> Any:
            for part in (b'{"a": ', b"[1, 2, 3]", b"}"):
                yield part

        return StreamingResponse(parts(), media_type="application/json")

    async def close(request: Request) -> Response:
        counts["close"] += 1
        return Response(b"{}", media_type="application/json", headers={"Connection": "close"})

    return Starlette(
        routes=[
            Route("/ok", ok, methods=["GET", "POST"]),
            Route("/slow", slow, methods=["GET", "POST"]),
            Route("/serial", serial, methods=["GET"]),
            Route("/flaky", flaky, methods=["GET"]),
            Route("/chunked", chunked, methods=["GET"]),
            Route("/close", close, methods=["GET"]),
        ]
    )


class _Server:
    def __init__(self) -> None:
        from celeris.serving.app import bind

        self.counts: Counter[str] = Counter()
        config = uvicorn.Config(
            _app(self.counts), loop="uvloop", http="httptools", log_level="warning",
            access_log=False, lifespan="off",
        )  # fmt: skip
        self.uvicorn = uvicorn.Server(config)
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(
            target=self.uvicorn.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def srv(server: _Server) -> _Server:
    """The module's server with its request counts reset."""
    server.counts.clear()
    return server


def _result(
    latencies_ms: Any, *, ok: int | None = None, wall_s: float = 1.0, **kw: Any
) -> RunResult:
    lat = np.asarray(latencies_ms, dtype=np.float64) / 1e3
    n = len(lat) if ok is None else ok
    base: dict[str, Any] = dict(
        label="x", url="http://127.0.0.1:1/", mode="load", concurrency=1, sent=n, ok=n,
        errors={}, wall_s=wall_s, latencies_s=lat,
    )  # fmt: skip
    base.update(kw)
    return RunResult(**base)


# -- loopback only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://127.3.4.5:9/", "http://[::1]:8000/", "http://localhost:80"],
)
def test_check_loopback_loopback_forms_accepted(url: str) -> None:
    _, port, path = lg.check_loopback(url)
    assert port in (8000, 9, 80) and path.startswith("/")


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://10.0.0.1:8000/", "refusing to send load to 10.0.0.1"),
        ("http://192.168.1.20/", "loopback"),
        ("http://0.0.0.0:8000/", "loopback"),
        ("http://example.com/", "refusing to send load to example.com"),
        ("http://[2001:db8::1]:80/", "loopback"),
        ("https://127.0.0.1:8443/", "only http://"),
        ("ftp://127.0.0.1/", "only http://"),
        ("127.0.0.1:8000", "only http://"),
    ],
)
def test_check_loopback_non_loopback_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("/", r"/")):
        lg.check_loopback(url)
    with pytest.raises(ConfigError):
        lg.load(Target(url), max_requests=1)


# -- bounds and counts -----------------------------------------------------------------------


def test_load_every_request_counted_and_received(srv: _Server) -> None:
    target = Target(f"{srv.url}/ok", bodies=(b'{"a": 1}', b'{"a": 2}'))
    r = lg.load(target, concurrency=4, max_requests=200, duration_s=30)
    assert (r.sent, r.ok, r.failed, r.errors) == (200, 200, 0, {})
    assert r.latencies_s.shape == (200,) and (r.latencies_s > 0).all()
    assert r.warmup == 4 and srv.counts["ok"] == 200 + 4
    assert r.throughput == pytest.approx(200 / r.wall_s)
    assert r.error_rate == 0.0 and r.server_cpu_s is None and r.requests_per_cpu_s is None


def test_load_request_cap_stops_exactly_at_cap(srv: _Server) -> None:
    r = lg.load(Target(f"{srv.url}/ok"), concurrency=5, max_requests=37, duration_s=60)
    assert r.sent == r.ok == 37
    assert srv.counts["ok"] == 37 + 5  # nothing beyond the cap
    assert r.wall_s < 10


def test_load_time_cap_stops_sending(srv: _Server) -> None:
    target = Target(f"{srv.url}/slow?ms=20")
    t0 = time.perf_counter()
    r = lg.load(target, concurrency=2, max_requests=100_000, duration_s=0.3, warmup_requests=0)
    elapsed = time.perf_counter() - t0
    assert 0 < r.sent < 100 and r.ok == r.sent
    assert 0.3 <= r.wall_s < 0.3 + 1.0 and elapsed < 3.0
    assert srv.counts["slow"] == r.sent


def test_latency_mode_one_connection_sequential(srv: _Server) -> None:
    r = lg.latency(Target(f"{srv.url}/slow?ms=5"), max_requests=20, warmup_requests=0)
    assert r.mode == "latency" and r.concurrency == 1 and r.ok == 20
    # sequential: the run lasts at least the sum of the server's sleeps
    assert r.wall_s >= 20 * 0.005
    assert r.wall_s >= r.latencies_s.sum() * 0.99


def test_load_errors_counted_by_status_and_excluded_from_latency(srv: _Server) -> None:
    r = lg.load(Target(f"{srv.url}/flaky"), concurrency=1, max_requests=40, warmup_requests=0)
    assert r.sent == 40 and r.errors == {"503": 10} and r.ok == 30
    assert r.error_rate == pytest.approx(0.25) and r.latencies_s.size == 30


def test_load_timeouts_counted_and_connection_reopened(srv: _Server) -> None:
    target = Target(f"{srv.url}/slow?ms=400")
    r = lg.load(target, concurrency=1, max_requests=3, warmup_requests=0, timeout_s=0.05)
    assert r.errors == {"timeout": 3} and r.ok == 0
    assert r.wall_s < 2.0
    # the connection is usable again afterwards (a late answer is not read as the next one)
    good = lg.load(Target(f"{srv.url}/ok"), concurrency=1, max_requests=3, warmup_requests=0)
    assert good.ok == 3


def test_load_refused_connections_counted_bounded() -> None:
    from tests.serving.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/nothing"
    r = lg.load(Target(url), concurrency=2, max_requests=50, duration_s=5, warmup_requests=0)
    assert r.ok == 0 and r.sent == 50 and r.errors == {"connection": 50}
    assert math.isnan(r.percentiles_ms()["p50"])
    assert not SLA().check(r).passed


def test_load_chunked_and_connection_close_answers_parsed(srv: _Server) -> None:
    for route in ("chunked", "close"):
        r = lg.load(Target(f"{srv.url}/{route}"), concurrency=2, max_requests=20)
        assert (r.ok, r.errors) == (20, {}), route
        assert srv.counts[route] == 22


def test_parse_chunked_body_exact() -> None:
    buf = bytearray(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\nNEXT")
    body, end = lg._parse_chunked(buf, 0)  # type: ignore[misc]
    assert body == b"Wikipedia " and buf[end:] == b"NEXT"
    assert lg._parse_chunked(bytearray(b"4\r\nWi"), 0) is None


def test_load_config_bounds_validated() -> None:
    for kwargs in (
        {"concurrency": 0},
        {"concurrency": lg.MAX_CONCURRENCY + 1},
        {"max_requests": 0},
        {"max_requests": lg.MAX_REQUESTS + 1},
        {"duration_s": 0},
        {"duration_s": lg.MAX_DURATION_S + 1},
        {"timeout_s": -1},
        {"warmup_requests": -1},
        {"concurrency": True},
    ):
        with pytest.raises(ConfigError):
            LoadConfig(**kwargs)


def test_sync_modes_inside_running_loop_refused(srv: _Server) -> None:
    async def inside() -> None:
        lg.load(Target(f"{srv.url}/ok"), max_requests=1)

    with pytest.raises(ConfigError, match=r"await celeris\.serving\.loadgen\.run_async"):
        asyncio.run(inside())


def test_run_async_in_callers_loop(srv: _Server) -> None:
    config = LoadConfig(concurrency=3, max_requests=30)
    r = asyncio.run(lg.run_async(Target(f"{srv.url}/ok"), config))
    assert r.ok == 30 and r.concurrency == 3


# -- server CPU ------------------------------------------------------------------------------

_BUSY_SERVER = """
import socket, sys, time
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def busy(request):
    t = time.process_time()
    while time.process_time() - t < 0.004:  # 4 ms of CPU per request
        pass
    return Response(b"{}")

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/busy", busy)]), log_level="warning",
               lifespan="off")).run(sockets=[sock])
"""


def test_server_pid_cpu_of_server_process_only() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _BUSY_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        target = Target(f"http://127.0.0.1:{port}/busy")
        deadline = time.monotonic() + 30
        while lg.load(target, max_requests=1, warmup_requests=0).ok != 1:
            assert time.monotonic() < deadline, "busy server did not start"
            time.sleep(0.05)
        r = lg.load(target, concurrency=2, max_requests=100, server_pid=proc.pid)
        assert r.ok == 100 and r.server_cpu_s is not None
        # 100 x 4 ms of busy-looping, plus the server's HTTP work, and none of ours
        assert 0.36 <= r.server_cpu_s <= 0.4 + 1.5
        assert r.requests_per_cpu_s == pytest.approx(100 / r.server_cpu_s)
        assert r.requests_per_cpu_s <= 100 / 0.36
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_process_tree_cpu_unknown_pid_refused() -> None:
    import psutil

    pid = max(psutil.pids()) + 100_000
    with pytest.raises(ConfigError, match=f"no process with id {pid}"):
        lg.ProcessTreeCPU(pid)


def test_process_tree_cpu_delta_counts_children_and_new_processes() -> None:
    before = {(1, 10.0): 2.0, (2, 11.0): 1.0}
    after = {(1, 10.0): 2.5, (2, 11.0): 1.25, (3, 12.0): 0.5, (2, 99.0): 0.1}  # pid 2 reused
    assert lg.ProcessTreeCPU.delta(before, after) == pytest.approx(0.5 + 0.25 + 0.5 + 0.1)


# -- SLA ----------------------------------------------------------------------------------------


def test_sla_latency_targets_missed_named_with_values() -> None:
    r = _result(np.linspace(1, 120, 1000), wall_s=2.0, errors={"429": 5}, sent=1005)
    v = SLA().check(r)
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == [
        "p50 latency",
        "p95 latency",
        "p99 latency",
    ]
    assert v.reasons[0] == "p50 latency 60.5 ms > 50 ms"
    assert v.reasons[2].startswith("p99 latency 118.8") and v.reasons[2].endswith("> 100 ms")
    by_name = {c.name: c for c in v.checks}
    assert by_name["throughput"].passed and by_name["throughput"].actual == pytest.approx(500)
    assert by_name["error rate"].passed and by_name["error rate"].actual == pytest.approx(5 / 1005)


def test_sla_all_targets_met_passes() -> None:
    r = _result(np.full(500, 3.0), wall_s=1.0)
    v = SLA().check(r)
    assert v.passed and v.reasons == () and len(v.checks) == 5


def test_sla_throughput_and_error_rate_misses() -> None:
    r = _result(np.full(100, 1.0), wall_s=1.0, errors={"503": 3, "timeout": 1}, sent=104)
    v = SLA().check(r)
    assert not v.passed
    assert v.reasons == (
        "throughput 100 req/s < 200 req/s",
        "error rate 3.85% > 1.00%",
    )


def test_sla_no_success_fails_and_none_skips_targets() -> None:
    empty = _result([], errors={"connection": 4}, sent=4)
    v = SLA().check(empty)
    assert not v.passed and v.reasons[0] == "no successful responses"
    assert "p50 latency n/a ms > 50 ms" in v.reasons
    only_p99 = SLA(p50_ms=None, p95_ms=None, min_throughput=None, max_error_rate=None)
    assert [c.name for c in only_p99.check(_result([1.0, 2.0])).checks] == ["p99 latency"]
    for bad in ({"p50_ms": 0}, {"p99_ms": -1}, {"max_error_rate": 1.5}, {"min_throughput": "x"}):
        with pytest.raises(ConfigError):
            SLA(**bad)


def test_stress_stops_at_first_breach_reports_last_passing(srv: _Server) -> None:
    # The serial route answers one request at a time in 25 ms: 2 connections wait ~50 ms.
    sla = SLA(p50_ms=40, p95_ms=None, p99_ms=None, min_throughput=None, max_error_rate=0.0)
    seen: list[int] = []
    result = lg.stress(
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
            lg.stress(Target("http://127.0.0.1:1/"), steps=steps)


# -- compare ---------------------------------------------------------------------------------


def test_compare_ratios_are_a_over_b() -> None:
    a = _result(np.full(1000, 2.0), wall_s=1.0, server_cpu_s=0.5)
    b = _result(np.full(250, 8.0), wall_s=1.0, server_cpu_s=1.0)
    ratios = CompareResult(a, b).ratios
    assert ratios["throughput"] == pytest.approx(4.0)
    assert ratios["p50"] == ratios["p99"] == ratios["max"] == pytest.approx(0.25)
    assert ratios["requests_per_cpu_s"] == pytest.approx(2000 / 250)
    no_cpu = CompareResult(a, _result(np.full(10, 1.0))).ratios
    assert no_cpu["requests_per_cpu_s"] is None
    assert CompareResult(a, _result([])).ratios["p50"] is None


def test_compare_real_targets_fast_over_slow(srv: _Server) -> None:
    fast, slow = Target(f"{srv.url}/ok"), Target(f"{srv.url}/slow?ms=10")
    result = lg.compare(fast, slow, LoadConfig(concurrency=2, max_requests=40))
    assert result.a.ok == result.b.ok == 40
    assert result.a.label.endswith("/ok") and result.b.label.endswith("ms=10")
    assert result.ratios["p50"] is not None and result.ratios["p50"] < 0.5
    assert result.ratios["throughput"] is not None and result.ratios["throughput"] > 2
    same = lg.compare(fast, fast, LoadConfig(max_requests=5))
    assert same.a.label.startswith("A: ") and same.b.label.startswith("B: ")


# -- bodies and reports ----------------------------------------------------------------------


def test_predict_bodies_json_and_msgpack_shapes() -> None:
    bodies, ctype = lg.predict_bodies(16, 3, rows=2, distinct=3, priority="high")
    assert ctype == "application/json" and len(set(bodies)) == 3
    doc = json.loads(bodies[0])
    assert np.asarray(doc["inputs"]).shape == (2, 16, 3) and doc["priority"] == "high"
    packed, ctype = lg.predict_bodies(16, 3, rows=2, fmt="msgpack")
    assert ctype == "application/msgpack"
    arr = msgpack.unpackb(packed[0])["inputs"]
    x = np.frombuffer(arr["data"], dtype=arr["dtype"]).reshape(arr["shape"])
    assert x.shape == (2, 16, 3) and np.isfinite(x).all()
    assert np.allclose(x, np.asarray(doc["inputs"], dtype=np.float32))  # same seed, same data
    for bad in ({"rows": 0}, {"fmt": "xml"}, {"distinct": 0}):
        with pytest.raises(ConfigError):
            lg.predict_bodies(16, 3, **bad)


def _sent_bodies(target: Target, n: int) -> list[bytes]:
    source = target.request_source()
    return [source().split(b"\r\n\r\n", 1)[1] for _ in range(n)]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_predict_target_default_every_history_of_every_request_unique(fmt: str) -> None:
    url = "http://127.0.0.1:9/v1/models/m/predict"
    target = lg.predict_target(url, 8, 3, rows=2, fmt=fmt, priority="low", seed=3)
    bodies = _sent_bodies(target, 300)
    if fmt == "json":
        docs = [json.loads(b) for b in bodies]
        xs = np.asarray([d["inputs"] for d in docs], dtype=np.float32)  # the server's dtype
        assert {d["priority"] for d in docs} == {"low"}
    else:
        docs = [msgpack.unpackb(b) for b in bodies]
        xs = np.stack(
            [np.frombuffer(d["inputs"]["data"], "<f4").reshape(d["inputs"]["shape"]) for d in docs]
        )
        assert {d["priority"] for d in docs} == {"low"}
    assert xs.shape == (300, 2, 8, 3)
    histories = {h.tobytes() for h in xs.reshape(600, 8, 3)}
    assert len(histories) == 600  # no history repeats, within or across requests
    assert np.abs(xs - xs[0]).max() < 0.01  # the stamps barely move the values
    # a later run of the same target continues the counter instead of starting over
    later = _sent_bodies(target, 1)[0]
    assert later not in bodies and target.unique_left == target.stamps.capacity - 301


def test_predict_target_distinct_cycles_fixed_bodies() -> None:
    target = lg.predict_target("http://127.0.0.1:9/x", 8, 1, distinct=3, seed=0)
    bodies = _sent_bodies(target, 7)
    assert target.stamps is None and len(set(bodies)) == 3 and bodies[:3] == bodies[3:6]


def test_stamps_used_up_refused_before_sending(srv: _Server) -> None:
    body = b'{"inputs": [1.00]}'
    target = Target(f"{srv.url}/ok", (body,), stamps=lg.Stamps((((len(body) - 4,),),), 100))
    assert target.unique_left == 100
    assert len(set(_sent_bodies(target, 100))) == 100
    with pytest.raises(ConfigError, match="0 more unique requests"):
        lg.load(target, max_requests=1)
    with pytest.raises(lg.LoadgenError, match="used up"):
        target.request_source()()
    with pytest.raises(ConfigError, match="outside its body"):
        Target(f"{srv.url}/ok", (body,), stamps=lg.Stamps((((len(body) - 1,),),), 100))


def test_parse_cache_counters_sums_tiers_and_results() -> None:
    text = (
        "# HELP celeris_cache_events_total Cache look-ups\n"
        "# TYPE celeris_cache_events_total counter\n"
        'celeris_cache_events_total{result="hit",tier="memory"} 7.0\n'
        'celeris_cache_events_total{result="miss",tier="memory"} 3.0\n'
        'celeris_cache_events_total{result="hit",tier="redis"} 2.0\n'
        'celeris_cache_events_created{result="hit",tier="memory"} 1.7e9\n'
    )
    assert lg.parse_cache_counters(text) == {
        ("memory", "hit"): 7.0, ("memory", "miss"): 3.0, ("redis", "hit"): 2.0,
    }  # fmt: skip
    assert lg.parse_cache_counters("# TYPE celeris_cache_events_total counter\n") == {}
    assert lg.parse_cache_counters("up 1\n") is None
    before = {("memory", "hit"): 7.0, ("memory", "miss"): 3.0}
    after = {("memory", "hit"): 10.0, ("memory", "miss"): 8.0, ("redis", "hit"): 1.0}
    stats = lg._cache_delta(before, after)  # type: ignore[attr-defined]
    assert (stats.lookups, stats.hits, stats.hit_ratio, stats.text()) == (8, 4, 0.5, "50.0%")
    off = lg._cache_delta(before, before)  # type: ignore[attr-defined]
    assert (off.hit_ratio, off.text()) == (None, "off") and "cache is off" in off.note


def test_load_metrics_url_without_celeris_metrics_reported_unavailable(srv: _Server) -> None:
    target = Target(f"{srv.url}/ok", metrics_url=f"{srv.url}/nothing-here")
    r = lg.load(target, concurrency=2, max_requests=10)
    assert r.cache is not None and r.cache.text() == "n/a" and "HTTP 404" in r.cache.note
    assert r.to_dict()["cache"]["hit_ratio"] is None
    assert lg.load(Target(f"{srv.url}/ok"), max_requests=2).cache is None


def test_report_dict_json_round_trip(srv: _Server) -> None:
    r = lg.load(Target(f"{srv.url}/ok"), concurrency=2, max_requests=25, server_pid=os.getpid())
    doc = json.loads(json.dumps(lg.report_dict(r, sla=SLA(), latencies=True)))
    run = doc["run"]
    assert doc["kind"] == "run" and run["ok"] == 25 and run["concurrency"] == 2
    assert len(run["latencies_ms"]) == 25
    assert run["latency_ms"]["p50"] == pytest.approx(
        float(np.percentile(run["latencies_ms"], 50)), rel=1e-3
    )
    # this process is the server here; psutil's CPU clock ticks in 10 ms steps, so a short run
    # may read 0 s, whose requests per CPU-second (infinite) is reported as null
    assert run["server_cpu_s"] is not None and run["server_cpu_s"] >= 0
    rpc = run["requests_per_server_cpu_s"]
    assert (
        rpc is None if run["server_cpu_s"] == 0 else rpc == pytest.approx(25 / run["server_cpu_s"])
    )
    assert doc["sla"]["passed"] in (True, False) and len(doc["sla"]["checks"]) == 5
    assert doc["machine"]["cpus"] == os.cpu_count()
    cmp_doc = lg.report_dict(CompareResult(r, r), sla=SLA())
    assert cmp_doc["kind"] == "compare" and cmp_doc["ratios_a_over_b"]["throughput"] == 1.0
    assert "latencies_ms" not in cmp_doc["a"]


def test_render_tables_show_results() -> None:
    from rich.console import Console

    a = _result(np.full(1000, 2.0), label="celeris", server_cpu_s=0.1)
    b = _result(np.full(50, 9.0), label="ray", errors={"429": 2}, sent=52, concurrency=2)
    console = Console(record=True, width=200)
    console.print(lg.render_table([a, b], sla=SLA()))
    console.print(lg.render_compare(CompareResult(a, b)))
    stress = lg.StressResult([(a, SLA().check(a)), (b, SLA().check(b))], SLA())
    console.print(lg.render_stress(stress))
    text = console.export_text()
    assert "celeris" in text and "429x2 (3.8%)" in text and "10,000" in text  # req/CPU-s
    assert "ratio a / b" in text and "20.00x" in text and "0.22x" in text
    assert "last passing step: concurrency 1 (1,000 req/s)" in text
    assert "breached at concurrency 2: throughput 50 req/s < 200 req/s" in text


def test_plot_latency_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs = [
        _result(rng.lognormal(0, 0.5, 500), label="a"),
        _result(rng.lognormal(1, 0.3, 500), label="b", concurrency=8),
    ]
    path = lg.plot_latency(runs, tmp_path / "plots" / "latency.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ConfigError, match=r"ending in \.png"):
        lg.plot_latency(runs, tmp_path / "latency.svg")
    with pytest.raises(ConfigError, match="no successful requests"):
        lg.plot_latency([_result([])], tmp_path / "empty.png")

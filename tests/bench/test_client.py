"""The hand-written HTTP/1.1 client: timeouts, chunked bodies, closed connections."""

from __future__ import annotations

import celeris.bench as bench
from celeris.bench import Target
from celeris.bench.client import parse_chunked
from tests.bench.conftest import LoopbackServer


def test_load_timeouts_counted_and_connection_reopened(srv: LoopbackServer) -> None:
    target = Target(f"{srv.url}/slow?ms=400")
    r = bench.load(target, concurrency=1, max_requests=3, warmup_requests=0, timeout_s=0.05)
    assert r.errors == {"timeout": 3} and r.ok == 0
    assert r.wall_s < 2.0
    # the connection is usable again afterwards (a late answer is not read as the next one)
    good = bench.load(Target(f"{srv.url}/ok"), concurrency=1, max_requests=3, warmup_requests=0)
    assert good.ok == 3


def test_load_chunked_and_connection_close_answers_parsed(srv: LoopbackServer) -> None:
    for route in ("chunked", "close"):
        r = bench.load(Target(f"{srv.url}/{route}"), concurrency=2, max_requests=20)
        assert (r.ok, r.errors) == (20, {}), route
        assert srv.counts[route] == 22


def test_parse_chunked_body_exact() -> None:
    buf = bytearray(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\nNEXT")
    body, end = parse_chunked(buf, 0)
    assert body == b"Wikipedia " and buf[end:] == b"NEXT"
    assert parse_chunked(bytearray(b"4\r\nWi"), 0) is None

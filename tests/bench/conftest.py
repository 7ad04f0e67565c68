"""Shared fixtures of the load-generator tests: a real uvicorn server on loopback.

The server (``_app``) counts the requests it receives per route, so the tests can check that
the generator sent exactly what it reports (measured + warm-up) and nothing after its caps.

- ``server`` (module) and ``srv`` (its counts reset): a :class:`LoopbackServer`. Its routes:
  ``/ok``, ``/slow?ms=``, ``/serial?ms=`` (one request at a time), ``/flaky`` (every 4th
  answer a 503), ``/chunked``, ``/close`` (``Connection: close``) and ``/stall_once?at=&ms=``
  (the whole server blocks for ``ms`` at its ``at``-th request).
- :func:`run_result`: a :class:`~celeris.bench.RunResult` of given latencies, for SLA and
  report tests.
- :func:`sent_bodies`: the bodies a target's next ``n`` requests carry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn

from celeris.bench import RunResult, Target


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

    async def stall_once(request: Request) -> Response:
        # The server's whole event loop stops for ``ms`` (a blocking sleep, like a GC pause) at
        # the ``at``-th request since the counts were reset: every connection waits.
        counts["stall_once"] += 1
        if counts["stall_once"] == int(request.query_params["at"]):
            time.sleep(float(request.query_params["ms"]) / 1e3)
        return Response(b"{}", media_type="application/json")

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
            Route("/stall_once", stall_once, methods=["GET"]),
        ]
    )


class LoopbackServer:
    """``_app`` on uvicorn in a thread, on a free loopback port (``url``, ``counts``)."""

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
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def srv(server: LoopbackServer) -> LoopbackServer:
    """The module's server with its request counts reset."""
    server.counts.clear()
    return server


def run_result(
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


def sent_bodies(target: Target, n: int) -> list[bytes]:
    source = target.request_source()
    return [source().split(b"\r\n\r\n", 1)[1] for _ in range(n)]

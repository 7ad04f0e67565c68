"""Requests per server CPU-second: the server's process tree, and none of the client."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import celeris.bench as bench
from celeris.bench import Target
from celeris.errors import ConfigError

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
        while bench.load(target, max_requests=1, warmup_requests=0).ok != 1:
            assert time.monotonic() < deadline, "busy server did not start"
            time.sleep(0.05)
        r = bench.load(target, concurrency=2, max_requests=100, server_pid=proc.pid)
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
        bench.ProcessTreeCPU(pid)


def test_process_tree_cpu_delta_counts_children_and_new_processes() -> None:
    before = {(1, 10.0): 2.0, (2, 11.0): 1.0}
    after = {(1, 10.0): 2.5, (2, 11.0): 1.25, (3, 12.0): 0.5, (2, 99.0): 0.1}  # pid 2 reused
    assert bench.ProcessTreeCPU.delta(before, after) == pytest.approx(0.5 + 0.25 + 0.5 + 0.1)

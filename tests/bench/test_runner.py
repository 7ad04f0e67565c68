"""One measured run from synchronous code and from the caller's event loop."""

from __future__ import annotations

import asyncio

import pytest

import celeris.bench as bench
from celeris.bench import LoadConfig, Target
from celeris.errors import ConfigError
from tests.bench.conftest import LoopbackServer


def test_sync_modes_inside_running_loop_refused(srv: LoopbackServer) -> None:
    async def inside() -> None:
        bench.load(Target(f"{srv.url}/ok"), max_requests=1)

    with pytest.raises(ConfigError, match=r"await celeris\.bench\.run_async"):
        asyncio.run(inside())


def test_run_async_in_callers_loop(srv: LoopbackServer) -> None:
    config = LoadConfig(concurrency=3, max_requests=30)
    r = asyncio.run(bench.run_async(Target(f"{srv.url}/ok"), config))
    assert r.ok == 30 and r.concurrency == 3

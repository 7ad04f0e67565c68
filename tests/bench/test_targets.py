"""Stamps run out before the run, not during it."""

from __future__ import annotations

import pytest

import celeris.bench as bench
from celeris.bench import Target
from celeris.errors import ConfigError
from tests.bench.conftest import LoopbackServer, sent_bodies


def test_stamps_used_up_refused_before_sending(srv: LoopbackServer) -> None:
    body = b'{"inputs": [1.00]}'
    target = Target(f"{srv.url}/ok", (body,), stamps=bench.Stamps((((len(body) - 4,),),), 100))
    assert target.unique_left == 100
    assert len(set(sent_bodies(target, 100))) == 100
    with pytest.raises(ConfigError, match="0 more unique requests"):
        bench.load(target, max_requests=1)
    with pytest.raises(bench.LoadgenError, match="used up"):
        target.request_source()()
    with pytest.raises(ConfigError, match="outside its body"):
        Target(f"{srv.url}/ok", (body,), stamps=bench.Stamps((((len(body) - 1,),),), 100))

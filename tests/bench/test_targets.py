"""Stamps run out before the run, not during it."""

from __future__ import annotations

import dataclasses

import pytest

import celeris.bench as bench
from celeris.bench import Target
from celeris.errors import CelerisTypeError, ConfigError
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


def test_target_unknown_field_wrong_types_and_frozen() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown target setting 'bodys' \(did you mean 'bodies'\?\)"
    ):
        Target("http://127.0.0.1:9/", bodys=(b"{}",))  # type: ignore[call-arg]
    with pytest.raises(
        ConfigError, match=r"unknown stamps setting 'radx' \(did you mean 'radix'\?\)"
    ):
        bench.Stamps(offsets=(((1,),),), radx=100)  # type: ignore[call-arg]
    with pytest.raises(CelerisTypeError, match="bodies must be a tuple of bytes"):
        Target("http://127.0.0.1:9/", ["{}"])  # type: ignore[arg-type]
    with pytest.raises(CelerisTypeError, match="radix"):
        bench.Stamps((((1,),),), True)
    with pytest.raises(ConfigError, match="radix must be 100"):
        bench.Stamps((((1,),),), 10)
    with pytest.raises(ConfigError, match="refusing to send load"):
        Target("http://192.0.2.1:9/")
    target = Target("http://127.0.0.1:9/", (bytearray(b"{}"),))
    assert target.label == target.url and target.bodies == (b"{}",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.label = "x"  # type: ignore[misc]


def test_target_relabelled_copy_shares_the_request_counter() -> None:
    body = b'{"inputs": [1.00]}'
    stamps = bench.Stamps([[[len(body) - 3]]], 100)  # lists are taken as tuples
    target = Target("http://127.0.0.1:9/", (body,), stamps=stamps)
    assert target == Target("http://127.0.0.1:9/", (body,), stamps=stamps)
    assert hash(target) == hash(Target("http://127.0.0.1:9/", (body,), stamps=stamps))
    first = target.request_source()()
    copy = target.model_copy(update={"label": "A"})
    assert copy.label == "A" and copy.unique_left == target.unique_left == 99
    assert copy.request_source()() != first
    assert repr(target).startswith("Target(url='http://127.0.0.1:9/', bodies=(b'{")

"""SLA checks name every missed target with its value."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from celeris.bench import SLA
from celeris.errors import CelerisTypeError, ConfigError
from tests.bench.conftest import run_result


def test_sla_latency_targets_missed_named_with_values() -> None:
    r = run_result(np.linspace(1, 120, 1000), wall_s=2.0, errors={"429": 5}, sent=1005)
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
    r = run_result(np.full(500, 3.0), wall_s=1.0)
    v = SLA().check(r)
    assert v.passed and v.reasons == () and len(v.checks) == 5


def test_sla_throughput_and_error_rate_misses() -> None:
    r = run_result(np.full(100, 1.0), wall_s=1.0, errors={"503": 3, "timeout": 1}, sent=104)
    v = SLA().check(r)
    assert not v.passed
    assert v.reasons == (
        "throughput 100 req/s < 200 req/s",
        "error rate 3.85% > 1.00%",
    )


def test_sla_no_success_fails_and_none_skips_targets() -> None:
    empty = run_result([], errors={"connection": 4}, sent=4)
    v = SLA().check(empty)
    assert not v.passed and v.reasons[0] == "no successful responses"
    assert "p50 latency n/a ms > 50 ms" in v.reasons
    only_p99 = SLA(p50_ms=None, p95_ms=None, min_throughput=None, max_error_rate=None)
    assert [c.name for c in only_p99.check(run_result([1.0, 2.0])).checks] == ["p99 latency"]
    for bad in ({"p50_ms": 0}, {"p99_ms": -1}, {"max_error_rate": 1.5}):
        with pytest.raises(ConfigError):
            SLA(**bad)
    # A wrong type is a CelerisTypeError (it was a ConfigError before SLA became a FrozenConfig).
    for bad_type in ({"min_throughput": "x"}, {"p99_ms": True}, {"max_error_rate": False}):
        with pytest.raises(CelerisTypeError, match=next(iter(bad_type))):
            SLA(**bad_type)


def test_sla_unknown_target_hint_frozen_and_infinite_target_kept() -> None:
    with pytest.raises(ConfigError, match=r"unknown SLA setting 'p90_ms' \(did you mean"):
        SLA(p90_ms=10)  # type: ignore[call-arg]
    sla = SLA(10, None, math.inf, 5, 0)
    assert sla.to_dict() == {
        "p50_ms": 10.0,
        "p95_ms": None,
        "p99_ms": math.inf,
        "min_throughput": 5.0,
        "max_error_rate": 0.0,
    }
    assert sla == SLA(p50_ms=10, p95_ms=None, p99_ms=math.inf, min_throughput=5, max_error_rate=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sla.p50_ms = 20  # type: ignore[misc]

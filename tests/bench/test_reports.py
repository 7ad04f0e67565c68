"""JSON reports and rich tables."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import celeris.bench as bench
from celeris.bench import SLA, CompareResult, Target
from tests.bench.conftest import LoopbackServer, run_result


def test_report_dict_json_round_trip(srv: LoopbackServer) -> None:
    r = bench.load(Target(f"{srv.url}/ok"), concurrency=2, max_requests=25, server_pid=os.getpid())
    doc = json.loads(json.dumps(bench.report_dict(r, sla=SLA(), latencies=True)))
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
    cmp_doc = bench.report_dict(CompareResult(r, r), sla=SLA())
    assert cmp_doc["kind"] == "compare" and cmp_doc["ratios_a_over_b"]["throughput"] == 1.0
    assert "latencies_ms" not in cmp_doc["a"]


def test_render_tables_show_results() -> None:
    from rich.console import Console

    a = run_result(np.full(1000, 2.0), label="celeris", server_cpu_s=0.1)
    b = run_result(np.full(50, 9.0), label="ray", errors={"429": 2}, sent=52, concurrency=2)
    console = Console(record=True, width=200)
    console.print(bench.render_table([a, b], sla=SLA()))
    console.print(bench.render_compare(CompareResult(a, b)))
    stress = bench.StressResult([(a, SLA().check(a)), (b, SLA().check(b))], SLA())
    console.print(bench.render_stress(stress))
    text = console.export_text()
    assert "celeris" in text and "429x2 (3.8%)" in text and "10,000" in text  # req/CPU-s
    assert "ratio a / b" in text and "20.00x" in text and "0.22x" in text
    assert "last passing step: concurrency 1 (1,000 req/s)" in text
    assert "breached at concurrency 2: throughput 50 req/s < 200 req/s" in text

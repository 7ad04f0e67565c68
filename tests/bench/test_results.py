"""Compare ratios are a / b."""

from __future__ import annotations

import numpy as np
import pytest

from celeris.bench import CompareResult
from tests.bench.conftest import run_result


def test_compare_ratios_are_a_over_b() -> None:
    a = run_result(np.full(1000, 2.0), wall_s=1.0, server_cpu_s=0.5)
    b = run_result(np.full(250, 8.0), wall_s=1.0, server_cpu_s=1.0)
    ratios = CompareResult(a, b).ratios
    assert ratios["throughput"] == pytest.approx(4.0)
    assert ratios["p50"] == ratios["p99"] == ratios["max"] == pytest.approx(0.25)
    assert ratios["requests_per_cpu_s"] == pytest.approx(2000 / 250)
    no_cpu = CompareResult(a, run_result(np.full(10, 1.0))).ratios
    assert no_cpu["requests_per_cpu_s"] is None
    assert CompareResult(a, run_result([])).ratios["p50"] is None

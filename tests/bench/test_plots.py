"""The latency histogram and CDF PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import celeris.bench as bench
from celeris.errors import ConfigError
from tests.bench.conftest import run_result


def test_plot_latency_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs = [
        run_result(rng.lognormal(0, 0.5, 500), label="a"),
        run_result(rng.lognormal(1, 0.3, 500), label="b", concurrency=8),
    ]
    path = bench.plot_latency(runs, tmp_path / "plots" / "latency.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ConfigError, match=r"ending in \.png"):
        bench.plot_latency(runs, tmp_path / "latency.svg")
    with pytest.raises(ConfigError, match="no successful requests"):
        bench.plot_latency([run_result([])], tmp_path / "empty.png")

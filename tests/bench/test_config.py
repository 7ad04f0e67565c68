"""The bounds of a run are validated."""

from __future__ import annotations

import pytest

import celeris.bench as bench
from celeris.bench import LoadConfig
from celeris.errors import ConfigError


def test_load_config_bounds_validated() -> None:
    for kwargs in (
        {"concurrency": 0},
        {"concurrency": bench.MAX_CONCURRENCY + 1},
        {"max_requests": 0},
        {"max_requests": bench.MAX_REQUESTS + 1},
        {"duration_s": 0},
        {"duration_s": bench.MAX_DURATION_S + 1},
        {"timeout_s": -1},
        {"warmup_requests": -1},
        {"concurrency": True},
        {"rate": 0},
        {"rate": -5.0},
        {"rate": bench.MAX_RATE * 2},
        {"rate": True},
    ):
        with pytest.raises(ConfigError):
            LoadConfig(**kwargs)

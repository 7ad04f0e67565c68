"""The bounds of a run are validated."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

import celeris.bench as bench
from celeris.bench import LoadConfig
from celeris.errors import CelerisTypeError, ConfigError


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
        {"rate": 0},
        {"rate": -5.0},
        {"rate": bench.MAX_RATE * 2},
        {"rate": float("nan")},
    ):
        with pytest.raises(ConfigError):
            LoadConfig(**kwargs)


def test_load_config_wrong_types_raise_celeris_type_error() -> None:
    # One exception type per mistake: a bool or a float for a count is a wrong type (these
    # were ConfigErrors before LoadConfig became a FrozenConfig).
    for kwargs in (
        {"concurrency": True},
        {"max_requests": 10.0},
        {"warmup_requests": "5"},
        {"rate": True},
        {"duration_s": "10"},
    ):
        with pytest.raises(CelerisTypeError, match=next(iter(kwargs))):
            LoadConfig(**kwargs)


def test_load_config_unknown_field_raises_config_error_with_hint() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown load setting 'concurency' \(did you mean 'concurrency'\?\)"
    ):
        LoadConfig(concurency=4)  # type: ignore[call-arg]


def test_load_config_frozen_positional_equal_and_picklable() -> None:
    config = LoadConfig(np.int64(4), 100, 2, None, 5)
    assert (config.concurrency, config.max_requests, config.duration_s) == (4, 100, 2.0)
    assert config == LoadConfig(concurrency=4, max_requests=100, duration_s=2.0, timeout_s=5)
    assert pickle.loads(pickle.dumps(config)) == config and config.warmup == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.concurrency = 8  # type: ignore[misc]

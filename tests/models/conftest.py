"""Shared fixtures of the model tests: numba cache, small thread pool, seeded RNGs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "numba")
)

import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Seed Python, numpy and torch before every model test; run torch on one thread.

    Tiny models run fastest on one thread on a small shared machine. It is set before every
    test, not once: numba's OpenMP threading layer shares libgomp with torch and resets its
    thread count when a parallel indicator kernel runs (measured: NHITS steps 5x slower after
    one ``feature_frame`` call).
    """
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def ar2_series(n: int, phi1: float = 0.6, phi2: float = -0.3, sigma: float = 0.1, seed: int = 0):
    """Return ``n`` values of a stationary AR(2) process ``y_t = phi1 y_{t-1} + phi2 y_{t-2} + e``."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n + 100)
    noise = rng.normal(0.0, sigma, n + 100)
    for t in range(2, n + 100):
        y[t] = phi1 * y[t - 1] + phi2 * y[t - 2] + noise[t]
    return y[100:]


def sine_series(n: int, period: float = 20.0, noise: float = 0.0, seed: int = 0):
    """Return ``n`` values of ``sin(2 pi t / period)`` plus optional Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / period) + noise * rng.normal(size=n)

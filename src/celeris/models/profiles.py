"""A predictor configured by a hardware profile, and batch-size probing.

The profiles themselves (which backend, threads and batch suit this machine) are
:mod:`celeris.compute.profiles`; they are re-exported here for the callers that found them here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from celeris.compute.profiles import Profile, auto_profile, detect, profiles
from celeris.errors import ConfigError

__all__ = [
    "Profile",
    "auto_profile",
    "detect",
    "load_predictor",
    "optimal_batch_size",
    "profiles",
]


def load_predictor(
    directory: str | Path, profile: str | Profile | None = None, **overrides: Any
) -> Any:
    """A :class:`~celeris.models.predictor.Predictor` configured by a profile."""
    from celeris.models.predictor import Predictor

    prof = profile if isinstance(profile, Profile) else auto_profile(profile, **overrides)
    return Predictor.load(
        directory,
        backend=prof.backend,
        compile=prof.compile,
        threads=prof.threads,
        device=prof.device,
        max_batch=prof.max_batch,
    )


def optimal_batch_size(
    predictor: Any,
    candidates: tuple[int, ...] = (1, 8, 32, 128, 512, 1024, 4096),
    *,
    seconds_per_candidate: float = 0.2,
    keep: float = 0.95,
) -> tuple[int, dict[int, float]]:
    """Probe throughput (histories/s) per batch size; return the smallest batch within ``keep``
    of the best throughput, and the measurements."""
    rng = np.random.default_rng(0)
    shape = (predictor.input_size, predictor.n_features)
    rates: dict[int, float] = {}
    for batch in sorted(c for c in candidates if 1 <= c <= predictor.max_batch):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        predictor.predict(x)  # warm-up
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds_per_candidate:
            predictor.predict(x)
            done += batch
        rates[batch] = done / (time.perf_counter() - t0)
    if not rates:
        raise ConfigError("no candidate batch size fits the predictor's max_batch")
    best = max(rates.values())
    chosen = min(b for b, r in rates.items() if r >= keep * best)
    return chosen, rates

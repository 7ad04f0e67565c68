"""Hardware profiles for prediction, chosen from the device and overridable, and batch probing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from celeris.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Profile:
    """How a :class:`~celeris.models.predictor.Predictor` runs: backend, threads, batch, device."""

    name: str
    backend: str
    threads: int
    max_batch: int
    device: str = "cpu"
    compile: bool = False
    description: str = ""


def _cores() -> int:
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )


def profiles(
    cores: int | None = None, gpu: str | None = None, gpu_memory_gb: float | None = None
) -> dict[str, Profile]:
    """The five profiles for a machine with ``cores`` CPU cores and an optional GPU (whose
    memory sets the high-throughput batch: 8,192 windows from 40 GB, 2,048 below)."""
    cores = cores or _cores()
    dev = "cuda" if gpu else "cpu"
    gpu_batch = 8192 if (gpu_memory_gb or 0) >= 40 else 2048
    return {
        "ultra_low_latency": Profile(
            "ultra_low_latency",
            "onnx",
            1,
            1,
            description="one history at a time, one thread: lowest p50",
        ),
        "low_latency": Profile(
            "low_latency", "onnx", min(2, cores), 64, description="small batches, few threads"
        ),
        "balanced": Profile(
            "balanced",
            "torch",
            cores,
            512,
            device=dev,
            description="eager torch, all cores (or the GPU)",
        ),
        "high_throughput": Profile(
            "high_throughput",
            # On CPUs, int8 weights: 2.7x the fp32 ONNX throughput at batch 1,000 for NHITS, outputs
            # within 0.02% of the eager model (every export is verified against it).
            "torch" if gpu else "onnx-int8",
            cores,
            gpu_batch if gpu else 4096,
            device=dev,
            description="large batches for many assets at once",
        ),
        "memory_efficient": Profile(
            "memory_efficient",
            "onnx-int8",
            1,
            64,
            description="int8 weights, one thread, small batches",
        ),
    }


def detect() -> dict[str, Any]:
    """CPU cores and, when torch sees one, the GPU model and memory."""
    info: dict[str, Any] = {"cores": _cores(), "gpu": None, "gpu_memory_gb": None}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["gpu_memory_gb"] = props.total_memory / 2**30
    except ImportError:  # pragma: no cover - torch is part of the models extra
        pass
    return info


def auto_profile(name: str | None = None, **overrides: Any) -> Profile:
    """Pick a profile for this machine (or the one named), with field overrides.

    Automatic choice: a GPU -> ``high_throughput``; one or two CPU cores -> ``low_latency``;
    more -> ``balanced``.
    """
    info = detect()
    table = profiles(info["cores"], info["gpu"], info["gpu_memory_gb"])
    if name is None:
        name = (
            "high_throughput"
            if info["gpu"]
            else ("low_latency" if info["cores"] <= 2 else "balanced")
        )
    if name not in table:
        raise ConfigError(
            f"unknown profile {name!r}{did_you_mean(name, table)}; choose one of {', '.join(table)}"
        )
    fields = Profile.__dataclass_fields__
    for key in overrides:
        if key not in fields or key == "name":
            raise ConfigError(f"unknown profile field {key!r}{did_you_mean(key, fields)}")
    return replace(table[name], **overrides)


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

"""Hardware profiles: how a forecasting predictor should run on this machine (backend,
threads, batch, device), detected from the CPU cores and the GPU torch sees, overridable."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from celeris.errors import ConfigError, did_you_mean

__all__ = ["Profile", "auto_profile", "cpu_cores", "detect", "profiles"]


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


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )


def profiles(
    cores: int | None = None, gpu: str | None = None, gpu_memory_gb: float | None = None
) -> dict[str, Profile]:
    """The five profiles for a machine with ``cores`` CPU cores and an optional GPU (whose
    memory sets the high-throughput batch: 8,192 windows from 40 GB, 2,048 below)."""
    cores = cores or cpu_cores()
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
            # On CPUs "auto": int8 weights (2.7x the fp32 ONNX throughput at batch 1,000 for
            # NHITS) only when the checkpoint's recorded int8 error is within INT8_BUDGET, else
            # fp32 ONNX, else torch: Predictor.load's one rule (choose_backend) decides.
            "torch" if gpu else "auto",
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
    info: dict[str, Any] = {"cores": cpu_cores(), "gpu": None, "gpu_memory_gb": None}
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

"""Device choice (CPU or CUDA, for numba kernels and torch alike), hardware profiles
(:mod:`celeris.compute.profiles`) and telemetry (:mod:`celeris.compute.telemetry`)."""

from celeris.compute.device import cuda_available, resolve_device, resolve_torch_device

__all__ = ["cuda_available", "resolve_device", "resolve_torch_device"]

"""Device choice (CPU or CUDA) and hardware facts."""

from celeris.compute.device import cuda_available, resolve_device

__all__ = ["cuda_available", "resolve_device"]

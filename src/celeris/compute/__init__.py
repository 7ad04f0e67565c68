"""Device choice (CPU or CUDA, for numba kernels and torch alike) and hardware profiles."""

from celeris.compute.device import cuda_available, resolve_device, resolve_torch_device

__all__ = ["cuda_available", "resolve_device", "resolve_torch_device"]

"""Celeris: quant research and signal serving for crypto markets.

Submodules are imported lazily so that ``import celeris`` stays fast; ``celeris.backtest``,
``celeris.data`` and ``celeris.indicators`` load on first use.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from celeris.errors import (
    CelerisError,
    CelerisTypeError,
    CelerisWarning,
    ConfigError,
    DataError,
    DeviceError,
    ExchangeError,
    LLMError,
    StoreError,
)

__version__ = "0.1.0"

# Numba's OpenMP threads spin for a while after each parallel kernel; on a small machine the
# spinning threads steal the cores from the serial work between kernels (sweeps alternate the
# two), which measured 15-25% slower on 2 cores. A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_SUBMODULES = ("analytics", "backtest", "compute", "data", "indicators", "llm", "models", "cli")

if TYPE_CHECKING:  # pragma: no cover
    from celeris import analytics, backtest, compute, data, indicators, llm, models


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"celeris.{name}")
    raise AttributeError(f"module 'celeris' has no attribute {name!r}")


__all__ = [
    "CelerisError",
    "CelerisTypeError",
    "CelerisWarning",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ExchangeError",
    "LLMError",
    "StoreError",
    "__version__",
    "analytics",
    "backtest",
    "compute",
    "data",
    "indicators",
    "llm",
    "models",
]

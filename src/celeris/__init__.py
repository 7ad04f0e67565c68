"""Celeris: quant research and signal serving for crypto markets.

Submodules are imported lazily so that ``import celeris`` stays fast; ``celeris.backtest``,
``celeris.data`` and ``celeris.indicators`` load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from celeris.errors import (
    CelerisError,
    CelerisTypeError,
    ConfigError,
    DataError,
    DeviceError,
    ExchangeError,
    StoreError,
)

__version__ = "0.1.0"

_SUBMODULES = ("backtest", "compute", "data", "indicators", "cli")

if TYPE_CHECKING:  # pragma: no cover
    from celeris import backtest, compute, data, indicators


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"celeris.{name}")
    raise AttributeError(f"module 'celeris' has no attribute {name!r}")


__all__ = [
    "CelerisError",
    "CelerisTypeError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ExchangeError",
    "StoreError",
    "__version__",
    "backtest",
    "compute",
    "data",
    "indicators",
]

"""Deprecated: the load generator moved to :mod:`celeris.bench` (tools, not runtime).

Kept for one release so that ``from celeris.serving.loadgen import load`` (as the docs showed)
still works; every name is looked up in :mod:`celeris.bench` on first use, with a
:class:`DeprecationWarning`. Nothing in :mod:`celeris.serving` imports it.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    bench = importlib.import_module("celeris.bench")
    if name.startswith("__") or name not in bench.__all__:
        raise AttributeError(
            f"module 'celeris.serving.loadgen' has no attribute {name!r} "
            "(the load generator moved to celeris.bench)"
        )
    warnings.warn(
        f"celeris.serving.loadgen.{name} moved to celeris.bench.{name}; "
        "celeris.serving.loadgen will be removed in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(bench, name)


def __dir__() -> list[str]:
    return list(importlib.import_module("celeris.bench").__all__)

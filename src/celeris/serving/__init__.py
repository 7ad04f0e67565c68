"""Serving forecasts: dynamic batching, caches, registry, safe rollouts, HTTP API, signal feed.

- :class:`Engine` runs one :class:`DynamicBatcher` per loaded model version (priorities with
  ageing, deadlines, back-pressure, per-request failure isolation), with a memory + Redis
  :class:`TieredCache`, A/B routing and atomic hot swap.
- :class:`ModelRegistry` keeps versions, stages and sha256-verified artifacts (SQLite or
  PostgreSQL); :func:`shadow_validate` and :func:`evaluate_ab` gate promotions.
- :class:`ModelManager` decides which version of each model serves (loading, shadow
  validation, promotion, rollback, A/B tests, following the registry); :func:`create_app`
  is the FastAPI application serving a manager's models; ``/metrics`` exports
  :class:`PrometheusMetrics`. ``celeris.serving.app`` wires a whole process together.
- :mod:`celeris.serving.errors` holds every serving error, each carrying its HTTP status.
- :class:`SignalPublisher` streams fixed-size binary signal records over a Unix socket
  (``docs/wire-format.md``); :class:`SignalSubscriber` reads them.

Names load lazily: ``import celeris.serving`` pulls in neither FastAPI nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Priority": "batcher",
    "BatcherConfig": "batcher",
    "DynamicBatcher": "batcher",
    "Overloaded": "errors",
    "DeadlineExceeded": "errors",
    "RequestFailed": "errors",
    "MemoryCache": "cache",
    "RedisCache": "cache",
    "TieredCache": "cache",
    "Engine": "engine",
    "PredictResult": "engine",
    "ModelRegistry": "registry",
    "ModelRecord": "registry",
    "ArtifactTampered": "errors",
    "arm_for": "rollout",
    "ABStats": "rollout",
    "evaluate_ab": "rollout",
    "shadow_validate": "rollout",
    "SignalRecord": "feed",
    "SignalPublisher": "feed",
    "SignalSubscriber": "feed",
    "ServeSettings": "config",
    "load_serve_settings": "config",
    "PrometheusMetrics": "metrics",
    "create_app": "http",
    "ModelManager": "manager",
    "ServingError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"celeris.serving.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'celeris.serving' has no attribute {name!r}")

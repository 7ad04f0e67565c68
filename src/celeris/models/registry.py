"""Deprecated alias of :mod:`celeris.models.catalogue` (the catalogue of model classes).

The name "registry" belongs to the artifact registry, :mod:`celeris.serving.registry`; this
module keeps old imports working for one release and warns.
"""

from __future__ import annotations

import warnings

from celeris.models.catalogue import (
    MODELS,
    ForecastModel,
    build_model,
    get_model,
    register_model,
)

__all__ = ["MODELS", "ForecastModel", "build_model", "get_model", "register_model"]

warnings.warn(
    "celeris.models.registry is now celeris.models.catalogue (the artifact registry is "
    "celeris.serving.registry); the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

"""Forecasting models: NHITS, CNN+LSTM and an echo-state reservoir, trained, exported and fast.

Names load lazily (torch is imported on first use, not by ``import celeris.models``):

* models: :func:`build_model`, :data:`MODELS` (``nhits``, ``cnn_lstm``, ``reservoir``);
* data: :func:`make_windows`, :func:`split_by_time`, scalers, :func:`feature_frame`;
* training and evaluation: :class:`TrainConfig`, :func:`train`, :func:`evaluate`;
* checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`;
* prediction: :class:`Predictor`, :func:`export_checkpoint`, :func:`auto_profile`,
  :func:`load_predictor`, :func:`optimal_batch_size`;
* trading: :func:`rolling_forecasts`, :func:`expected_returns`, :func:`signals_from_forecast`;
* provenance: :func:`fingerprint_bars`, :func:`training_overlap` (which bars a model was trained
  on, by content), :func:`evaluate_checkpoint` (out-of-sample windows only),
  :func:`forecast_index` (forecast timestamps on the data's calendar).

Backtesting a model (and a walk-forward that refits it per window) lives in
:mod:`celeris.research`, above this package and :mod:`celeris.backtest`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MODELS": "catalogue",
    "ForecastModel": "catalogue",
    "build_model": "catalogue",
    "register_model": "catalogue",
    "make_windows": "data",
    "split_by_time": "data",
    "Windows": "data",
    "StandardScaler": "data",
    "RobustScaler": "data",
    "IdentityScaler": "data",
    "feature_frame": "data",
    "TrainConfig": "train",
    "train": "train",
    "evaluate": "evaluate",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "Predictor": "predictor",
    "export_checkpoint": "export",
    "auto_profile": "profiles",
    "load_predictor": "profiles",
    "optimal_batch_size": "profiles",
    "rolling_forecasts": "signals",
    "expected_returns": "signals",
    "signals_from_forecast": "signals",
    "fingerprint_bars": "provenance",
    "training_overlap": "provenance",
    "forecast_index": "pipeline",
    "evaluate_checkpoint": "pipeline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celeris.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"celeris.models.{module}"), name)


__all__ = sorted(_EXPORTS)

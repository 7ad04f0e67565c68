"""From a bar frame to a trained checkpoint and back: the steps the CLI and the backtest share."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.errors import ConfigError, did_you_mean

#: Default input features per model (the first is the forecast target).
DEFAULT_FEATURES: dict[str, tuple[str, ...]] = {
    "nhits": ("close",),
    "reservoir": ("close",),
    "cnn_lstm": ("log_return", "rsi_14", "zscore_20", "atr_14", "volatility_20"),
}


#: Targets that are price-like levels; every other feature is treated as stationary (returns).
LEVEL_TARGETS = frozenset({"close", "log_close"})


def target_kind(target: str) -> str:
    """``"level"`` for price-like targets, ``"return"`` for stationary ones (log returns...)."""
    return "level" if target in LEVEL_TARGETS else "return"


def default_scaler(target: str) -> str:
    """Per-window robust scaling for levels (prices leave the training range), a global
    standard scaler for stationary targets."""
    return "window-robust" if target_kind(target) == "level" else "standard"


def model_inputs(bars: pd.DataFrame, features: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """The model's input frame ``[T, C]`` from bars (past-only features, warm-up dropped)."""
    from celeris.models.data import feature_frame

    return feature_frame(bars, tuple(features), drop_warmup=True)


def model_kwargs(
    name: str, input_size: int, horizon: int, n_features: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Constructor keywords of a registered model for the given shapes."""
    if name == "nhits":
        return {"input_size": input_size, "horizon": horizon, "n_exog": n_features - 1, **extra}
    if name in ("cnn_lstm", "reservoir"):
        return {"n_features": n_features, "input_size": input_size, "horizon": horizon, **extra}
    raise ConfigError(f"unknown model {name!r}{did_you_mean(name, DEFAULT_FEATURES)}")


@dataclasses.dataclass
class Trained:
    directory: Path
    report: Any
    result: Any
    meta: dict[str, Any]


def train_on_bars(
    name: str,
    bars: pd.DataFrame,
    out: str | Path,
    *,
    input_size: int,
    horizon: int,
    features: tuple[str, ...] | None = None,
    scaler: str = "auto",
    val: float = 0.1,
    test: float = 0.2,
    model_options: dict[str, Any] | None = None,
    source: str = "",
    **train_options: Any,
) -> Trained:
    """Window ``bars``, split by time, fit the scaler on training bars only, train, evaluate on
    the held-out test windows beside naive baselines, and save a checkpoint to ``out``."""
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import Scaler, make_scaler, make_windows, split_by_time, training_bars
    from celeris.models.evaluate import evaluate
    from celeris.models.registry import build_model
    from celeris.models.train import TrainConfig, train

    feats = tuple(features or DEFAULT_FEATURES.get(name, ("close",)))
    values = model_inputs(bars, feats)
    windows = make_windows(values, input_size, horizon)
    tr, va, te = split_by_time(windows, val=val, test=test)
    sc = make_scaler(default_scaler(feats[0]) if scaler == "auto" else scaler)
    if isinstance(
        sc, Scaler
    ):  # global scalers learn from training bars; window scalers need nothing
        sc.fit(training_bars(tr))
    model = build_model(
        name, **model_kwargs(name, input_size, horizon, len(feats), dict(model_options or {}))
    )
    config = TrainConfig(**train_options)
    result = train(model, tr, va if len(va) else None, config, scaler=sc)
    report = evaluate(result.model, te, sc, kind=target_kind(feats[0]))
    table = report.table()
    spacing = (
        pd.Series(values.index).diff().median()
        if isinstance(values.index, pd.DatetimeIndex)
        else None
    )
    meta = {
        "input_size": input_size,
        "horizon": horizon,
        "n_features": len(feats),
        "features": list(feats),
        "target": feats[0],
        "target_kind": target_kind(feats[0]),
        "source": source,
        "bar_spacing": str(spacing) if spacing is not None else None,
        "train_windows": len(tr),
        "val_windows": len(va),
        "test_windows": len(te),
        "test_start": str(values.index[int(te.end[0])]) if len(te) else None,
        "trained_steps": result.history[-1]["step"] if result.history else 0,
        "best_step": result.best_step,
        "train_config": config.model_dump(),
        "test_metrics": {
            str(k): {c: _num(v) for c, v in row.items()} for k, row in table.iterrows()
        },
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    directory = save_checkpoint(
        model, Path(out), scaler=sc, meta=meta
    )  # trained in place, best weights
    return Trained(directory, report, result, meta)


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if np.isnan(f) else f


def expected_step_returns(predictor: Any, bars: pd.DataFrame, step: int = 1) -> pd.Series:
    """Expected return to ``step`` bars ahead, at each bar of ``bars`` (NaN before the first
    full window), from forecasts made with data up to and including that bar."""
    from celeris.models.signals import rolling_forecasts

    feats = tuple(predictor.meta.get("features", ["close"]))
    values = model_inputs(bars, feats)
    fc = rolling_forecasts(predictor, values.to_numpy(), index=values.index)
    if not 1 <= step <= predictor.horizon:
        raise ConfigError(f"step must be in 1..{predictor.horizon}, got {step}")
    target = feats[0]
    if target == "close":
        expected = fc[step] / bars["close"].reindex(values.index) - 1.0
    elif target == "log_close":
        expected = np.exp(fc[step] - np.log(bars["close"].reindex(values.index))) - 1.0
    elif target == "log_return":
        expected = np.exp(fc.loc[:, 1:step].sum(axis=1, min_count=step)) - 1.0
    else:
        raise ConfigError(
            f"cannot turn forecasts of {target!r} into returns; train with target close, log_close or log_return"
        )
    return expected.reindex(bars.index)

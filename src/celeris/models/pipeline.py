"""From a bar frame to a trained checkpoint and back: the steps the CLI and the backtest share."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_fraction, check_int, check_real
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


def model_inputs(bars: pd.DataFrame, features: Any) -> pd.DataFrame:
    """The model's input frame ``[T, C]`` from bars (past-only features, warm-up dropped).

    ``features``: a :class:`~celeris.models.features.FeatureSpec` or its feature names. The one
    code path: :meth:`FeatureSpec.inputs <celeris.models.features.FeatureSpec.inputs>`.
    """
    from celeris.models.features import FeatureSpec

    spec = features if isinstance(features, FeatureSpec) else FeatureSpec(tuple(features))
    return spec.inputs(bars)


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
    #: the checkpoint's export record (``exports.json``), None when trained with export=False
    exports: dict[str, Any] | None = None


@dataclasses.dataclass
class Fitted:
    """A model fitted on bars, not yet saved: what :func:`fit_on_bars` returns."""

    model: Any
    scaler: Any
    result: Any
    report: Any
    meta: dict[str, Any]
    #: the held-out test windows (original units), None when ``test=0``
    test_windows: Any = None


def fit_on_bars(
    name: str,
    bars: pd.DataFrame,
    *,
    input_size: int,
    horizon: int,
    features: tuple[str, ...] | None = None,
    scaler: str = "auto",
    val: float = 0.1,
    test: float = 0.2,
    model_options: dict[str, Any] | None = None,
    source: str = "",
    config: Any = None,
) -> Fitted:
    """Window ``bars``, split by time, fit the scaler on training bars only, train, and (when
    ``test > 0``) evaluate on the held-out test windows beside naive baselines.

    ``meta["train_bars"]`` records the bars the weights depend on (see
    :mod:`celeris.models.provenance`): from the first input bar of the first training window to
    the last target bar of the last validation window (training window when ``val=0``), since
    validation chose the early-stopping step.
    """
    import torch

    from celeris.models.catalogue import build_model
    from celeris.models.data import Scaler, make_scaler, make_windows, split_by_time, training_bars
    from celeris.models.evaluate import evaluate
    from celeris.models.features import FeatureSpec
    from celeris.models.provenance import fingerprint_bars
    from celeris.models.train import TrainConfig, train

    spec = FeatureSpec(tuple(features or DEFAULT_FEATURES.get(name, ("close",))))
    feats = spec.features
    values = model_inputs(bars, spec)
    windows = make_windows(values, input_size, horizon)
    tr, va, te = split_by_time(windows, val=val, test=test)
    # The training rows of the inputs, before scaling: the reference of drift monitoring.
    spec = spec.with_reference(
        values.to_numpy()[int(tr.end[0]) - input_size + 1 : int(tr.end[-1]) + 1]
    )
    scaler_kind = default_scaler(feats[0]) if scaler == "auto" else scaler
    sc = make_scaler(scaler_kind)
    if isinstance(
        sc, Scaler
    ):  # global scalers learn from training bars; window scalers need nothing
        sc.fit(training_bars(tr))
    config = TrainConfig() if config is None else config
    # The initial weights come from torch's global RNG: seed it too, so that one seed gives one
    # model (a walk-forward refit is then reproducible), and leave the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(
            name, **model_kwargs(name, input_size, horizon, len(feats), dict(model_options or {}))
        )
    result = train(model, tr, va if len(va) else None, config, scaler=sc)
    report = evaluate(result.model, te, sc, kind=target_kind(feats[0])) if len(te) else None
    fit = va if len(va) else tr
    first = values.index[int(tr.end[0]) - input_size + 1]
    last = values.index[int(fit.end[-1]) + horizon]
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
        "feature_spec": spec.to_dict(),
        "target": feats[0],
        "target_kind": target_kind(feats[0]),
        "scaler_kind": scaler_kind,
        "split": {"val": val, "test": test},
        "source": source,
        "bar_spacing": str(spacing) if spacing is not None else None,
        "train_windows": len(tr),
        "val_windows": len(va),
        "test_windows": len(te),
        "test_start": str(values.index[int(te.end[0])]) if len(te) else None,
        "train_bars": fingerprint_bars(bars.loc[first:last]),
        "trained_steps": result.history[-1]["step"] if result.history else 0,
        "best_step": result.best_step,
        "train_config": config.model_dump(),
        "test_metrics": {}
        if report is None
        else {str(k): {c: _num(v) for c, v in row.items()} for k, row in report.table().iterrows()},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return Fitted(result.model, sc, result, report, meta, te if len(te) else None)


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
    export: bool = True,
    **train_options: Any,
) -> Trained:
    """Window ``bars``, split by time, fit the scaler on training bars only, train, evaluate on
    the held-out test windows beside naive baselines, and save a checkpoint to ``out``.

    The checkpoint records the bars the model was trained on (``meta["train_bars"]``), so that
    backtests and forecasts on them can be recognised as in-sample whatever the data is called.

    With ``export`` (the default) the checkpoint also gets what the fast default path of
    :meth:`~celeris.models.predictor.Predictor.load` needs: ONNX fp32 and int8 exports checked
    against the eager model on the held-out test windows, with the record of that check
    (``exports.json``; :func:`~celeris.models.export.export_checkpoint`). An int8 export outside
    its tolerance is recorded as declined; an fp32 export that fails its check warns
    (:class:`~celeris.errors.CelerisWarning`) and leaves the checkpoint on torch.
    """
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.train import TrainConfig

    test = check_real(
        "test", test, minimum=0, open_low=True, reason="to judge the model on held-out bars"
    )
    fitted = fit_on_bars(
        name, bars, input_size=input_size, horizon=horizon, features=features, scaler=scaler,
        val=val, test=test, model_options=model_options, source=source,
        config=TrainConfig(**train_options),
    )  # fmt: skip
    directory = save_checkpoint(
        fitted.model, Path(out), scaler=fitted.scaler, meta=fitted.meta
    )  # trained in place, best weights
    record = _export_fast_paths(directory, fitted.test_windows) if export else None
    return Trained(directory, fitted.report, fitted.result, fitted.meta, record)


def _export_fast_paths(directory: Path, test_windows: Any) -> dict[str, Any] | None:
    """Export and verify ONNX fp32 + int8 on the held-out windows; return the record."""
    import warnings

    from celeris.errors import CelerisWarning, DataError
    from celeris.models.checkpoint_file import read_exports
    from celeris.models.export import export_checkpoint

    try:
        histories = None if test_windows is None else test_windows.x
        export_checkpoint(directory, "onnx", int8=True, histories=histories, decline_int8=True)
    except Exception as exc:  # the checkpoint is saved: a failing exporter must not lose it
        what = str(exc) if isinstance(exc, DataError) else f"ONNX export failed: {exc!r}"
        warnings.warn(
            f"{directory}: {what}; Predictor.load uses torch for this checkpoint",
            CelerisWarning,
            stacklevel=3,
        )
    return read_exports(directory)


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if np.isnan(f) else f


def expected_step_returns_checked(
    predictor: Any,
    bars: pd.DataFrame,
    step: int = 1,
    *,
    include_train: bool = False,
    flag: str = "include_train=True",
) -> tuple[pd.Series, Any]:
    """:func:`expected_step_returns` without the warning: the series and the
    :class:`~celeris.models.provenance.TrainingOverlap` of ``bars`` (None when unchecked)."""
    from celeris.models.features import FeatureSpec, spec_of
    from celeris.models.signals import rolling_forecasts_checked, training_guard

    step = check_int("step", step, minimum=1, maximum=predictor.horizon)
    meta = predictor.meta
    spec = (
        spec_of(meta) if "features" in meta or "feature_spec" in meta else FeatureSpec(("close",))
    )
    target = spec.target
    if target not in ("close", "log_close", "log_return"):
        raise ConfigError(
            f"cannot turn forecasts of {target!r} into returns; train with target close, log_close or log_return"
        )
    overlap = training_guard(predictor, bars.index, bars, include_train, flag)
    values = spec.inputs(bars)
    fc, _ = rolling_forecasts_checked(
        predictor, values.to_numpy(), index=values.index, bars=bars, include_train=include_train
    )
    close = bars["close"].reindex(values.index).to_numpy(np.float64)
    expected = pd.Series(
        step_return(target, fc.to_numpy(np.float64), close, step), index=values.index
    )
    return expected.reindex(bars.index), overlap


def step_return(target: str, forecasts: np.ndarray, close: np.ndarray, step: int) -> np.ndarray:
    """Expected return from each window's last close to ``step`` bars ahead, from forecasts
    ``[n, horizon]`` of the target ``close`` (``f / close - 1``), ``log_close``
    (``exp(f - log close) - 1``) or ``log_return`` (``exp(sum of the first step) - 1``); NaN
    where a forecast is NaN. The one conversion of model backtests and the live loop."""
    if target == "close":
        return forecasts[:, step - 1] / close - 1.0
    if target == "log_close":
        return np.exp(forecasts[:, step - 1] - np.log(close)) - 1.0
    if target == "log_return":
        return np.exp(forecasts[:, :step].sum(axis=1)) - 1.0
    raise ConfigError(
        f"cannot turn forecasts of {target!r} into returns; train with target close, "
        "log_close or log_return"
    )


def expected_step_returns(
    predictor: Any, bars: pd.DataFrame, step: int = 1, *, include_train: bool = False
) -> pd.Series:
    """Expected return to ``step`` bars ahead, at each bar of ``bars`` (NaN before the first
    full window), from forecasts made with data up to and including that bar.

    Bars the model was trained on (same dates and prices, see
    :mod:`celeris.models.provenance`) get NaN, with a :class:`~celeris.errors.CelerisWarning`
    saying how many; ``include_train=True`` keeps them (and warns louder).

    Raises
    ------
    DataError
        The model has no record of its training bars and ``include_train`` is False.
    ConfigError
        A ``step`` outside the horizon, or a target that is not a price or log return.
    """
    import warnings

    from celeris.errors import CelerisWarning
    from celeris.models.signals import in_sample_note

    expected, overlap = expected_step_returns_checked(
        predictor, bars, step, include_train=include_train
    )
    note = in_sample_note(overlap, include_train, "bars")
    if note is not None:
        warnings.warn(note, CelerisWarning, stacklevel=2)
    return expected


def evaluate_checkpoint_checked(
    checkpoint: Any,
    bars: pd.DataFrame,
    *,
    last: float = 0.2,
    include_train: bool = False,
    flag: str = "include_train=True",
) -> tuple[Any, Any]:
    """:func:`evaluate_checkpoint` without the warning: the report and the training overlap of
    the chosen windows' forecast origins (None when unchecked)."""
    from celeris.errors import DataError
    from celeris.models.checkpoint import LoadedCheckpoint, load_checkpoint
    from celeris.models.data import make_windows
    from celeris.models.evaluate import evaluate
    from celeris.models.features import spec_of
    from celeris.models.signals import training_guard

    last = check_fraction("last", last, open_low=True)
    ckpt = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    values = spec_of(ckpt.meta).inputs(bars)
    windows = make_windows(values, int(ckpt.meta["input_size"]), int(ckpt.meta["horizon"]))
    chosen = windows.subset(slice(int(len(windows) * (1 - last)), None))
    overlap = training_guard(ckpt, chosen.time, bars, include_train, flag)
    if overlap is not None and not include_train and overlap.n_in_sample:
        chosen = chosen.subset(~overlap.in_sample)
        if len(chosen) == 0:
            raise DataError(
                f"every one of the latest {len(overlap.in_sample)} windows starts from a bar the "
                f"model was trained on ({overlap.span}); evaluate on later data, or pass {flag}"
            )
    kind = ckpt.meta.get("target_kind", "level")
    return evaluate(ckpt.model, chosen, ckpt.scaler, kind=kind), overlap


def evaluate_checkpoint(
    checkpoint: Any, bars: pd.DataFrame, *, last: float = 0.2, include_train: bool = False
) -> Any:
    """Score a checkpoint on the latest ``last`` fraction of the windows of ``bars``, beside the
    naive and drift baselines (:func:`~celeris.models.evaluate.evaluate`), out of sample.

    Windows whose forecast origin is a bar the model was trained on (same dates and prices, see
    :mod:`celeris.models.provenance`) are left out with a :class:`~celeris.errors.CelerisWarning`
    giving the count; ``include_train=True`` scores them too (and warns louder). This is what
    ``celeris evaluate`` runs.

    Raises
    ------
    DataError
        The checkpoint has no record of its training bars (unless ``include_train``), or every
        chosen window starts from a training bar.
    """
    import warnings

    from celeris.errors import CelerisWarning
    from celeris.models.signals import in_sample_note

    report, overlap = evaluate_checkpoint_checked(
        checkpoint, bars, last=last, include_train=include_train
    )
    note = in_sample_note(overlap, include_train, "windows")
    if note is not None:
        warnings.warn(note, CelerisWarning, stacklevel=2)
    return report


def forecast_index(index: pd.DatetimeIndex, horizon: int) -> pd.DatetimeIndex:
    """Timestamps of the ``horizon`` bars after ``index[-1]``, on the data's own calendar.

    Steps of the data's usual spacing (the median gap); a step that lands on a weekend is
    skipped when the data has no weekend bars (equities), and, for intraday data, one whose
    time of day never occurs in the data (outside the trading session). So daily equity bars
    are followed by business days. Exchange holidays are not known and are not skipped.

    Raises
    ------
    DataError
        Fewer than 2 bars (no spacing to follow).
    """
    from celeris.errors import DataError

    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        raise DataError("forecast timestamps need a DatetimeIndex of at least 2 bars")
    horizon = check_int("horizon", horizon, minimum=1)
    spacing = pd.Series(index).diff().median()
    weekdays_only = not (index.day_of_week >= 5).any()
    intraday = spacing < pd.Timedelta("1D")
    recent = index[-5000:]
    times = set((recent - recent.normalize()).as_unit("ns").asi8) if intraday else None
    out: list[pd.Timestamp] = []
    t = index[-1]
    # A week of candidate steps per wanted bar is far more than a session calendar needs.
    limit = horizon * max(8, int(pd.Timedelta("8D") / spacing))
    for _ in range(limit):
        if len(out) == horizon:
            break
        t = t + spacing
        if weekdays_only and t.day_of_week >= 5:
            continue
        if times is not None and (t - t.normalize()).value not in times:
            continue
        out.append(t)
    if len(out) < horizon:
        raise DataError(f"could not place {horizon} bars after {index[-1]} on the data's calendar")
    return pd.DatetimeIndex(out, name=index.name)

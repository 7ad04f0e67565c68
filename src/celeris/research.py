"""Forecasting models judged by the backtest: guarded model backtests and a model walk-forward.

This module joins :mod:`celeris.models` and :mod:`celeris.backtest`. It lives above both (like
:mod:`celeris.live`) because ``celeris.models`` may not import the backtest; neither package
imports it, the CLI does.

* :func:`backtest_model` trades a checkpoint's forecasts with the same rule as
  ``celeris backtest --strategy model:DIR``: long when the expected return ``step`` bars ahead
  exceeds ``threshold``, out when it falls below ``-threshold``. Bars the model was trained on
  (recognised by timestamps and content, see :mod:`celeris.models.provenance`) are left out
  unless ``include_train=True``.
* :func:`model_walk_forward` refits a fresh model per window, from the checkpoint's own training
  configuration, on the training span only, and backtests its forecasts on the test span that
  follows. No window is judged by a model that saw it; the cost (models trained, optimiser
  steps, seconds) is reported.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest.metrics import metric_slot
from celeris.backtest.portfolio import Portfolio, from_signals
from celeris.backtest.strategies import check_bars
from celeris.backtest.sweep import check_portfolio_options
from celeris.backtest.walk_forward import WalkForwardResult, chain_out_of_sample, window_plan
from celeris.errors import CelerisError, CelerisWarning, ConfigError, DataError
from celeris.models.provenance import TrainingOverlap
from celeris.progress import progress_bar

__all__ = [
    "ModelBacktest",
    "ModelWalkForwardResult",
    "backtest_model",
    "model_walk_forward",
    "model_walk_forward_cost",
]


@dataclasses.dataclass(frozen=True)
class ModelBacktest:
    """A model's forecasts traded on bars: the portfolio and what was left out, and why.

    Attributes
    ----------
    portfolio : Portfolio
        The backtest of the traded bars.
    overlap : TrainingOverlap or None
        How the data relates to the model's training bars (None: not checked, with
        ``include_train`` and a model that has no record of them).
    excluded : int
        Bars of the data not traded because the model was trained on them.
    note : str or None
        The same in words (also given as a :class:`~celeris.errors.CelerisWarning`).
    """

    portfolio: Portfolio
    overlap: TrainingOverlap | None
    excluded: int
    note: str | None


def _predictor(model: Any) -> Any:
    from celeris.models.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if isinstance(model, str | Path):
        return Predictor.load(model)
    raise ConfigError(f"model must be a checkpoint directory or a Predictor, got {model!r}")


def _held_out(
    index: pd.Index, overlap: TrainingOverlap, flag: str
) -> tuple[np.ndarray, str | None]:
    """The contiguous span to trade once the training bars are left out, and a note on any
    out-of-sample bars that span leaves aside (before the training range, when both exist)."""
    inside = np.flatnonzero(overlap.in_range)  # contiguous: bars are in time order
    position = np.arange(len(index))
    after, before = position > inside[-1], position < inside[0]
    if after.any():
        aside = int(before.sum())
        note = (
            f"; the {aside:,} bars before the training range are not traded either (a backtest "
            "is one contiguous span: slice the data to backtest them)"
            if aside
            else ""
        )
        return after, note or None
    if before.any():
        return before, None
    raise DataError(
        f"every bar of the data ({len(index):,}) is one the model was trained on "
        f"({overlap.span}): nothing out of sample to backtest; use data from after the "
        f"training range, or include the training bars knowingly ({flag})"
    )


def _backtest_model(
    bars: pd.DataFrame,
    model: Any,
    *,
    step: int = 1,
    threshold: float = 0.0,
    include_train: bool = False,
    device: str = "auto",
    flag: str = "include_train=True",
    **options: Any,
) -> ModelBacktest:
    from celeris.models.pipeline import expected_step_returns_checked
    from celeris.models.signals import in_sample_note, signals_from_forecast

    predictor = _predictor(model)
    expected, overlap = expected_step_returns_checked(
        predictor, bars, step, include_train=include_train, flag=flag
    )
    note = in_sample_note(overlap, include_train, "bars", flag)
    excluded = 0
    if overlap is not None and overlap.n_in_sample and not include_train:
        keep, aside = _held_out(bars.index, overlap, flag)
        excluded = overlap.n_in_sample
        note = (
            f"excluded {excluded:,} bars the model was trained on ({overlap.span}: "
            f"{overlap.reason}); trading the {int(keep.sum()):,} bars "
            f"{'after' if keep[-1] else 'before'} them{aside or ''}. {flag} includes them"
        )
        bars, expected = bars[keep], expected[keep]
    # With direction="both", an exit signal opens a short (from_signals' convention).
    signals = signals_from_forecast(expected, threshold=threshold)
    options.setdefault("execution", "next_open")  # a forecast made at a close trades next bar
    pf = from_signals(bars, signals["entries"], signals["exits"], device=device, **options)
    return ModelBacktest(pf, overlap, excluded, note)


def backtest_model(
    bars: pd.DataFrame,
    model: Any,
    *,
    step: int = 1,
    threshold: float = 0.0,
    include_train: bool = False,
    device: str = "auto",
    **options: Any,
) -> ModelBacktest:
    """Backtest a model's forecasts on ``bars``, leaving out the bars it was trained on.

    Parameters
    ----------
    bars : pd.DataFrame
        OHLCV bars with a UTC DatetimeIndex. Forecasts use bars up to each bar only.
    model : path or Predictor
        A checkpoint directory (``celeris train --out``) or a loaded
        :class:`~celeris.models.predictor.Predictor`.
    step, threshold : int, float
        Trade on the expected return ``step`` bars ahead: enter above ``threshold``, exit below
        ``-threshold``.
    include_train : bool
        Also trade the bars the model was trained on (a :class:`CelerisWarning` says how many):
        results on them are not evidence. By default they are left out and the backtest covers
        the contiguous span after them (or before them, when there is none after).
    device : str
        Backtest engine: ``auto``, ``cpu`` or ``cuda``.
    **options
        ``from_signals`` options (``fees``, ``slippage``, ``init_cash``, ...). Orders fill at
        the next bar's open unless ``execution="close"``.

    Raises
    ------
    DataError
        The model has no record of its training bars (pass ``include_train=True`` to trade
        anyway), or every bar is a training bar.
    """
    result = _backtest_model(
        bars, model, step=step, threshold=threshold, include_train=include_train,
        device=device, **options,
    )  # fmt: skip
    if result.note is not None:
        warnings.warn(result.note, CelerisWarning, stacklevel=2)
    return result


# --------------------------------------------------------------------------------------------
# Walk-forward with a refit per window


@dataclasses.dataclass
class ModelWalkForwardResult(WalkForwardResult):
    """:class:`~celeris.backtest.WalkForwardResult` of a model refitted per window, plus its cost.

    ``windows`` has one row per window: the spans, ``fitted_through`` (the last bar whose
    value shaped the refit's weights: always before ``test_start``), the refit's ``steps`` and
    ``best_step``, its ``train_seconds``, and the out-of-sample metrics of its test span.
    """

    models: int = 0
    steps: int = 0
    max_steps: int = 0
    seconds: float = 0.0


#: Settings of a model walk-forward that the CLI takes as ``--grid NAME=VALUE``.
MODEL_SETTINGS = ("threshold", "step", "max_steps")


def _refit_plan(document: dict[str, Any], max_steps: int | None) -> dict[str, Any]:
    """How the checkpoint was trained, as keyword arguments of ``fit_on_bars``."""
    from celeris.models.train import TrainConfig

    meta = document["meta"]
    for key in ("features", "input_size", "horizon"):
        if key not in meta:
            raise DataError(f"the checkpoint's meta lacks {key!r}; it cannot be refitted")
    saved = dict(meta.get("train_config") or meta.get("train") or {})
    saved["progress"] = False
    if max_steps is not None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        saved["max_steps"] = max_steps
    scaler_kind = meta.get("scaler_kind")
    if scaler_kind is None:  # checkpoints written before the kind was recorded
        state = document.get("scaler")
        scaler_kind = (
            "identity"
            if state is None
            else (f"window-{state['kind']}" if state["type"] == "window" else state["type"])
        )
    split = meta.get("split") or {}
    val = split.get("val")
    if val is None:
        total = sum(int(meta.get(k, 0)) for k in ("train_windows", "val_windows", "test_windows"))
        val = round(int(meta.get("val_windows", 0)) / total, 4) if total else 0.1
    return {
        "name": document["model"],
        "input_size": int(meta["input_size"]),
        "horizon": int(meta["horizon"]),
        "features": tuple(meta["features"]),
        "scaler": scaler_kind,
        "val": float(val),
        "test": 0.0,
        "model_options": dict(document["config"]),
        "config": TrainConfig(**saved),
    }


def model_walk_forward_cost(
    data: Any,
    model: str | Path,
    *,
    train: int | str,
    test: int | str,
    partial: bool = True,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """What :func:`model_walk_forward` will cost, before it runs: ``{"model", "windows",
    "max_steps_per_model", "max_steps"}`` (early stopping may train fewer steps)."""
    from celeris.models.checkpoint_file import read_config

    bars = check_bars(data, ("close",))
    plan = _refit_plan(read_config(model), max_steps)
    _, _, starts = window_plan(bars.index, train, test, partial)
    per_model = int(plan["config"].max_steps)
    return {
        "model": plan["name"],
        "windows": len(starts),
        "max_steps_per_model": per_model,
        "max_steps": len(starts) * per_model,
    }


def model_walk_forward(
    data: Any,
    model: str | Path,
    *,
    train: int | str,
    test: int | str,
    anchored: bool = False,
    partial: bool = True,
    step: int = 1,
    threshold: float = 0.0,
    max_steps: int | None = None,
    metric: str = "sharpe",
    progress: bool = True,
    device: str = "auto",
    **options: Any,
) -> ModelWalkForwardResult:
    """Walk a model forward without leaks: refit per window, judge on the window after it.

    For each window a fresh model of the checkpoint's kind is built from the checkpoint's
    constructor arguments and trained with its saved training configuration (features, scaler,
    validation fraction for early stopping, :class:`~celeris.models.train.TrainConfig`) on the
    ``train`` span only; it forecasts the ``test`` span that follows, the forecasts become
    signals by the rule of :func:`backtest_model`, and the test span is backtested with fresh
    cash. Then both spans move forward by ``test`` bars (``anchored=True`` keeps the training
    start fixed). The last test span runs to the end of the data even when it is shorter than
    ``test`` (``partial=False`` leaves it out); ``windows["test_bars"]`` says how long each is.
    The checkpoint's own weights are not used, so its training bars do not matter.

    Parameters
    ----------
    data : pd.DataFrame
        OHLCV bars with a DatetimeIndex.
    model : path
        Checkpoint directory written by ``celeris train`` (its ``config.json`` is what is read).
    train, test : int or str
        Span lengths in bars or as durations (``"730D"``), as in
        :func:`celeris.backtest.walk_forward`.
    step, threshold : int, float
        The trading rule (see :func:`backtest_model`).
    max_steps : int, optional
        Optimiser steps per refit instead of the checkpoint's (the cost is ``windows x steps``).
    metric : str
        Metric reported per window as ``oos_<metric>``.
    progress : bool
        A rich progress bar on stderr with the steps trained so far and the time left.
    device : str
        Backtest engine; training runs where the saved ``TrainConfig.device`` says.
    **options
        ``from_signals`` options. Orders fill at the next bar's open unless
        ``execution="close"``.

    Raises
    ------
    ConfigError
        Spans that do not fit the data, an unknown metric or option.
    DataError
        A span too short to window and split for training.
    """
    from celeris.models.checkpoint_file import read_config
    from celeris.models.pipeline import expected_step_returns_checked, fit_on_bars
    from celeris.models.predictor import Predictor
    from celeris.models.signals import signals_from_forecast

    metric_slot(metric)
    bars = check_bars(data, ("close",))
    options = check_portfolio_options(options)
    options.setdefault("execution", "next_open")
    plan = _refit_plan(read_config(model), max_steps)
    n_train, n_test, starts = window_plan(bars.index, train, test, partial)
    per_model = int(plan["config"].max_steps)
    init_cash = float(options.get("init_cash", 100_000.0))

    rows: list[dict[str, Any]] = []
    pieces: list[pd.Series] = []
    total_steps, started = 0, time.perf_counter()
    bar = progress_bar(progress, fields=("cost",), elapsed=True)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(
            f"walk-forward {plan['name']}: refit per window",
            total=len(starts),
            cost=f"0 of <= {len(starts) * per_model:,} steps",
        )
    pf: Portfolio | None = None
    try:
        for k, start in enumerate(starts):
            train_start = 0 if anchored else start
            train_end = start + n_train
            test_end = min(train_end + n_test, len(bars))
            t0 = time.perf_counter()
            try:
                fitted = fit_on_bars(bars=bars.iloc[train_start:train_end], **plan)
            except CelerisError as exc:
                raise type(exc)(
                    f"window {k} (training bars {bars.index[train_start]} .. "
                    f"{bars.index[train_end - 1]}): {exc}"
                ) from None
            seconds = time.perf_counter() - t0
            predictor = Predictor.from_model(fitted.model, scaler=fitted.scaler, meta=fitted.meta)
            span = bars.iloc[train_start:test_end]  # the test span, with its past as input
            expected, overlap = expected_step_returns_checked(predictor, span, step)
            expected = expected.iloc[train_end - train_start :]
            if overlap is not None and overlap.in_sample[train_end - train_start :].any():
                raise CelerisError(  # a bug, not bad input: the refit saw its test span
                    f"window {k}: the refitted model's training bars reach into its test span"
                )
            signals = signals_from_forecast(expected, threshold=threshold)
            pf = from_signals(
                bars.iloc[train_end:test_end], signals["entries"], signals["exits"],
                device=device, **options,
            )  # fmt: skip
            stats = pf.stats().iloc[0]
            pieces.append(pf.returns.iloc[:, 0])
            steps = int(fitted.meta["trained_steps"])
            total_steps += steps
            rows.append(
                {
                    "window": k,
                    "train_start": bars.index[train_start],
                    "train_end": bars.index[train_end - 1],
                    "test_start": bars.index[train_end],
                    "test_end": bars.index[test_end - 1],
                    "test_bars": test_end - train_end,
                    "fitted_through": pd.Timestamp(fitted.meta["train_bars"]["last"]),
                    "steps": steps,
                    "best_step": int(fitted.meta["best_step"]),
                    "train_seconds": seconds,
                    f"oos_{metric}": stats[metric],
                    "oos_total_return": float(stats["total_return"]),
                    "oos_trades": int(stats["trades"]),
                }
            )
            if bar is not None and task is not None:
                bar.update(
                    task,
                    advance=1,
                    cost=f"{total_steps:,} of <= {len(starts) * per_model:,} steps",
                )
    finally:
        if bar is not None:
            bar.stop()
    assert pf is not None  # starts is never empty: n_train + n_test <= len(bars)
    return ModelWalkForwardResult(
        pd.DataFrame(rows).set_index("window"),
        *chain_out_of_sample(pieces, pf.ann_factor, init_cash),
        metric,
        models=len(starts),
        steps=total_steps,
        max_steps=per_model,
        seconds=time.perf_counter() - started,
    )

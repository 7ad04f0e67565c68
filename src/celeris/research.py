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
from celeris.backtest.portfolio import Portfolio
from celeris.backtest.signals import from_signals
from celeris.backtest.strategies import check_bars
from celeris.backtest.sweep import check_portfolio_options, is_single
from celeris.backtest.walk_forward import (
    WalkForwardResult,
    chain_out_of_sample,
    window_plan,
    window_span,
)
from celeris.checks import check_int
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
    """The predictor of ``model``: a checkpoint directory loads with an exact backend.

    A rolling forecast predicts every window in one batch, and int8's activation scale is set
    per batch, so with int8 an early window's forecast would be nudged by later bars: a small
    look-ahead. ``exact=True`` keeps the default choice to fp32 ONNX or torch
    (:func:`~celeris.models.predictor.choose_backend`). A :class:`Predictor` given runs as
    it was loaded.
    """
    from celeris.models.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if isinstance(model, str | Path):
        return Predictor.load(model, exact=True)
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


def backtest_model(
    bars: pd.DataFrame,
    model: Any,
    *,
    step: int = 1,
    threshold: float = 0.0,
    include_train: bool = False,
    device: str = "auto",
    warn: bool = True,
    include_flag: str = "include_train=True",
    **options: Any,
) -> ModelBacktest:
    """Backtest a model's forecasts on ``bars``, leaving out the bars it was trained on.

    Parameters
    ----------
    bars : pd.DataFrame
        OHLCV bars with a UTC DatetimeIndex. Forecasts use bars up to each bar only.
    model : path or Predictor
        A checkpoint directory (``celeris train --out``), loaded with the fastest *exact*
        backend it has verified (never int8, whose answers depend on the batch: see
        :meth:`~celeris.models.predictor.Predictor.load`'s ``exact``), or a loaded
        :class:`~celeris.models.predictor.Predictor`, used as it is.
    step, threshold : int, float
        Trade on the expected return ``step`` bars ahead: enter above ``threshold``, exit below
        ``-threshold``.
    include_train : bool
        Also trade the bars the model was trained on (a :class:`CelerisWarning` says how many):
        results on them are not evidence. By default they are left out and the backtest covers
        the contiguous span after them (or before them, when there is none after).
    device : str
        Backtest engine: ``auto``, ``cpu`` or ``cuda``.
    warn : bool
        Give the note on left-out or included training bars as a :class:`CelerisWarning`;
        ``False`` leaves it to the caller, in :attr:`ModelBacktest.note` (the CLI prints it).
    include_flag : str
        How messages name the option that includes the training bars (the CLI's
        ``--include-train``).
    **options
        ``from_signals`` options (``fees``, ``slippage``, ``init_cash``, ...). Orders fill at
        the next bar's open unless ``execution="close"``.

    Raises
    ------
    DataError
        The model has no record of its training bars (pass ``include_train=True`` to trade
        anyway), or every bar is a training bar.
    """
    from celeris.models.pipeline import expected_step_returns_checked
    from celeris.models.signals import in_sample_note, signals_from_forecast

    predictor = _predictor(model)
    expected, overlap = expected_step_returns_checked(
        predictor, bars, step, include_train=include_train, flag=include_flag
    )
    note = in_sample_note(overlap, include_train, "bars", include_flag)
    excluded = 0
    if overlap is not None and overlap.n_in_sample and not include_train:
        keep, aside = _held_out(bars.index, overlap, include_flag)
        excluded = overlap.n_in_sample
        note = (
            f"excluded {excluded:,} bars the model was trained on ({overlap.span}: "
            f"{overlap.reason}); trading the {int(keep.sum()):,} bars "
            f"{'after' if keep[-1] else 'before'} them{aside or ''}. {include_flag} includes them"
        )
        bars, expected = bars[keep], expected[keep]
    # With direction="both", an exit signal opens a short (from_signals' convention).
    signals = signals_from_forecast(expected, threshold=threshold)
    options.setdefault("execution", "next_open")  # a forecast made at a close trades next bar
    pf = from_signals(bars, signals["entries"], signals["exits"], device=device, **options)
    if warn and note is not None:
        warnings.warn(note, CelerisWarning, stacklevel=2)
    return ModelBacktest(pf, overlap, excluded, note)


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
        saved["max_steps"] = check_int("max_steps", max_steps, minimum=1)
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


@dataclasses.dataclass(frozen=True)
class _WalkPlan:
    """The checked bars, the refit's ``fit_on_bars`` keywords and the windows of a model
    walk-forward (what both :func:`model_walk_forward` and its cost need)."""

    bars: pd.DataFrame
    refit: dict[str, Any]
    n_train: int
    n_test: int
    starts: Any  # window start positions

    @property
    def per_model(self) -> int:
        return int(self.refit["config"].max_steps)


def _walk_plan(
    data: Any,
    model: str | Path,
    train: int | str,
    test: int | str,
    partial: bool,
    max_steps: int | None,
) -> _WalkPlan:
    from celeris.models.checkpoint_file import read_config

    bars = check_bars(data, ("close",))
    refit = _refit_plan(read_config(model), max_steps)
    n_train, n_test, starts = window_plan(bars.index, train, test, partial)
    return _WalkPlan(bars, refit, n_train, n_test, starts)


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
    plan = _walk_plan(data, model, train, test, partial, max_steps)
    return {
        "model": plan.refit["name"],
        "windows": len(plan.starts),
        "max_steps_per_model": plan.per_model,
        "max_steps": len(plan.starts) * plan.per_model,
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
    metric_slot(metric)
    for name, value in options.items():
        if not is_single(value):
            # A rule walk-forward sweeps such a list as a grid axis; here nothing is chosen in
            # sample (one refit per window, traded as it is), so there is no axis to choose on.
            raise ConfigError(
                f"model_walk_forward takes one value per backtest option, got {name}={value!r}: "
                "it refits one model per window and chooses nothing in sample, so an option is "
                "not a grid axis here"
            )
    plan = _walk_plan(data, model, train, test, partial, max_steps)
    options = check_portfolio_options(options)
    options.setdefault("execution", "next_open")
    init_cash = float(options.get("init_cash", 100_000.0))
    budget = len(plan.starts) * plan.per_model

    rows: list[dict[str, Any]] = []
    pieces: list[pd.Series] = []
    total_steps, started = 0, time.perf_counter()
    bar = progress_bar(progress, fields=("cost",), elapsed=True)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(
            f"walk-forward {plan.refit['name']}: refit per window",
            total=len(plan.starts),
            cost=f"0 of <= {budget:,} steps",
        )
    pf: Portfolio | None = None
    try:
        for k, start in enumerate(plan.starts):
            row, pf = _refit_window(
                plan, k, start, anchored=anchored, step=step, threshold=threshold,
                metric=metric, device=device, options=options,
            )  # fmt: skip
            rows.append(row)
            pieces.append(pf.returns.iloc[:, 0])
            total_steps += row["steps"]
            if bar is not None and task is not None:
                bar.update(task, advance=1, cost=f"{total_steps:,} of <= {budget:,} steps")
    finally:
        if bar is not None:
            bar.stop()
    assert pf is not None  # starts is never empty: n_train + n_test <= len(bars)
    return ModelWalkForwardResult(
        pd.DataFrame(rows).set_index("window"),
        *chain_out_of_sample(pieces, pf.ann_factor, init_cash),
        metric,
        models=len(plan.starts),
        steps=total_steps,
        max_steps=plan.per_model,
        seconds=time.perf_counter() - started,
    )


def _refit_window(
    plan: _WalkPlan,
    k: int,
    start: int,
    *,
    anchored: bool,
    step: int,
    threshold: float,
    metric: str,
    device: str,
    options: dict[str, Any],
) -> tuple[dict[str, Any], Portfolio]:
    """Window ``k``: refit on its training span, backtest its test span; its row and portfolio."""
    from celeris.models.pipeline import expected_step_returns_checked, fit_on_bars
    from celeris.models.predictor import Predictor
    from celeris.models.signals import signals_from_forecast

    bars = plan.bars
    train_start = 0 if anchored else start
    train_end = start + plan.n_train
    test_end = min(train_end + plan.n_test, len(bars))
    t0 = time.perf_counter()
    try:
        fitted = fit_on_bars(bars=bars.iloc[train_start:train_end], **plan.refit)
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
    row = {
        **window_span(k, bars.index, train_start, train_end, test_end),
        "fitted_through": pd.Timestamp(fitted.meta["train_bars"]["last"]),
        "steps": int(fitted.meta["trained_steps"]),
        "best_step": int(fitted.meta["best_step"]),
        "train_seconds": seconds,
        f"oos_{metric}": stats[metric],
        "oos_total_return": float(stats["total_return"]),
        "oos_trades": int(stats["trades"]),
    }
    return row, pf

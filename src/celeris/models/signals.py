"""From forecasts to trades: rolling forecasts over history and signal rules for ``from_signals``.

Time convention: the forecast stamped at bar *t* is made at the close of bar *t* from bars
``t - input_size + 1 .. t`` only, and predicts bars ``t + 1 .. t + horizon``. Signals stamped at
*t* therefore use no data after *t*; ``from_signals`` fills them at the next bar's open by
default (``execution="close"`` trades at the very close the forecast saw, which no live system
can).

In-sample guard: a forecast stamped at a bar the model was trained on (its training range, see
:mod:`celeris.models.provenance`) is not evidence of anything. :func:`rolling_forecasts` sets
those forecasts to NaN (so they never signal) and warns with the count, unless
``include_train=True``, which keeps them and warns louder. Which bars were trained on is decided
by the bars' timestamps and, when ``bars`` is given, their content; never by a file name.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.errors import CelerisWarning, ConfigError, DataError, check_choice
from celeris.models.provenance import TrainingOverlap, no_record_message, training_overlap


def training_guard(
    predictor: Any,
    index: pd.Index | None,
    bars: pd.DataFrame | None,
    include_train: bool,
    flag: str = "include_train=True",
) -> TrainingOverlap | None:
    """The overlap of ``index`` (and ``bars``) with the predictor's training bars.

    Without ``include_train``, refuse what cannot be checked: a predictor with no record of its
    training bars (:class:`DataError`) or no time index to compare (:class:`ConfigError`). With
    it, return None when nothing can be checked.
    """
    meta = getattr(predictor, "meta", None) or {}
    if include_train:
        if not isinstance(index, pd.DatetimeIndex):
            return None
        return training_overlap(meta, index, bars)
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(
            "pass index= (the bars' timestamps) so that forecasts on bars the model was trained "
            f"on can be excluded, or {flag} to forecast every bar knowingly"
        )
    overlap = training_overlap(meta, index, bars)
    if overlap.verdict == "unknown":
        raise DataError(no_record_message("this model", flag))
    return overlap


def in_sample_note(
    overlap: TrainingOverlap | None,
    include_train: bool,
    what: str,
    flag: str = "include_train=True",
) -> str | None:
    """The message for a person about in-sample ``what`` (forecasts, bars, windows), or None;
    ``flag`` is how that person includes them (``--include-train`` on the command line). Data on
    the training dates with other prices (another asset) is used, and said so."""
    if overlap is not None and overlap.verdict == "different":
        return overlap.describe(what)
    if overlap is None or overlap.n_in_sample == 0:
        return None
    if include_train:
        return (
            f"IN-SAMPLE: kept {overlap.n_in_sample:,} {what} on the model's training bars "
            f"({overlap.span}) as asked ({flag}): results on them are not evidence of skill"
        )
    return (
        f"excluded {overlap.n_in_sample:,} {what} on the model's training bars ({overlap.span}: "
        f"{overlap.reason}); {flag} keeps them"
    )


def rolling_forecasts_checked(
    predictor: Any,
    values: np.ndarray,
    *,
    index: pd.Index | None = None,
    bars: pd.DataFrame | None = None,
    include_train: bool = False,
) -> tuple[pd.DataFrame, TrainingOverlap | None]:
    """:func:`rolling_forecasts` without the warning: the frame and the training overlap."""
    overlap = training_guard(predictor, index, bars, include_train)
    frame = _rolling(predictor, values, index)
    if overlap is not None and not include_train and overlap.n_in_sample:
        frame.loc[overlap.in_sample, :] = np.nan
    return frame, overlap


def rolling_forecasts(
    predictor: Any,
    values: np.ndarray,
    *,
    index: pd.Index | None = None,
    bars: pd.DataFrame | None = None,
    include_train: bool = False,
) -> pd.DataFrame:
    """Forecast at every bar from the window ending there: a ``[T, horizon]`` frame (NaN during
    the first ``input_size - 1`` bars). Column ``k`` holds the forecast for bar ``t + k``.

    Parameters
    ----------
    predictor : Predictor
        Loaded from a checkpoint; its ``meta`` says which bars it was trained on. Every window
        is predicted in one batch, so load it with ``exact=True``
        (:meth:`~celeris.models.predictor.Predictor.load`): int8's activation scale is set per
        batch, and with it a window's forecast would move with later windows.
    values : array-like
        ``[T]`` or ``[T, C]`` model inputs (``model_inputs(bars, features)``).
    index : pd.DatetimeIndex
        Timestamp of each row of ``values``. Required unless ``include_train``: forecasts
        stamped at bars the model was trained on are set to NaN, with a
        :class:`~celeris.errors.CelerisWarning` saying how many.
    bars : pd.DataFrame, optional
        The OHLCV bars ``values`` came from. With them, bars on the training dates whose prices
        differ (another asset) are recognised as out of sample; without them any bar on the
        training dates counts as trained on.
    include_train : bool
        Keep forecasts on training bars (a louder warning says so), and forecast with a model
        that has no record of its training bars.

    Raises
    ------
    DataError
        The predictor has no record of its training bars (retrain, or ``include_train=True``),
        or the history is too short.
    ConfigError
        No DatetimeIndex to compare with the training bars.
    """
    frame, overlap = rolling_forecasts_checked(
        predictor, values, index=index, bars=bars, include_train=include_train
    )
    note = in_sample_note(overlap, include_train, "forecasts")
    if note is not None:
        warnings.warn(note, CelerisWarning, stacklevel=2)
    return frame


def _rolling(predictor: Any, values: np.ndarray, index: pd.Index | None) -> pd.DataFrame:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"values must be [T] or [T, C], got {arr.ndim}-D")
    length = predictor.input_size
    n = arr.shape[0]
    if index is not None and len(index) != n:
        raise DataError(f"index has {len(index)} entries for {n} rows of values")
    if n < length:
        raise DataError(f"history too short: {n} bars, the model needs {length}")
    # [T - L + 1, C, L] -> [T - L + 1, L, C]: the window ending at each bar (a view, no copy)
    windows = np.lib.stride_tricks.sliding_window_view(arr, length, axis=0).transpose(0, 2, 1)
    out = np.full((n, predictor.horizon), np.nan, dtype=np.float64)
    out[length - 1 :] = predictor.predict(windows)
    cols = pd.RangeIndex(1, predictor.horizon + 1, name="step")
    return pd.DataFrame(out, index=index if index is not None else pd.RangeIndex(n), columns=cols)


def expected_returns(
    forecasts: pd.DataFrame, close: pd.Series | pd.DataFrame, *, step: int = 1, kind: str = "price"
) -> Any:
    """Expected return from each bar's close to the forecast ``step`` bars ahead.

    ``kind="price"``: forecasts are price levels, ``f / close - 1``; ``kind="return"``:
    forecasts are already returns.
    """
    check_choice("kind", kind, ("price", "return"))
    if step not in forecasts.columns:
        raise ConfigError(f"step {step} is outside the forecast horizon 1..{forecasts.shape[1]}")
    f = forecasts[step]
    return f / close - 1.0 if kind == "price" else f


def signals_from_forecast(
    expected: pd.Series | pd.DataFrame,
    *,
    rule: str = "threshold",
    threshold: float = 0.0,
    k: int = 1,
    short: bool = False,
) -> dict[str, pd.Series | pd.DataFrame]:
    """Entry/exit signals from expected returns, as keyword arguments for ``from_signals``.

    * ``rule="threshold"``: long entry when the expected return exceeds ``threshold``, long exit
      when it falls below ``-threshold``; with ``short=True`` also short entries below
      ``-threshold`` and short exits above ``threshold``.
    * ``rule="topk"`` (a frame of several assets): each bar, enter the ``k`` assets with the
      highest expected return above ``threshold``; exit an asset when it leaves the top ``k`` or
      its expected return drops to ``threshold`` or below.

    NaN expectations (warm-up) never signal.
    """
    check_choice("rule", rule, ("threshold", "topk"))
    threshold = check_real("threshold", threshold, minimum=0)
    e = expected
    if rule == "threshold":
        out: dict[str, Any] = {"entries": e > threshold, "exits": e < -threshold}
        if short:
            out["short_entries"] = e < -threshold
            out["short_exits"] = e > threshold
        return out
    if not isinstance(e, pd.DataFrame):
        raise ConfigError(
            "rule='topk' ranks several assets: pass a frame with one column per asset"
        )
    k = check_int("k", k, minimum=1, maximum=e.shape[1], reason="assets")
    if short:
        raise ConfigError("rule='topk' is long-only")
    rank = e.rank(axis=1, ascending=False, method="first")
    chosen = (rank <= k) & (e > threshold)
    return {"entries": chosen, "exits": ~chosen}

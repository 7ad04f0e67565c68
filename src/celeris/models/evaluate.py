"""Rolling-origin evaluation on held-out windows, beside naive and drift baselines.

Every window is a forecast origin: the model forecasts the ``H`` bars after the window's last
input bar, and so do two baselines on the *same* windows:

* **naive** — the last input value of the target, repeated over the horizon;
* **drift** — the last value plus the mean in-window slope per step,
  ``last + h * (last - first) / (L - 1)`` for ``h = 1..H`` (Hyndman & Athanasopoulos,
  *Forecasting: Principles and Practice*, 3rd ed., section 5.2, applied to the window).

Metrics are in the original units: with a ``scaler`` the windows are given unscaled, the model
sees scaled inputs and its forecasts are inverse-transformed before scoring. Definitions, over
all (window, horizon step) pairs unless per step:

* ``mae`` = mean |y - f|, ``rmse`` = sqrt(mean (y - f)^2);
* ``mape`` = mean |y - f| / |y| as a fraction (0.05 = 5%), over the pairs with ``y != 0``
  only — zero targets are left out rather than dividing by zero (NaN if every target is 0).
  Price levels only: for return targets (``kind="return"``) the denominators sit near zero and
  MAPE explodes without meaning, so the report has no ``mape`` column there; MAE, RMSE,
  directional accuracy and skill judge return forecasts;
* ``directional_accuracy`` = share of pairs whose forecast change from the last input value has
  the sign of the realised change, ``sign(f - last) == sign(y - last)``, over the pairs where
  the forecast calls a direction (``f != last``): NaN for the naive baseline, which never does.
  It pools all horizon steps; the per-step frame gives it for step 1 alone;
* ``skill`` = ``1 - mae / mae_naive`` (positive: better than the naive forecast).

A direction classifier (``task == "classification"``: logits of P(up)) is scored on
directional accuracy only (its call is ``logit > 0``); its error metrics are NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from celeris.checks import check_int
from celeris.errors import ConfigError, DataError
from celeris.formatting import format_number
from celeris.models.data import Scaler, Windows, WindowScaler

__all__ = ["METRICS", "EvalReport", "evaluate", "forecast_metrics"]

METRICS = ("mae", "rmse", "mape", "directional_accuracy")
FORECASTERS = ("model", "naive", "drift")

#: Summary columns that are fractions, shown as percents.
_PERCENT_COLUMNS = frozenset({"mape", "directional_accuracy", "skill"})


def forecast_metrics(
    forecast: np.ndarray, y: np.ndarray, last: np.ndarray, *, axis: int | None = None
) -> dict[str, Any]:
    """Return MAE, RMSE, MAPE and directional accuracy of ``forecast`` ``[N, H]`` against ``y``.

    ``last`` ``[N]`` is the last input value of each window. ``axis=None`` pools every
    (window, step) pair; ``axis=0`` gives one value per horizon step. See the module docstring
    for the definitions.
    """
    f = np.asarray(forecast, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    base = np.asarray(last, dtype=np.float64)[:, None]  # [N] -> [N, 1]
    err = np.abs(t - f)
    nonzero = t != 0
    ape = np.divide(err, np.abs(t), out=np.zeros_like(err), where=nonzero)
    called = f != base
    hits = (np.sign(f - base) == np.sign(t - base)) & called
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mae": err.mean(axis=axis),
            "rmse": np.sqrt(np.square(t - f).mean(axis=axis)),
            "mape": ape.sum(axis=axis) / nonzero.sum(axis=axis),
            "directional_accuracy": hits.sum(axis=axis) / called.sum(axis=axis),
        }


def _direction_accuracy(logits: np.ndarray, y: np.ndarray, last: np.ndarray, axis: Any) -> Any:
    up = np.asarray(y, dtype=np.float64) > np.asarray(last, dtype=np.float64)[:, None]
    return ((logits > 0) == up).mean(axis=axis)


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """Metrics of a model and of the naive and drift baselines on the same windows.

    Attributes
    ----------
    summary : pd.DataFrame
        Rows ``model``, ``naive``, ``drift``; columns ``mae``, ``rmse``, ``mape`` (price
        levels only), ``directional_accuracy``, ``skill`` (``1 - mae / mae_naive``). Same as
        :meth:`table`.
    per_step : pd.DataFrame
        Index ``(forecaster, step)`` with ``step = 1..H``; the same columns, per horizon step.
    forecast : np.ndarray
        ``[N, H]`` model outputs in original units (logits for a direction classifier).
    origins : np.ndarray
        ``[N]`` bar index of each origin (the window's last input bar).
    task : str
        The model's task, ``"regression"`` or ``"classification"``.
    kind : str
        ``"level"`` (prices) or ``"return"`` (stationary targets: no MAPE).
    """

    summary: pd.DataFrame
    per_step: pd.DataFrame
    forecast: np.ndarray
    origins: np.ndarray
    task: str = "regression"
    kind: str = "level"

    @property
    def n_windows(self) -> int:
        return len(self.origins)

    @property
    def horizon(self) -> int:
        return int(self.forecast.shape[1])

    def table(self) -> pd.DataFrame:
        """Return the summary table (rows model, naive, drift) as a copy."""
        return self.summary.copy()

    def to_rich(self) -> Any:
        """Return the summary as a :class:`rich.table.Table` for the terminal."""
        from rich.table import Table

        table = Table(
            title=f"Rolling-origin evaluation: {self.n_windows} windows, horizon {self.horizon}"
        )
        table.add_column("forecaster")
        for column in self.summary.columns:
            table.add_column(str(column), justify="right")
        for name, row in self.summary.iterrows():
            cells = [
                format_number(
                    value,
                    "percent" if metric in _PERCENT_COLUMNS else "general",
                    digits=6,
                    missing="-",
                )
                for metric, value in row.items()
            ]
            table.add_row(str(name), *cells)
        return table


def _select(windows: Windows, origins: Any) -> Windows:
    if origins is None:
        return windows
    if isinstance(origins, (int, np.integer)) and not isinstance(origins, bool):
        step = check_int("origins as a step", origins, minimum=1)
        return windows.subset(slice(None, None, step))
    wanted = np.asarray(origins, dtype=np.int64).reshape(-1)
    pos = np.searchsorted(windows.end, wanted)
    ok = (pos < len(windows.end)) & (windows.end[np.minimum(pos, len(windows.end) - 1)] == wanted)
    if not ok.all():
        bad = int(wanted[~ok][0])
        raise DataError(
            f"origin bar {bad} is not the end of any window "
            f"(windows end at bars {int(windows.end[0])}..{int(windows.end[-1])})"
        )
    return windows.subset(pos)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _predict(
    model: nn.Module,
    windows: Windows,
    scaler: Scaler | WindowScaler | None,
    batch_size: int,
    classify: bool,
) -> np.ndarray:
    device = _model_device(model)
    out = np.empty(windows.y.shape, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                chunk = np.array(windows.x[start : start + batch_size], dtype=np.float32)
                x = torch.from_numpy(chunk).to(device)  # [B, L, C]
                if isinstance(scaler, WindowScaler):
                    xs, loc, scale = scaler.transform(x)  # loc, scale: [B, 1, C]
                    f = model(xs).float()
                    f = f if classify else scaler.inverse_transform(f, loc, scale)
                elif scaler is not None:
                    f = model(scaler.transform(x)).float()
                    f = f if classify else scaler.inverse_transform(f)
                else:
                    f = model(x).float()
                out[start : start + len(chunk)] = f.cpu().numpy()  # [B, H]
    finally:
        model.train(was_training)
    return out


def evaluate(
    model: nn.Module,
    windows: Windows,
    scaler: Scaler | WindowScaler | None = None,
    *,
    origins: Any = None,
    batch_size: int = 4096,
    kind: str = "level",
) -> EvalReport:
    """Score ``model`` and the naive and drift baselines on the same held-out windows.

    ``kind="level"`` (prices): naive repeats the last value, drift extends the window's slope,
    and a direction is the sign of the change from the last value. ``kind="return"``
    (stationary targets such as log returns): naive forecasts 0 (no move), drift the window's
    mean, and a direction is the sign of the value itself; repeating the last return would be a
    straw man, and "change from the last return" rewards mere mean reversion.

    Parameters
    ----------
    model : nn.Module
        A trained model (``forward(x [B, L, C]) -> [B, H]``), run where its weights are, in
        batches under ``torch.inference_mode`` and in float32.
    windows : Windows
        Held-out windows (e.g. the test split) in **original units**.
    scaler : Scaler or WindowScaler, optional
        The fitted scaler the model was trained with; inputs are scaled with it and forecasts
        mapped back, so every metric is in original units.
    origins : int or array-like of int, optional
        Which windows are forecast origins: None for all; an int ``k`` for every ``k``-th
        window (``k = horizon`` gives non-overlapping forecasts); or the bar indices
        (``windows.end`` values) to forecast from.
    batch_size : int
        Windows per forward pass.

    Returns
    -------
    EvalReport
        ``report.table()`` for the summary, ``report.to_rich()`` to print it.

    Raises
    ------
    DataError
        No windows, or an origin that is not the end of a window.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if kind not in ("level", "return"):
        raise ConfigError(f"kind must be 'level' or 'return', got {kind!r}")
    chosen = _select(windows, origins)
    if len(chosen) == 0:
        raise DataError("no windows to evaluate")
    if scaler is not None and scaler.target != chosen.target:
        raise ConfigError(
            f"the scaler's target channel ({scaler.target}) differs from the windows' "
            f"({chosen.target})"
        )
    task = getattr(model, "task", "regression")
    classify = task == "classification"
    forecast = _predict(model, chosen, scaler, batch_size, classify)
    if forecast.shape != chosen.y.shape:
        raise DataError(f"model returned {forecast.shape}, expected {chosen.y.shape}")

    y = np.asarray(chosen.y, dtype=np.float64)
    series = np.asarray(chosen.x[:, :, chosen.target], dtype=np.float64)  # [N, L, C] -> [N, L]
    last, first = series[:, -1], series[:, 0]
    steps = np.arange(1, chosen.horizon + 1, dtype=np.float64)[None, :]  # [1, H]
    if kind == "return":
        baselines = {
            "naive": np.zeros_like(y),
            "drift": np.repeat(
                series.mean(axis=1)[:, None], chosen.horizon, axis=1
            ),  # [N] -> [N, H]
        }
        last = np.zeros_like(last)  # directions are signs of the values themselves
    else:
        slope = (last - first) / max(chosen.input_size - 1, 1)
        baselines = {
            "naive": np.repeat(last[:, None], chosen.horizon, axis=1),  # [N] -> [N, H]
            "drift": last[:, None] + slope[:, None] * steps,
        }

    rows: dict[str, dict[str, Any]] = {}
    per_step: dict[str, dict[str, Any]] = {}
    for name, f in (("model", forecast), *baselines.items()):
        if name == "model" and classify:
            nan_all, nan_step = np.nan, np.full(chosen.horizon, np.nan)
            rows[name] = {"mae": nan_all, "rmse": nan_all, "mape": nan_all}
            rows[name]["directional_accuracy"] = _direction_accuracy(f, y, last, None)
            per_step[name] = {"mae": nan_step, "rmse": nan_step, "mape": nan_step}
            per_step[name]["directional_accuracy"] = _direction_accuracy(f, y, last, 0)
            continue
        rows[name] = forecast_metrics(f, y, last)
        per_step[name] = forecast_metrics(f, y, last, axis=0)

    # MAPE divides by the target: meaningless for returns, whose values straddle zero.
    metrics = [m for m in METRICS if not (kind == "return" and m == "mape")]
    summary = pd.DataFrame.from_dict(rows, orient="index").loc[list(FORECASTERS), metrics]
    summary = summary.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        summary["skill"] = 1.0 - summary["mae"] / float(rows["naive"]["mae"])
    frames = []
    for name in FORECASTERS:
        frame = pd.DataFrame(
            per_step[name], index=pd.RangeIndex(1, chosen.horizon + 1, name="step")
        )[metrics]
        frame["skill"] = 1.0 - frame["mae"] / np.asarray(per_step["naive"]["mae"])
        frames.append(frame.astype(np.float64))
    steps_frame = pd.concat(frames, keys=list(FORECASTERS), names=["forecaster", "step"])
    return EvalReport(
        summary=summary,
        per_step=steps_frame,
        forecast=forecast,
        origins=np.asarray(chosen.end, dtype=np.int64).copy(),
        task=task,
        kind=kind,
    )

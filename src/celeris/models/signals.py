"""From forecasts to trades: rolling forecasts over history and signal rules for ``from_signals``.

Time convention: the forecast stamped at bar *t* is made at the close of bar *t* from bars
``t - input_size + 1 .. t`` only, and predicts bars ``t + 1 .. t + horizon``. Signals stamped at
*t* therefore use no data after *t*; with ``from_signals``' default fill at the close of the
signal bar they trade at the same close the forecast saw (use ``execution="next_open"`` to trade
at the next open instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from celeris.errors import ConfigError, DataError, check_choice


def rolling_forecasts(
    predictor: Any, values: np.ndarray, *, index: pd.Index | None = None
) -> pd.DataFrame:
    """Forecast at every bar from the window ending there: a ``[T, horizon]`` frame (NaN during
    the first ``input_size - 1`` bars). Column ``k`` holds the forecast for bar ``t + k``."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"values must be [T] or [T, C], got {arr.ndim}-D")
    length = predictor.input_size
    n = arr.shape[0]
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
    if not np.isfinite(threshold) or threshold < 0:
        raise ConfigError(f"threshold must be finite and >= 0, got {threshold}")
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
    if not 1 <= k <= e.shape[1]:
        raise ConfigError(f"k must be in 1..{e.shape[1]} (assets), got {k}")
    if short:
        raise ConfigError("rule='topk' is long-only")
    rank = e.rank(axis=1, ascending=False, method="first")
    chosen = (rank <= k) & (e > threshold)
    return {"entries": chosen, "exits": ~chosen}
